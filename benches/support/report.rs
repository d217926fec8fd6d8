//! Reports: the machine, markdown tables, and where results are written.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

/// A PASS / FAIL verdict, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Target met.
    Pass,
    /// Target missed.
    Fail,
    /// Not measured in this invocation (a flag left it out, or the feature does not exist yet).
    NotMeasured,
}

impl Verdict {
    /// `PASS`, `FAIL`, `NOT MEASURED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NotMeasured => "NOT MEASURED",
        }
    }

    /// Pass when `ok`.
    pub fn of(ok: bool) -> Verdict {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }
}

/// One target of the issue, with what was measured.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is required.
    pub target: String,
    /// What was measured (and where).
    pub measured: String,
    /// The verdict.
    pub verdict: Verdict,
    /// By how much it is missed or met, or why it was not measured.
    pub note: String,
}

impl Target {
    /// JSON form.
    pub fn json(&self) -> Value {
        json!({
            "target": self.target,
            "measured": self.measured,
            "verdict": self.verdict.as_str(),
            "note": self.note,
        })
    }
}

/// A markdown table of the targets.
pub fn targets_table(targets: &[Target]) -> String {
    let mut t = Table::new(&["target", "measured", "verdict", "note"]);
    for x in targets {
        t.row(vec![
            x.target.clone(),
            x.measured.clone(),
            format!("**{}**", x.verdict.as_str()),
            x.note.clone(),
        ]);
    }
    t.render()
}

/// A markdown table.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            self.header.iter().map(|_| "---|").collect::<String>()
        );
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.join(" | ").replace('\n', " "));
        }
        out
    }
}

/// Formats a number with at most `digits` decimals, and `-` for NaN.
pub fn num(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.digits$}")
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The machine and build, for the report.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    json!({
        "cpu": cpu,
        "cores": cores,
        "memory": memory,
        "os": std::env::consts::OS,
        "build": if cfg!(debug_assertions) { "debug" } else { "release (optimized)" },
        "git_commit": commit,
        "database_url_set": std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()),
    })
}

/// `target/bench-results` (under `CARGO_TARGET_DIR` when set), created.
pub fn results_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Writes `<stem>.json` and `<stem>.md` to the results directory; returns their paths.
pub fn write_results(stem: &str, json: &Value, markdown: &str) -> (PathBuf, PathBuf) {
    let dir = results_dir();
    let j = dir.join(format!("{stem}.json"));
    let m = dir.join(format!("{stem}.md"));
    if let Err(e) = std::fs::write(
        &j,
        serde_json::to_string_pretty(json).unwrap_or_default() + "\n",
    ) {
        eprintln!("could not write {}: {e}", j.display());
    }
    if let Err(e) = std::fs::write(&m, markdown) {
        eprintln!("could not write {}: {e}", m.display());
    }
    (j, m)
}
