//! What a migration costs a live workload, side by side with the plain way.
//!
//! ```sh
//! cargo bench --bench under_load -- --rows 1000000
//! ```
//!
//! On the testkit's throwaway cluster, or on `DATABASE_URL`'s server (databases named
//! `pgevolve_bench_*` are created there and dropped at the end). Every run starts from a copy of
//! one seeded template database, `users` with `--rows` rows, while 4 clients run 50% `UPDATE` of
//! `name` by random id, 30% `SELECT` by id and 20% `INSERT`, each operation's latency recorded in
//! an HDR histogram under the phase active when it started. The runs:
//!
//! - **pgevolve**, throttled (default `BackfillOptions`) and unthrottled (`BackfillOptions::unthrottled()`): boot
//!   (expand), backfill, validate, contract, each phase measured on its own; the workload moves to
//!   the new build's statements once expand is done;
//! - **plain**: the whole target evolution in one transaction (`ADD COLUMN`, `UPDATE` of every
//!   row, `SET NOT NULL`, `CREATE INDEX`, `RENAME`), the new build deployed once it commits;
//! - **baseline**: no migration, as long as the throttled pgevolve run;
//! - an `UPDATE` of every row on an idle table (the backfill's speed reference), pgevolve's
//!   unthrottled backfill on an idle table, and the write overhead of pgevolve's triggers
//!   (write-only workload, triggers enabled and disabled in alternating windows);
//! - with `--scale-rows M`, the throttled pgevolve run again at M rows: does the stall grow?
//! - **open loop**: the throttled pgevolve run again, with clients that send at a fixed rate
//!   (half the baseline's closed-loop throughput), latency counted from when each operation was
//!   due, so time waited to be sent counts;
//! - **a long holder at contract**: the unthrottled pgevolve run again, with a transaction that
//!   has held the table for longer than `DdlOptions::long_holder` and a manual `VACUUM` of the
//!   table both busy when contract starts: the longest stall contract causes.
//!
//! By default the benchmark starts a throwaway cluster of its own with durable settings (`fsync`,
//! `synchronous_commit`, `full_page_writes` on, as production runs); `--fast` uses the testkit's
//! (off: development). On `DATABASE_URL`'s server the settings are the server's own, and
//! reported.
//!
//! Results: a markdown report on stdout, and `target/bench-results/under_load-<rows>.{json,md}`.
//! BENCHMARKS.md explains how to read them. Run with `--help` for the flags.

#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgevolve::{
    BackfillOptions, DeployWindow, Evolution, Evolve, Evolver, Phase, StepId, StepKind,
};
use serde_json::{Value, json};
use sqlx::{Connection, PgPool};

use support::db::{self, Result, Server, TableSize, Template};
use support::model::{self, STEPS, Support, User};
use support::report::{self, Table, Target, Verdict, mib, num};
use support::stats::{self, PhaseSummary, WindowSummary, ratio, round};
use support::waits::{WaitSampler, Waits};
use support::workload::{ClientRecord, Mix, Shape, Workload};

const USAGE: &str = "\
usage: cargo bench --bench under_load -- [flags]

  --rows N               rows in users (default 1000000)
  --throttle MODE        pgevolve runs: default (throttled), none (unthrottled) or both (default)
  --baseline-seconds S   length of the baseline run (default: as long as the throttled pgevolve run)
  --settle S             seconds of workload before and after each migration (default 3)
  --clients N            concurrent clients (default 4)
  --trigger-window S     seconds per window of the trigger overhead measure (default 3; 3 rounds)
  --scale-rows M[,M2]    also run throttled pgevolve at M (and M2...) rows: does the stall grow?
  --warmup S             unmeasured workload on each fresh copy before its first phase (default 10)
  --duty-cycle D         the throttled runs' BackfillOptions::duty_cycle (default: the library's, 1/3)
  --skip LIST            leave out runs: plain, baseline, idle, triggers, open, holder (comma separated)
  --fast                 fsync, synchronous_commit, full_page_writes off (default: on, durable)
  --set NAME=VALUE       a setting of the durable throwaway cluster (repeatable), e.g. max_wal_size=4GB
  --open-rate R          the open-loop run's operations per second (default: half the baseline's throughput)
  --open-clients N       the open-loop run's clients (default: 2 × --clients)
";

/// The runs `--skip` may leave out.
const SKIPPABLE: [&str; 6] = ["plain", "baseline", "idle", "triggers", "open", "holder"];

/// The longest stall a migration phase may cause, as a multiple of the baseline's longest.
const STALL_FACTOR: f64 = 1.5;
/// p99 of a migration phase or 1-second window, as a multiple of the baseline's p99.
const P99_FACTOR: f64 = 2.0;
/// Throughput during the throttled backfill, as a share of the baseline's.
const BACKFILL_THROUGHPUT: f64 = 0.8;
/// The unthrottled evolution's time, as a multiple of the plain statements' time.
const SPEED_FACTOR: f64 = 1.3;
/// WAL beyond the workload's, as a multiple of the plain migration's.
const WAL_FACTOR: f64 = 1.1;
/// Open loop: p99 and longest latency allowed in every phase, in ms.
const OPEN_P99_MS: f64 = 10.0;
const OPEN_MAX_MS: f64 = 50.0;
/// The long holder at contract: how old its transaction is when contract starts, and how
/// long it holds the table in all.
const HOLDER_AGE: Duration = Duration::from_millis(1_500);
const HOLDER_HOLDS: Duration = Duration::from_secs(4);

#[derive(Debug, Clone)]
struct Args {
    rows: i64,
    throttled: bool,
    unthrottled: bool,
    baseline_seconds: Option<f64>,
    settle: Duration,
    clients: usize,
    trigger_window: Duration,
    scale_rows: Vec<i64>,
    warmup: Duration,
    server_settings: Vec<String>,
    duty_cycle: Option<f64>,
    skip: Vec<String>,
    fast: bool,
    open_rate: Option<f64>,
    open_clients: Option<usize>,
}

fn parse_count(flag: &str, v: &str) -> std::result::Result<i64, String> {
    let cleaned = v.replace(['_', ','], "");
    cleaned
        .parse::<i64>()
        .ok()
        .or_else(|| cleaned.parse::<f64>().ok().map(|f| f as i64))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{flag}: not a positive number: {v}"))
}

fn parse_seconds(flag: &str, v: &str) -> std::result::Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .ok_or_else(|| format!("{flag}: not a number of seconds: {v}"))
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        rows: 1_000_000,
        throttled: true,
        unthrottled: true,
        baseline_seconds: None,
        settle: Duration::from_secs(3),
        clients: 4,
        trigger_window: Duration::from_secs(3),
        scale_rows: Vec::new(),
        warmup: Duration::from_secs(10),
        server_settings: Vec::new(),
        duty_cycle: None,
        skip: Vec::new(),
        fast: false,
        open_rate: None,
        open_clients: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> std::result::Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            // `cargo bench` passes `--bench` to every benchmark binary.
            "--bench" => {}
            "--rows" => args.rows = parse_count("--rows", &value()?)?,
            "--throttle" => match value()?.as_str() {
                "default" => (args.throttled, args.unthrottled) = (true, false),
                "none" => (args.throttled, args.unthrottled) = (false, true),
                "both" => (args.throttled, args.unthrottled) = (true, true),
                other => return Err(format!("--throttle: default, none or both, not {other}")),
            },
            "--baseline-seconds" | "--duration" => {
                args.baseline_seconds = Some(parse_seconds(&flag, &value()?)?)
            }
            "--settle" => args.settle = Duration::from_secs_f64(parse_seconds(&flag, &value()?)?),
            "--clients" => args.clients = parse_count("--clients", &value()?)? as usize,
            "--trigger-window" => {
                args.trigger_window = Duration::from_secs_f64(parse_seconds(&flag, &value()?)?)
            }
            "--scale-rows" => {
                for v in value()?.split(',') {
                    args.scale_rows.push(parse_count("--scale-rows", v.trim())?);
                }
            }
            "--warmup" => args.warmup = Duration::from_secs_f64(parse_seconds(&flag, &value()?)?),
            "--duty-cycle" => {
                let v = value()?;
                let d = v
                    .parse::<f64>()
                    .ok()
                    .filter(|d| *d > 0.0 && *d <= 1.0)
                    .ok_or(format!("--duty-cycle: a number in (0, 1], not {v}"))?;
                args.duty_cycle = Some(d);
            }
            "--skip" => {
                for s in value()?.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !SKIPPABLE.contains(&s) {
                        return Err(format!("--skip: unknown run {s}"));
                    }
                    args.skip.push(s.to_string());
                }
            }
            "--fast" => args.fast = true,
            "--set" => {
                let v = value()?;
                if !v.contains('=') {
                    return Err(format!("--set: name=value, not {v}"));
                }
                args.server_settings.push(v);
            }
            "--open-rate" => {
                let v = value()?;
                args.open_rate = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|r| *r > 0.0)
                        .ok_or(format!("--open-rate: operations per second, not {v}"))?,
                );
            }
            "--open-clients" => {
                args.open_clients = Some(parse_count("--open-clients", &value()?)? as usize)
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

impl Args {
    fn runs(&self, name: &str) -> bool {
        !self.skip.iter().any(|s| s == name)
    }
}

/// A phase as it happened: when, and the WAL position at its ends.
struct Mark {
    name: String,
    start: Instant,
    end: Option<Instant>,
    wal_start: i64,
    wal_end: i64,
}

/// A workload running against one database, cut into phases.
struct Live {
    workload: Workload,
    waits: WaitSampler,
    monitor: PgPool,
    marks: Vec<Mark>,
}

/// What a [`Live`] recorded.
struct Recorded {
    phases: Vec<PhaseSummary>,
    whole: PhaseSummary,
    per_second: Vec<u64>,
    marks: Vec<Value>,
    errors: BTreeMap<String, u64>,
    /// Each phase's span in seconds since the workload started.
    spans: Vec<(String, f64, f64)>,
    /// Every second of the run.
    windows: Vec<WindowSummary>,
    /// What the server's sessions were doing, per phase.
    waits: Waits,
}

impl Live {
    async fn start(
        pool: &PgPool,
        monitor: PgPool,
        // Clients, and the rate of an open loop (`None`: closed loop).
        (clients, rate): (usize, Option<f64>),
        rows: i64,
        mix: Mix,
        shapes: Vec<Shape>,
        first: &str,
    ) -> Result<Live> {
        let wal = db::wal_lsn(&monitor).await?;
        let workload = match rate {
            None => Workload::start(pool.clone(), clients, rows, mix, shapes),
            Some(rate) => Workload::start_open(pool.clone(), clients, rows, mix, shapes, rate),
        };
        let start = workload.started();
        let waits = WaitSampler::start((*monitor.connect_options()).clone());
        Ok(Live {
            workload,
            waits,
            monitor,
            marks: vec![Mark {
                name: first.to_string(),
                start,
                end: None,
                wal_start: wal,
                wal_end: wal,
            }],
        })
    }

    /// Operations starting from now belong to phase `name`.
    async fn enter(&mut self, name: &str) -> Result<()> {
        let now = Instant::now();
        self.workload.set_phase(self.marks.len());
        self.waits.set_phase(self.marks.len());
        let wal = db::wal_lsn(&self.monitor).await?;
        if let Some(last) = self.marks.last_mut() {
            last.end = Some(now);
            last.wal_end = wal;
        }
        self.marks.push(Mark {
            name: name.to_string(),
            start: now,
            end: None,
            wal_start: wal,
            wal_end: wal,
        });
        Ok(())
    }

    fn set_shape(&self, i: usize) {
        self.workload.set_shape(i);
    }

    async fn finish(mut self) -> Result<Recorded> {
        let now = Instant::now();
        let wal = db::wal_lsn(&self.monitor).await?;
        if let Some(last) = self.marks.last_mut() {
            last.end = Some(now);
            last.wal_end = wal;
        }
        let t0 = self.workload.started();
        let records: Vec<ClientRecord> = self.workload.stop().await;
        let waits = self.waits.stop().await;
        let seconds = |m: &Mark| (m.end.unwrap_or(now) - m.start).as_secs_f64();
        let phases = self
            .marks
            .iter()
            .enumerate()
            .map(|(i, m)| {
                stats::summarize(&m.name, seconds(m), m.wal_end - m.wal_start, &records, &[i])
            })
            .collect();
        let all: Vec<usize> = (0..self.marks.len()).collect();
        let whole = stats::summarize(
            "whole run",
            (now - t0).as_secs_f64(),
            wal - self.marks[0].wal_start,
            &records,
            &all,
        );
        let mut per_second: Vec<u64> = Vec::new();
        let mut errors = BTreeMap::new();
        for r in &records {
            if per_second.len() < r.per_second.len() {
                per_second.resize(r.per_second.len(), 0);
            }
            for (i, n) in r.per_second.iter().enumerate() {
                per_second[i] += n;
            }
            for (e, n) in &r.errors {
                *errors.entry(e.clone()).or_insert(0) += n;
            }
        }
        let seconds_total = (now - t0).as_secs() as usize + 1;
        let windows = stats::windows(&records, 0, seconds_total);
        let spans = self
            .marks
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    (m.start - t0).as_secs_f64(),
                    (m.end.unwrap_or(now) - t0).as_secs_f64(),
                )
            })
            .collect();
        let marks = self
            .marks
            .iter()
            .map(|m| {
                json!({
                    "phase": m.name,
                    "start_s": round((m.start - t0).as_secs_f64(), 3),
                    "end_s": round((m.end.unwrap_or(now) - t0).as_secs_f64(), 3),
                })
            })
            .collect();
        Ok(Recorded {
            phases,
            whole,
            per_second,
            marks,
            errors,
            spans,
            windows,
            waits,
        })
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One run under load.
struct RunResult {
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started and ended.
    load: (String, String),
    key: String,
    label: String,
    rows: i64,
    recorded: Recorded,
    /// The phases the migration itself spans (targets are judged on these).
    migration_phases: Vec<String>,
    migration_seconds: Option<f64>,
    size_before: TableSize,
    size_after: TableSize,
    /// Rows the backfill filled and how long its phase lasted.
    backfill: Option<(i64, f64)>,
    /// Each step's progress at the end: what it does, phase, rows filled, rows estimated.
    steps: Vec<Value>,
    /// The plain migration's statements: step, SQL, seconds.
    statements: Vec<(String, String, f64)>,
    checks: Value,
}

impl RunResult {
    fn migration(&self) -> impl Iterator<Item = &PhaseSummary> {
        self.recorded
            .phases
            .iter()
            .filter(|p| self.migration_phases.contains(&p.name))
    }

    /// Operations per second over every backfill phase together.
    fn backfill_throughput(&self) -> Option<f64> {
        let phases: Vec<&PhaseSummary> = self
            .recorded
            .phases
            .iter()
            .filter(|p| p.name.starts_with("backfill"))
            .collect();
        let seconds: f64 = phases.iter().map(|p| p.seconds).sum();
        let ops: u64 = phases.iter().map(|p| p.ops).sum();
        (seconds > 0.0).then(|| ops as f64 / seconds)
    }

    fn phase_names(&self) -> Vec<String> {
        self.recorded
            .phases
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    fn phase(&self, name: &str) -> Option<&PhaseSummary> {
        self.recorded.phases.iter().find(|p| p.name == name)
    }

    fn migration_wal(&self) -> i64 {
        self.migration().map(|p| p.wal_bytes).sum()
    }

    /// WAL the migration wrote beyond the workload's own: minus the baseline workload's WAL
    /// per second times the migration's wall time.
    fn migration_wal_beyond(&self, workload_rate: f64) -> Option<f64> {
        let secs = self.migration_seconds?;
        Some(self.migration_wal() as f64 - workload_rate * secs)
    }

    /// The 1-second windows that overlap the migration (every migration phase); for the
    /// baseline, every whole second of its run.
    fn migration_windows(&self) -> Vec<&WindowSummary> {
        let spans: Vec<(f64, f64)> = self
            .recorded
            .spans
            .iter()
            .filter(|(n, _, _)| self.migration_phases.contains(n))
            .map(|(_, a, b)| (*a, *b))
            .collect();
        let (Some(from), Some(to)) = (
            spans.iter().map(|s| s.0).reduce(f64::min),
            spans.iter().map(|s| s.1).reduce(f64::max),
        ) else {
            return Vec::new();
        };
        let whole_only = self.key == "baseline";
        self.recorded
            .windows
            .iter()
            .filter(|w| {
                let (a, b) = (w.second as f64, w.second as f64 + 1.0);
                if whole_only {
                    a >= from && b <= to
                } else {
                    b > from && a < to
                }
            })
            .collect()
    }

    fn backfill_rate(&self) -> Option<f64> {
        self.backfill.map(|(rows, s)| ratio(rows as f64, s))
    }

    fn json(&self, baseline: Option<&PhaseSummary>) -> Value {
        json!({
            "key": self.key,
            "label": self.label,
            "loadavg_start": self.load.0,
            "loadavg_end": self.load.1,
            "rows": self.rows,
            "migration_seconds": self.migration_seconds.map(|s| round(s, 3)),
            "migration_phases": self.migration_phases,
            "wal_bytes_migration": self.migration_wal(),
            "wal_bytes_whole_run": self.recorded.whole.wal_bytes,
            "table_bytes_before": {"total": self.size_before.total, "heap": self.size_before.heap},
            "table_bytes_after": {"total": self.size_after.total, "heap": self.size_after.heap},
            "backfill": self.backfill.map(|(rows, s)| json!({
                "rows": rows, "seconds": round(s, 3), "rows_per_sec": round(ratio(rows as f64, s), 1),
            })),
            "steps": self.steps,
            "statements": self.statements.iter().map(|(step, sql, s)| json!({
                "step": step, "sql": sql, "seconds": round(*s, 4),
            })).collect::<Vec<_>>(),
            "phases": self.recorded.phases.iter().map(|p| {
                let mut v = p.json(baseline);
                if let Some(b) = self.phase("before") {
                    v["throughput_vs_before"] = json!(round(ratio(p.ops_per_sec, b.ops_per_sec), 3));
                    v["p99_vs_before"] = json!(round(ratio(p.p99_ms, b.p99_ms), 3));
                }
                v
            }).collect::<Vec<_>>(),
            "whole_run": self.recorded.whole.json(baseline),
            "waits": self.recorded.waits.json(&self.phase_names()),
            "timeline": {
                "ops_per_second": self.recorded.per_second,
                "phases": self.recorded.marks,
            },
            "errors": self.recorded.errors,
            "checks": self.checks,
            "windows": self.recorded.windows.iter().map(|w| json!({
                "second": w.second, "ops": w.ops, "p99_ms": round(w.p99_ms, 3), "max_ms": round(w.max_ms, 3),
            })).collect::<Vec<_>>(),
        })
    }
}

fn backfill_options(args: &Args, throttled: bool) -> BackfillOptions {
    if throttled {
        let default = BackfillOptions::default();
        BackfillOptions {
            duty_cycle: args.duty_cycle.unwrap_or(default.duty_cycle),
            ..default
        }
    } else {
        BackfillOptions::unthrottled()
    }
}

/// The steps of `User` with work after boot.
fn background_steps() -> Vec<(StepId, StepKind)> {
    User::plan()
        .steps
        .iter()
        .filter(|s| s.kind.has_background_work())
        .map(|s| (s.id.clone(), s.kind.clone()))
        .collect()
}

/// A short name for a step in phase names: its column, or `index`.
fn step_label(kind: &StepKind) -> String {
    match kind {
        StepKind::CreateIndex(_) => "index".into(),
        other => other
            .column()
            .map(|c| c.name.to_string())
            .unwrap_or_else(|| other.name().to_string()),
    }
}

/// The phase the background work is running now: the background task walks the steps one after
/// the other, in plan order, each up to validate.
fn running_phase(evolution: &Evolution, steps: &[(StepId, StepKind)]) -> Option<(Phase, String)> {
    let progress = evolution.progress();
    steps.iter().find_map(|(id, kind)| {
        let done = progress.iter().find(|p| &p.step == id)?.phase;
        let next = kind.next_phase(done).filter(|p| *p <= Phase::Validate)?;
        let name = match (kind, next) {
            (StepKind::CreateIndex(_), Phase::Expand) => "build index (concurrently)".to_string(),
            // The backfills of one table run as one pass: name every column it fills.
            (_, Phase::Backfill) => {
                let columns: Vec<String> = steps
                    .iter()
                    .filter(|(id, kind)| {
                        progress
                            .iter()
                            .find(|p| &p.step == id)
                            .is_some_and(|p| kind.next_phase(p.phase) == Some(Phase::Backfill))
                    })
                    .map(|(_, kind)| step_label(kind))
                    .collect();
                format!("backfill {}", columns.join(" + "))
            }
            _ => format!("{next} {}", step_label(kind)),
        };
        Some((next, name))
    })
}

/// One phase of the background work as it happened.
struct Lasted {
    phase: Phase,
    name: String,
    seconds: f64,
}

/// Follows the background work of `evolution` until it is finished, entering a phase of `live`
/// each time it moves on. Returns the phases and how long each lasted.
async fn follow(evolution: &Evolution, mut live: Option<&mut Live>) -> Result<Vec<Lasted>> {
    let steps = background_steps();
    let mut current: Option<(Phase, String, Instant)> = None;
    let mut lasted = Vec::new();
    loop {
        let finished = evolution.is_finished();
        let running = if finished {
            None
        } else {
            running_phase(evolution, &steps)
        };
        if let Some((phase, name)) = running
            && current.as_ref().map(|c| &c.1) != Some(&name)
        {
            let now = Instant::now();
            if let Some((phase, name, since)) = current.take() {
                lasted.push(Lasted {
                    phase,
                    name,
                    seconds: (now - since).as_secs_f64(),
                });
            }
            if let Some(l) = live.as_deref_mut() {
                l.enter(&name).await?;
            }
            current = Some((phase, name, now));
        }
        if finished {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some((phase, name, since)) = current {
        lasted.push(Lasted {
            phase,
            name,
            seconds: since.elapsed().as_secs_f64(),
        });
    }
    evolution.wait().await?;
    Ok(lasted)
}

/// Each step's progress as this instance saw it.
fn step_progress(evolution: &Evolution) -> Vec<Value> {
    evolution
        .progress()
        .iter()
        .map(|p| {
            json!({
                "step": p.step.as_str(), "what": p.description, "phase": p.phase.as_str(),
                "rows_done": p.rows_done, "rows_estimated": p.rows_estimated,
            })
        })
        .collect()
}

/// Rows the backfill filled, and how long the backfill phases lasted together. Only steps with
/// a backfill phase count: a concurrent index build reports the tuples it indexed as progress.
/// The evolution's two backfills share one pass (one `UPDATE` per row), and every step of a
/// pass reports the pass's rows, so the rows are those of the step that reports most.
fn backfill_figures(evolution: &Evolution, lasted: &[Lasted]) -> (i64, f64) {
    let backfilled: Vec<StepId> = background_steps()
        .into_iter()
        .filter(|(_, kind)| kind.phases().contains(&Phase::Backfill))
        .map(|(id, _)| id)
        .collect();
    let rows = evolution
        .progress()
        .iter()
        .filter(|p| backfilled.contains(&p.step))
        .map(|p| p.rows_done)
        .max()
        .unwrap_or(0);
    let seconds = lasted
        .iter()
        .filter(|l| l.phase == Phase::Backfill)
        .map(|l| l.seconds)
        .sum();
    (rows, seconds)
}

/// Checks after a pgevolve run: every row filled correctly, both columns NOT NULL, `name`
/// gone, the index valid.
async fn check_evolved(pool: &PgPool) -> Result<Value> {
    let (rows, wrong): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE email_normalized IS DISTINCT FROM lower(email)) FROM users",
    )
    .fetch_one(pool)
    .await?;
    let columns: Vec<(String, bool)> = sqlx::query_as(
        "SELECT attname::text, attnotnull FROM pg_attribute \
         WHERE attrelid = 'users'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .fetch_all(pool)
    .await?;
    let valid_index: bool = sqlx::query_scalar(
        "SELECT count(*) = 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
         WHERE i.indrelid = 'users'::regclass AND i.indnatts = 1 AND a.attname = 'email_normalized' AND i.indisvalid",
    )
    .fetch_one(pool)
    .await?;
    let not_null = |c: &str| columns.iter().any(|(n, nn)| n == c && *nn);
    let ok = wrong == 0
        && not_null("email_normalized")
        && not_null("full_name")
        && !columns.iter().any(|(n, _)| n == "name")
        && valid_index;
    if !ok {
        eprintln!(
            "CHECK FAILED: {wrong} rows differ from lower(email); columns {columns:?}; valid index on email_normalized: {valid_index}"
        );
    }
    Ok(json!({
        "ok": ok,
        "rows": rows,
        "rows_not_lower_email": wrong,
        "columns_not_null": columns.iter().map(|(n, nn)| json!({"column": n, "not_null": nn})).collect::<Vec<_>>(),
        "valid_index_on_email_normalized": valid_index,
    }))
}

/// The evolver of every pgevolve run: the application's pool, the backfill mode, and a deploy
/// window that is always open (a benchmark is no deploy: it must run on Fridays too).
fn evolver(pool: &PgPool, args: &Args, throttled: bool) -> Evolver {
    Evolver::new(pool.clone())
        .model::<User>()
        .backfill_options(backfill_options(args, throttled))
        .deploy_window(DeployWindow::always())
}

/// How a pgevolve run's workload and contract differ from the plain closed-loop run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    /// Closed-loop clients, nothing else on the table.
    Closed,
    /// Open-loop clients: `clients` of them sending `rate` operations per second in all.
    Open { clients: usize, rate: f64 },
    /// A long transaction and a manual `VACUUM` busy on the table when contract starts.
    HolderAtContract,
}

/// A transaction that reads the table and stays open for `HOLDER_HOLDS`, and a manual
/// `VACUUM` of the table, on connections of their own. Returns once the transaction is
/// `HOLDER_AGE` old (past the default `long_holder`), with the vacuum just started.
async fn holders_on_the_table(
    db: &db::Database,
) -> Result<tokio::task::JoinHandle<Result<(f64, f64)>>> {
    let mut tx_conn = sqlx::PgConnection::connect_with(&db.options).await?;
    let mut vacuum_conn = sqlx::PgConnection::connect_with(&db.options).await?;
    sqlx::raw_sql("BEGIN; SELECT count(*) FROM users /* long report */;")
        .execute(&mut tx_conn)
        .await?;
    let opened = Instant::now();
    tokio::time::sleep(HOLDER_AGE).await;
    let vacuum = tokio::spawn(async move {
        let t = Instant::now();
        sqlx::query("VACUUM users")
            .execute(&mut vacuum_conn)
            .await?;
        Ok::<f64, db::BoxError>(t.elapsed().as_secs_f64())
    });
    Ok(tokio::spawn(async move {
        tokio::time::sleep(HOLDER_HOLDS.saturating_sub(opened.elapsed())).await;
        sqlx::raw_sql("COMMIT").execute(&mut tx_conn).await?;
        let held = opened.elapsed().as_secs_f64();
        let vacuumed = vacuum.await??;
        Ok((held, vacuumed))
    }))
}

async fn run_pgevolve(
    server: &mut Server,
    template: &Template,
    args: &Args,
    throttled: bool,
    key: &str,
    variant: Variant,
) -> Result<RunResult> {
    let mode = if throttled {
        "throttled"
    } else {
        "unthrottled"
    };
    let label = match variant {
        Variant::Closed => format!("pgevolve, {mode}"),
        Variant::Open { clients, rate } => format!(
            "pgevolve, {mode}, open loop ({} ops/s, {clients} clients)",
            num(rate, 0)
        ),
        Variant::HolderAtContract => {
            format!("pgevolve, {mode}, long transaction + VACUUM at contract")
        }
    };
    eprintln!("[{}] {label}: {} rows", clock(), template.rows);
    let load_start = loadavg();
    let db = server.copy(template).await?;
    // The application's pool: the clients and the evolver share it, as in a service.
    let open = match variant {
        Variant::Open { clients, rate } => Some((clients, rate)),
        _ => None,
    };
    let pool = db
        .pool(open.map(|(c, _)| c as u32 + 4).unwrap_or(8))
        .await?;
    let monitor = db.pool(1).await?;
    let size_before = db::table_size(&monitor).await?;
    let shapes = vec![Shape::old(), Shape::Accessors];
    let mut live = Live::start(
        &pool,
        monitor.clone(),
        open.map(|(c, r)| (c, Some(r)))
            .unwrap_or((args.clients, None)),
        template.rows,
        Mix::READ_WRITE,
        shapes,
        "warm-up",
    )
    .await?;
    // The copy's pages are prewarmed, but its first writes after the copy's checkpoint still
    // write full pages: an unmeasured warm-up keeps that out of `before`.
    tokio::time::sleep(args.warmup).await;
    live.enter("before").await?;
    tokio::time::sleep(args.settle).await;

    let first_migration_phase = live.marks.len();
    live.enter("expand").await?;
    let t = Instant::now();
    let evolution = evolver(&pool, args, throttled).boot().await?;
    // Expand is done: the new build serves, through the generated accessors.
    live.set_shape(1);
    let lasted = follow(&evolution, Some(&mut live)).await?;
    // Reads move to the renamed column.
    live.enter("switch").await?;
    evolution.switch().await?;
    // Retire (accessors stop writing the old column, in-flight calls drained), then contract.
    let holders = if variant == Variant::HolderAtContract {
        // A phase of its own: the report's scan costs the workload too, and is no part of
        // contract.
        live.enter("long transaction opens").await?;
        Some(holders_on_the_table(&db).await?)
    } else {
        None
    };
    live.enter("contract").await?;
    let contract_started = Instant::now();
    evolution.contract().await?;
    let contract_seconds = contract_started.elapsed().as_secs_f64();
    let migration_seconds = t.elapsed().as_secs_f64();
    let migration_phases = live.marks[first_migration_phase..]
        .iter()
        .map(|m| m.name.clone())
        .collect();
    live.enter("after").await?;
    tokio::time::sleep(args.settle).await;
    let recorded = live.finish().await?;

    let backfill = backfill_figures(&evolution, &lasted);
    let steps = step_progress(&evolution);
    drop(evolution);
    let mut checks = check_evolved(&monitor).await?;
    checks["contract_seconds"] = json!(round(contract_seconds, 3));
    if let Some(h) = holders {
        let (held, vacuumed) = h.await??;
        checks["holder_transaction_seconds"] = json!(round(held, 3));
        checks["holder_vacuum_seconds"] = json!(round(vacuumed, 3));
    }
    let size_after = db::table_size(&monitor).await?;
    pool.close().await;
    monitor.close().await;
    server.drop_database(&db.name).await?;
    Ok(RunResult {
        load: (load_start, loadavg()),
        key: key.to_string(),
        label,
        rows: template.rows,
        migration_phases,
        recorded,
        migration_seconds: Some(migration_seconds),
        size_before,
        size_after,
        backfill: Some(backfill),
        steps,
        statements: Vec::new(),
        checks,
    })
}

async fn run_plain(server: &mut Server, template: &Template, args: &Args) -> Result<RunResult> {
    eprintln!(
        "[{}] plain, one transaction: {} rows",
        clock(),
        template.rows
    );
    let load_start = loadavg();
    let db = server.copy(template).await?;
    let pool = db.pool(8).await?;
    let monitor = db.pool(1).await?;
    let size_before = db::table_size(&monitor).await?;
    // After the plain migration every step is applied, the rename included.
    let shapes = vec![Shape::old(), Shape::new_sql("full_name")];
    let mut live = Live::start(
        &pool,
        monitor.clone(),
        (args.clients, None),
        template.rows,
        Mix::READ_WRITE,
        shapes,
        "warm-up",
    )
    .await?;
    // The copy's pages are prewarmed, but its first writes after the copy's checkpoint still
    // write full pages: an unmeasured warm-up keeps that out of `before`.
    tokio::time::sleep(args.warmup).await;
    live.enter("before").await?;
    tokio::time::sleep(args.settle).await;

    live.enter("migration").await?;
    let t = Instant::now();
    let mut statements = Vec::new();
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    for (step, sql) in model::plain_migration() {
        let s = Instant::now();
        sqlx::query(sql).execute(&mut *tx).await?;
        statements.push((
            step.name.to_string(),
            sql.to_string(),
            s.elapsed().as_secs_f64(),
        ));
    }
    let s = Instant::now();
    tx.commit().await?;
    statements.push(("commit".into(), "COMMIT".into(), s.elapsed().as_secs_f64()));
    drop(conn);
    let migration_seconds = t.elapsed().as_secs_f64();
    // The new build is deployed with the migration.
    live.set_shape(1);
    live.enter("after").await?;
    tokio::time::sleep(args.settle).await;
    let recorded = live.finish().await?;
    let size_after = db::table_size(&monitor).await?;
    pool.close().await;
    monitor.close().await;
    server.drop_database(&db.name).await?;
    Ok(RunResult {
        load: (load_start, loadavg()),
        key: "plain".into(),
        label: "plain, one transaction".into(),
        rows: template.rows,
        migration_phases: vec!["migration".into()],
        recorded,
        migration_seconds: Some(migration_seconds),
        size_before,
        size_after,
        backfill: None,
        steps: Vec::new(),
        statements,
        checks: Value::Null,
    })
}

async fn run_baseline(
    server: &mut Server,
    template: &Template,
    args: &Args,
    seconds: f64,
) -> Result<RunResult> {
    eprintln!("[{}] baseline, no migration: {seconds:.1} s", clock());
    let load_start = loadavg();
    let db = server.copy(template).await?;
    let pool = db.pool(8).await?;
    let monitor = db.pool(1).await?;
    let size_before = db::table_size(&monitor).await?;
    let mut live = Live::start(
        &pool,
        monitor.clone(),
        (args.clients, None),
        template.rows,
        Mix::READ_WRITE,
        vec![Shape::old()],
        "warm-up",
    )
    .await?;
    tokio::time::sleep(args.warmup).await;
    live.enter("baseline").await?;
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let recorded = live.finish().await?;
    let size_after = db::table_size(&monitor).await?;
    pool.close().await;
    monitor.close().await;
    server.drop_database(&db.name).await?;
    Ok(RunResult {
        load: (load_start, loadavg()),
        key: "baseline".into(),
        label: "baseline, no migration".into(),
        rows: template.rows,
        migration_phases: vec!["baseline".into()],
        recorded,
        migration_seconds: None,
        size_before,
        size_after,
        backfill: None,
        steps: Vec::new(),
        statements: Vec::new(),
        checks: Value::Null,
    })
}

/// The single-statement `UPDATE` of every row on an idle table.
struct IdleUpdate {
    rows: u64,
    seconds: f64,
    wal_bytes: i64,
}

async fn run_idle_update(server: &mut Server, template: &Template) -> Result<IdleUpdate> {
    eprintln!("[{}] single UPDATE on an idle table", clock());
    let db = server.copy(template).await?;
    let pool = db.pool(1).await?;
    sqlx::query("ALTER TABLE users ADD COLUMN email_normalized text")
        .execute(&pool)
        .await?;
    let wal = db::wal_lsn(&pool).await?;
    let t = Instant::now();
    let done = sqlx::query("UPDATE users SET email_normalized = lower(email)")
        .execute(&pool)
        .await?;
    let seconds = t.elapsed().as_secs_f64();
    let wal_bytes = db::wal_lsn(&pool).await? - wal;
    pool.close().await;
    server.drop_database(&db.name).await?;
    Ok(IdleUpdate {
        rows: done.rows_affected(),
        seconds,
        wal_bytes,
    })
}

/// pgevolve's unthrottled backfill on an idle table, then the write overhead of its triggers.
struct Triggers {
    /// The background phases of the idle evolution and how long each lasted.
    idle_phases: Vec<(String, f64)>,
    /// Each step's progress at the end of the idle evolution.
    idle_steps: Vec<Value>,
    backfill_rows: i64,
    backfill_seconds: f64,
    evolution_seconds: f64,
    /// Writes per second with the triggers enabled and disabled, per window.
    windows: Vec<(bool, f64, PhaseSummary)>,
}

impl Triggers {
    fn writes_per_sec(&self, enabled: bool) -> f64 {
        let (writes, seconds) = self
            .windows
            .iter()
            .filter(|w| w.0 == enabled)
            .fold((0u64, 0.0), |(n, s), w| (n + w.2.writes, s + w.2.seconds));
        ratio(writes as f64, seconds)
    }

    fn overhead(&self) -> f64 {
        1.0 - ratio(self.writes_per_sec(true), self.writes_per_sec(false))
    }
}

async fn run_triggers(server: &mut Server, template: &Template, args: &Args) -> Result<Triggers> {
    eprintln!(
        "[{}] pgevolve backfill on an idle table, then trigger overhead",
        clock()
    );
    let db = server.copy(template).await?;
    let pool = db.pool(8).await?;
    let monitor = db.pool(1).await?;
    let t = Instant::now();
    let evolution = evolver(&pool, args, false).boot().await?;
    let lasted = follow(&evolution, None).await?;
    let evolution_seconds = t.elapsed().as_secs_f64();
    let (backfill_rows, backfill_seconds) = backfill_figures(&evolution, &lasted);
    let idle_phases = lasted.iter().map(|l| (l.name.clone(), l.seconds)).collect();
    let idle_steps = step_progress(&evolution);

    // Validated, not contracted: the fill and sync triggers are in place. The new build (the
    // accessors) writes email_normalized and both names itself, so the table stays valid with
    // the triggers disabled too. The backfill left a dead version of every row: vacuum them
    // first, or autovacuum does it during the first window and charges it to whichever
    // setting that window measures.
    sqlx::query("VACUUM ANALYZE users")
        .execute(&monitor)
        .await?;
    let shapes = vec![Shape::Accessors];
    let mut live = Live::start(
        &pool,
        monitor.clone(),
        (args.clients, None),
        template.rows,
        Mix::WRITE_ONLY,
        shapes,
        "warm-up",
    )
    .await?;
    // A warm-up window, not counted, then the rounds in alternating order (on/off, off/on,
    // on/off), so a drift of the machine falls on both settings alike.
    tokio::time::sleep(args.trigger_window).await;
    let mut order = Vec::new();
    for round in 1..=3 {
        let settings = if round % 2 == 1 {
            [true, false]
        } else {
            [false, true]
        };
        for enabled in settings {
            let sql = if enabled {
                "ALTER TABLE users ENABLE TRIGGER USER"
            } else {
                "ALTER TABLE users DISABLE TRIGGER USER"
            };
            sqlx::query(sql).execute(&monitor).await?;
            let name = format!("triggers {} #{round}", if enabled { "on" } else { "off" });
            live.enter(&name).await?;
            order.push(enabled);
            tokio::time::sleep(args.trigger_window).await;
        }
    }
    let recorded = live.finish().await?;
    sqlx::query("ALTER TABLE users ENABLE TRIGGER USER")
        .execute(&monitor)
        .await?;
    let windows = recorded
        .phases
        .into_iter()
        .skip(1)
        .zip(order)
        .map(|(p, enabled)| (enabled, p.writes_per_sec(), p))
        .collect();
    drop(evolution);
    pool.close().await;
    monitor.close().await;
    server.drop_database(&db.name).await?;
    Ok(Triggers {
        idle_phases,
        idle_steps,
        backfill_rows,
        backfill_seconds,
        evolution_seconds,
        windows,
    })
}

fn clock() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

#[derive(Default)]
struct Results {
    throttled: Option<RunResult>,
    unthrottled: Option<RunResult>,
    plain: Option<RunResult>,
    baseline: Option<RunResult>,
    idle_update: Option<IdleUpdate>,
    triggers: Option<Triggers>,
    scale: Vec<RunResult>,
    open: Option<RunResult>,
    holder: Option<RunResult>,
}

impl Results {
    fn baseline_phase(&self) -> Option<&PhaseSummary> {
        self.baseline.as_ref().and_then(|b| b.phase("baseline"))
    }

    fn runs(&self) -> impl Iterator<Item = &RunResult> {
        [
            &self.throttled,
            &self.unthrottled,
            &self.plain,
            &self.baseline,
            &self.open,
            &self.holder,
        ]
        .into_iter()
        .flatten()
        .chain(&self.scale)
    }

    /// The baseline workload's WAL per second.
    fn workload_wal_rate(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|b| ratio(b.recorded.whole.wal_bytes as f64, b.recorded.whole.seconds))
    }

    /// The plain migration's time for the statements of the steps pgevolve ran (BEGIN and
    /// COMMIT included), and for the whole transaction.
    fn plain_like_for_like(&self) -> Option<(f64, f64)> {
        let plain = self.plain.as_ref()?;
        let declared: Vec<&str> = STEPS
            .iter()
            .filter(|s| s.support == Support::Declared)
            .map(|s| s.name)
            .collect();
        let part: f64 = plain
            .statements
            .iter()
            .filter(|(step, _, _)| declared.contains(&step.as_str()) || step == "commit")
            .map(|(_, _, s)| s)
            .sum();
        Some((part, plain.migration_seconds.unwrap_or(0.0)))
    }
}

fn not_measured_steps() -> Vec<&'static model::EvolutionStep> {
    STEPS
        .iter()
        .filter(|s| s.support == Support::NotYet)
        .collect()
}

/// The migration phase with the highest `f`.
fn worst_phase(run: &RunResult, f: impl Fn(&PhaseSummary) -> f64) -> Option<&PhaseSummary> {
    run.migration()
        .max_by(|a, b| f(a).partial_cmp(&f(b)).unwrap_or(std::cmp::Ordering::Equal))
}

/// "missed by" / "met" note of an upper bound.
fn upper_note(x: f64, bound: f64, unit: &str) -> String {
    if x <= bound {
        format!("{}% of the bound", num(100.0 * x / bound, 0))
    } else {
        format!(
            "missed by {}{unit} ({}× the bound)",
            num(x - bound, 2),
            num(x / bound, 2)
        )
    }
}

fn not_measured(target: String, why: &str) -> Target {
    Target {
        target,
        measured: "-".into(),
        verdict: Verdict::NotMeasured,
        note: why.into(),
    }
}

fn targets(args: &Args, r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let base = r.baseline_phase();
    let at_rows = if args.rows == 1_000_000 {
        String::new()
    } else {
        format!(
            " (measured at {} rows; the target is stated at 1,000,000)",
            args.rows
        )
    };
    // The baseline's own 1-second windows: how many already exceed 2× its p99 (the noise floor).
    let base_windows = r
        .baseline
        .as_ref()
        .map(|b| b.migration_windows())
        .unwrap_or_default();
    let base_noise = |bound: f64| {
        let over = base_windows.iter().filter(|w| w.p99_ms > bound).count();
        format!(
            "the baseline itself has {over} of {} windows over the same bound",
            base_windows.len()
        )
    };
    let closed = [&r.throttled, &r.unthrottled];
    for run in closed.into_iter().flatten() {
        let Some(b) = base else {
            out.push(not_measured(
                format!("{}: stall, p99 and windows against the baseline", run.label),
                "no baseline run (--skip baseline)",
            ));
            continue;
        };
        // Stall at the noise floor.
        let bound = STALL_FACTOR * b.longest_stall_ms;
        if let Some(w) = worst_phase(run, |p| p.longest_stall_ms) {
            out.push(Target {
                target: format!(
                    "{}: longest wait ≤ {STALL_FACTOR}× the baseline's longest in every phase",
                    run.label
                ),
                measured: format!(
                    "{}× ({} ms in {}, baseline {} ms)",
                    num(ratio(w.longest_stall_ms, b.longest_stall_ms), 2),
                    num(w.longest_stall_ms, 1),
                    w.name,
                    num(b.longest_stall_ms, 1)
                ),
                verdict: Verdict::of(w.longest_stall_ms <= bound),
                note: format!("{}{at_rows}", upper_note(w.longest_stall_ms, bound, " ms")),
            });
        }
        let failed = run.recorded.whole.failed;
        out.push(Target {
            target: format!("{}: zero failed operations", run.label),
            measured: format!("{failed} failed"),
            verdict: Verdict::of(failed == 0),
            note: "whole run: before, every phase, after".into(),
        });
        // p99 per phase.
        let p99_bound = P99_FACTOR * b.p99_ms;
        if let Some(w) = worst_phase(run, |p| p.p99_ms) {
            out.push(Target {
                target: format!(
                    "{}: p99 ≤ {P99_FACTOR}× the baseline's in every phase",
                    run.label
                ),
                measured: format!(
                    "{}× (worst phase: {}, {} ms vs {} ms)",
                    num(ratio(w.p99_ms, b.p99_ms), 2),
                    w.name,
                    num(w.p99_ms, 2),
                    num(b.p99_ms, 2)
                ),
                verdict: Verdict::of(w.p99_ms <= p99_bound),
                note: upper_note(w.p99_ms, p99_bound, " ms"),
            });
        }
        // p99 per 1-second window.
        let windows = run.migration_windows();
        if let Some(w) = windows.iter().max_by(|a, b| {
            a.p99_ms
                .partial_cmp(&b.p99_ms)
                .unwrap_or(std::cmp::Ordering::Equal)
        }) {
            let over = windows.iter().filter(|w| w.p99_ms > p99_bound).count();
            out.push(Target {
                target: format!(
                    "{}: p99 ≤ {P99_FACTOR}× the baseline's in every 1-second window of the migration",
                    run.label
                ),
                measured: format!(
                    "{}× (worst window: second {}, {} ms vs {} ms); {over} of {} windows over",
                    num(ratio(w.p99_ms, b.p99_ms), 2),
                    w.second,
                    num(w.p99_ms, 2),
                    num(b.p99_ms, 2),
                    windows.len()
                ),
                verdict: Verdict::of(over == 0),
                note: format!("{}; {}", upper_note(w.p99_ms, p99_bound, " ms"), base_noise(p99_bound)),
            });
        }
    }
    // Throughput during the throttled backfill.
    let backfill_target = format!(
        "pgevolve, throttled: throughput during the backfill ≥ {BACKFILL_THROUGHPUT}× the baseline's"
    );
    match (
        r.throttled
            .as_ref()
            .and_then(RunResult::backfill_throughput),
        base,
    ) {
        (Some(ops_per_sec), Some(b)) => {
            let x = ratio(ops_per_sec, b.ops_per_sec);
            out.push(Target {
                target: backfill_target,
                measured: format!(
                    "{}× ({} vs {} ops/s, over every backfill phase)",
                    num(x, 2),
                    num(ops_per_sec, 0),
                    num(b.ops_per_sec, 0)
                ),
                verdict: Verdict::of(x >= BACKFILL_THROUGHPUT),
                note: if x >= BACKFILL_THROUGHPUT {
                    String::new()
                } else {
                    format!("short by {}×", num(BACKFILL_THROUGHPUT - x, 2))
                },
            });
        }
        _ => out.push(not_measured(
            backfill_target,
            "needs the throttled run and the baseline",
        )),
    }
    // Stall growth with the table.
    let growth_target = format!(
        "pgevolve, throttled: longest wait at the larger size ≤ {STALL_FACTOR}× the baseline's longest"
    );
    match base {
        Some(b) if !r.scale.is_empty() => {
            for big in &r.scale {
                let stall = big
                    .migration()
                    .map(|p| p.longest_stall_ms)
                    .fold(0.0, f64::max);
                let bound = STALL_FACTOR * b.longest_stall_ms;
                out.push(Target {
                    target: growth_target.clone(),
                    measured: format!(
                        "{} ms at {} rows: {}× the baseline's {} ms",
                        num(stall, 1),
                        big.rows,
                        num(ratio(stall, b.longest_stall_ms), 2),
                        num(b.longest_stall_ms, 1)
                    ),
                    verdict: Verdict::of(stall <= bound),
                    note: upper_note(stall, bound, " ms"),
                });
            }
        }
        _ => out.push(not_measured(
            growth_target,
            "run with --scale-rows 5000000 (and the baseline)",
        )),
    }
    // Unthrottled speed against the plain way.
    let speed_target = format!(
        "pgevolve, unthrottled: the evolution's data work ≤ {SPEED_FACTOR}× the plain migration's time"
    );
    match (&r.unthrottled, r.plain_like_for_like()) {
        (Some(u), Some((part, whole))) => {
            let secs = u.migration_seconds.unwrap_or(0.0);
            let x = ratio(secs, part);
            out.push(Target {
                target: speed_target,
                measured: format!(
                    "{}× ({} s, expand to contract, vs {} s for the plain statements of the same steps; {} s for the whole plain transaction)",
                    num(x, 2),
                    num(secs, 2),
                    num(part, 2),
                    num(whole, 2)
                ),
                verdict: Verdict::of(x <= SPEED_FACTOR),
                note: format!("{}; both under the same load", upper_note(x, SPEED_FACTOR, "×")),
            });
        }
        _ => out.push(not_measured(
            speed_target,
            "needs the unthrottled run and the plain run",
        )),
    }
    // WAL against the plain migration's.
    for run in [&r.unthrottled, &r.throttled].into_iter().flatten() {
        let target = format!(
            "{}: WAL beyond the workload's ≤ {WAL_FACTOR}× the plain migration's",
            run.label
        );
        match (r.workload_wal_rate(), &r.plain) {
            (Some(rate), Some(plain)) => {
                let mine = run.migration_wal_beyond(rate).unwrap_or(f64::NAN);
                let theirs = plain.migration_wal_beyond(rate).unwrap_or(f64::NAN);
                let x = ratio(mine, theirs);
                out.push(Target {
                    target,
                    measured: format!(
                        "{}× ({} vs {} MiB)",
                        num(x, 2),
                        num(mine / 1048576.0, 1),
                        num(theirs / 1048576.0, 1)
                    ),
                    verdict: Verdict::of(x <= WAL_FACTOR),
                    note: format!(
                        "{}; the workload's WAL rate from the baseline ({} MiB/s) times each migration's wall time subtracted",
                        upper_note(x, WAL_FACTOR, "×"),
                        num(rate / 1048576.0, 2)
                    ),
                });
            }
            _ => out.push(not_measured(target, "needs the baseline and the plain run")),
        }
    }
    // Open loop.
    match &r.open {
        Some(run) => {
            if let Some(w) = worst_phase(run, |p| p.p99_ms) {
                out.push(Target {
                    target: format!("{}: p99 ≤ {OPEN_P99_MS} ms in every phase", run.label),
                    measured: format!("{} ms (worst phase: {})", num(w.p99_ms, 2), w.name),
                    verdict: Verdict::of(w.p99_ms <= OPEN_P99_MS),
                    note: upper_note(w.p99_ms, OPEN_P99_MS, " ms"),
                });
            }
            if let Some(w) = worst_phase(run, |p| p.longest_stall_ms) {
                out.push(Target {
                    target: format!("{}: max ≤ {OPEN_MAX_MS} ms in every phase", run.label),
                    measured: format!(
                        "{} ms (worst phase: {})",
                        num(w.longest_stall_ms, 1),
                        w.name
                    ),
                    verdict: Verdict::of(w.longest_stall_ms <= OPEN_MAX_MS),
                    note: upper_note(w.longest_stall_ms, OPEN_MAX_MS, " ms"),
                });
            }
            let failed = run.recorded.whole.failed;
            out.push(Target {
                target: format!("{}: zero failed operations", run.label),
                measured: format!("{failed} failed"),
                verdict: Verdict::of(failed == 0),
                note: String::new(),
            });
        }
        None => out.push(not_measured(
            format!("open loop: p99 ≤ {OPEN_P99_MS} ms and max ≤ {OPEN_MAX_MS} ms in every phase"),
            "--skip open, or no baseline and no --open-rate",
        )),
    }
    // The long holder at contract: its own figure.
    match (&r.holder, base) {
        (Some(run), Some(b)) => {
            if let Some(c) = run.phase("contract") {
                let bound = STALL_FACTOR * b.longest_stall_ms;
                out.push(Target {
                    target: format!(
                        "{}: contract's longest wait ≤ {STALL_FACTOR}× the baseline's longest",
                        run.label
                    ),
                    measured: format!(
                        "{} ms ({}×); contract took {} s (waited for the holders)",
                        num(c.longest_stall_ms, 1),
                        num(ratio(c.longest_stall_ms, b.longest_stall_ms), 2),
                        run.checks["contract_seconds"]
                    ),
                    verdict: Verdict::of(c.longest_stall_ms <= bound),
                    note: format!(
                        "{}; transaction held {} s, VACUUM took {} s",
                        upper_note(c.longest_stall_ms, bound, " ms"),
                        run.checks["holder_transaction_seconds"],
                        run.checks["holder_vacuum_seconds"]
                    ),
                });
            }
            let failed = run.recorded.whole.failed;
            out.push(Target {
                target: format!("{}: zero failed operations", run.label),
                measured: format!("{failed} failed"),
                verdict: Verdict::of(failed == 0),
                note: String::new(),
            });
        }
        _ => out.push(not_measured(
            "long transaction + VACUUM at contract: contract's longest wait".into(),
            "--skip holder, or no baseline",
        )),
    }
    // Trigger overhead.
    let trigger_target = "trigger write overhead ≤ 15% throughput loss";
    match &r.triggers {
        Some(t) => {
            let loss = t.overhead();
            out.push(Target {
                target: trigger_target.into(),
                measured: format!(
                    "{}% ({} writes/s with, {} without)",
                    num(100.0 * loss, 1),
                    num(t.writes_per_sec(true), 0),
                    num(t.writes_per_sec(false), 0)
                ),
                verdict: Verdict::of(loss <= 0.15),
                note: "the fill trigger of email_normalized and the rename's sync trigger, both in place (validated, before contract)".into(),
            });
        }
        None => out.push(not_measured(trigger_target.into(), "--skip triggers")),
    }
    for step in not_measured_steps() {
        out.push(not_measured(
            format!(
                "pgevolve: the {} step ({}) under load",
                step.name, step.what
            ),
            &format!(
                "pgevolve has no `{}` yet: the plain run includes it, the pgevolve runs do not",
                step.attribute
            ),
        ));
    }
    out
}

fn markdown(
    args: &Args,
    r: &Results,
    targets: &[Target],
    machine: &Value,
    server: &[(String, String)],
) -> String {
    let mut md = String::new();
    let setting = |k: &str| {
        server
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("?")
    };
    md.push_str(&format!(
        "## under_load: {} rows, {} clients (50% UPDATE, 30% SELECT, 20% INSERT)\n\n",
        args.rows, args.clients
    ));
    md.push_str(&format!(
        "Machine: {} ({} cores, {}), {} build, load average at the start {}. PostgreSQL {} (shared_buffers {}, fsync {}, full_page_writes {}, synchronous_commit {}: {}).\n\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["memory"].as_str().unwrap_or("?"),
        machine["build"].as_str().unwrap_or("?"),
        machine["loadavg"].as_str().unwrap_or("?"),
        setting("server_version"),
        setting("shared_buffers"),
        setting("fsync"),
        setting("full_page_writes"),
        setting("synchronous_commit"),
        if setting("fsync") == "on" && setting("synchronous_commit") == "on" && setting("full_page_writes") == "on" {
            "durable, as production runs"
        } else {
            "fast settings, not durable: not the reported configuration"
        },
    ));

    let base = r.baseline_phase();
    md.push_str("### Per run and phase\n\nLatencies in ms. Stall: the longest time any operation started in the phase waited (failed ones included). × base: against the baseline run (the targets' reference); × before: against the same run's `before` phase, seconds earlier, which shows how much of a difference is drift of the machine between runs.\n\n");
    let mut t = Table::new(&[
        "run",
        "phase",
        "s",
        "ops/s",
        "ops/s × base",
        "ops/s × before",
        "p50",
        "p99",
        "p99.9",
        "max",
        "stall",
        "stall × base",
        "p99 × base",
        "p99 × before",
        "failed",
    ]);
    for run in r.runs() {
        let before = run.phase("before");
        for p in &run.recorded.phases {
            let migration = run.migration_phases.contains(&p.name) && run.key != "baseline";
            let vs = |x: Option<&PhaseSummary>, f: fn(&PhaseSummary) -> f64| {
                x.map(|b| num(ratio(f(p), f(b)), 2)).unwrap_or("-".into())
            };
            t.row(vec![
                run.label.clone(),
                if migration {
                    format!("**{}**", p.name)
                } else {
                    p.name.clone()
                },
                num(p.seconds, 2),
                num(p.ops_per_sec, 0),
                vs(base, |x| x.ops_per_sec),
                vs(before, |x| x.ops_per_sec),
                num(p.p50_ms, 2),
                num(p.p99_ms, 2),
                num(p.p999_ms, 2),
                num(p.max_ms, 1),
                num(p.longest_stall_ms, 1),
                vs(base, |x| x.longest_stall_ms),
                vs(base, |x| x.p99_ms),
                vs(before, |x| x.p99_ms),
                p.failed.to_string(),
            ]);
        }
    }
    md.push_str(&t.render());

    md.push_str("\n### 1-second windows\n\nEvery second of the migration (for the baseline: of its whole run): the p99 and longest latency of the operations that started (open loop: were due) in it, failed ones included.\n\n");
    let mut t = Table::new(&[
        "run",
        "windows",
        "worst p99 (second)",
        "median window p99",
        "worst max (second)",
        "windows with p99 > 2× baseline p99",
    ]);
    for run in r.runs() {
        let windows = run.migration_windows();
        if windows.is_empty() {
            continue;
        }
        let worst = |f: fn(&WindowSummary) -> f64| {
            windows
                .iter()
                .max_by(|a, b| f(a).partial_cmp(&f(b)).unwrap_or(std::cmp::Ordering::Equal))
                .map(|w| format!("{} ms ({})", num(f(w), 2), w.second))
                .unwrap_or_default()
        };
        let mut p99s: Vec<f64> = windows.iter().map(|w| w.p99_ms).collect();
        p99s.sort_by(f64::total_cmp);
        t.row(vec![
            run.label.clone(),
            windows.len().to_string(),
            worst(|w| w.p99_ms),
            num(p99s[p99s.len() / 2], 2),
            worst(|w| w.max_ms),
            base.map(|b| {
                windows
                    .iter()
                    .filter(|w| w.p99_ms > P99_FACTOR * b.p99_ms)
                    .count()
                    .to_string()
            })
            .unwrap_or("-".into()),
        ]);
    }
    md.push_str(&t.render());

    md.push_str("\n### What the sessions were doing\n\nSampled from `pg_stat_activity` every 100 ms: per phase, the mean number of the workload's and the migration's sessions that were active (not waiting for their client), and what they were doing, as shares of the sightings: `CPU` (active, no wait event: running or queued for a core) or the wait event (`IO:WALSync`: a commit's flush; `LWLock:WALWrite`: waiting for another's flush; `IO:DataFileRead`: a page not in shared buffers; `Lock:*`: a heavyweight lock). Others: background processes and autovacuum.\n\n");
    let mut t = Waits::table();
    for run in r.runs() {
        run.recorded
            .waits
            .rows(&mut t, &run.label, &run.phase_names());
    }
    md.push_str(&t.render());

    md.push_str("\n### Migrations\n\nWAL: bytes the whole server wrote (`pg_current_wal_lsn()` difference), the workload's included; beyond the workload's: minus what the baseline's workload wrote per second, times the migration's wall time († for a run at another size: its own `before` phase's WAL per second instead).\n\n");
    let wal_rate = r
        .baseline
        .as_ref()
        .map(|b| ratio(b.recorded.whole.wal_bytes as f64, b.recorded.whole.seconds));
    let mut t = Table::new(&[
        "run",
        "rows",
        "migration wall time",
        "WAL during the migration",
        "WAL beyond the workload's",
        "WAL whole run",
        "table before",
        "table after",
        "backfill rows/s",
    ]);
    for run in r.runs() {
        t.row(vec![
            run.label.clone(),
            run.rows.to_string(),
            run.migration_seconds
                .map(|s| format!("{} s", num(s, 2)))
                .unwrap_or("-".into()),
            if run.migration_seconds.is_some() {
                mib(run.migration_wal())
            } else {
                "-".into()
            },
            // A run on a table of another size has a workload of another WAL rate (random
            // writes over more pages write more full-page images): its own `before` is its
            // reference, marked with a dagger.
            match (run.migration_seconds, wal_rate, run.phase("before")) {
                (Some(secs), _, Some(before)) if run.rows != args.rows => format!(
                    "{}†",
                    mib(run.migration_wal()
                        - (ratio(before.wal_bytes as f64, before.seconds) * secs) as i64)
                ),
                (Some(secs), Some(rate), _) => mib(run.migration_wal() - (rate * secs) as i64),
                _ => "-".into(),
            },
            mib(run.recorded.whole.wal_bytes),
            mib(run.size_before.total),
            mib(run.size_after.total),
            run.backfill_rate().map(|x| num(x, 0)).unwrap_or("-".into()),
        ]);
    }
    md.push_str(&t.render());

    if let Some(plain) = &r.plain {
        md.push_str("\n### The plain migration's statements (one transaction, under load)\n\n");
        let mut t = Table::new(&["step", "statement", "s"]);
        for (step, sql, s) in &plain.statements {
            t.row(vec![step.clone(), format!("`{sql}`"), num(*s, 3)]);
        }
        md.push_str(&t.render());
    }

    md.push_str("\n### Backfill speed\n\n");
    let mut t = Table::new(&["what", "rows", "s", "rows/s", "× single UPDATE"]);
    let single = r
        .idle_update
        .as_ref()
        .map(|u| ratio(u.rows as f64, u.seconds));
    let mut row = |what: String, rows: i64, s: f64| {
        let rate = ratio(rows as f64, s);
        t.row(vec![
            what,
            rows.to_string(),
            num(s, 2),
            num(rate, 0),
            single.map(|x| num(ratio(rate, x), 2)).unwrap_or("-".into()),
        ]);
    };
    if let Some(u) = &r.idle_update {
        row(
            "single `UPDATE` of every row, idle table".into(),
            u.rows as i64,
            u.seconds,
        );
    }
    if let Some(tr) = &r.triggers {
        row(
            "pgevolve backfill, unthrottled, idle table".into(),
            tr.backfill_rows,
            tr.backfill_seconds,
        );
    }
    for run in [&r.unthrottled, &r.throttled]
        .into_iter()
        .flatten()
        .chain(&r.scale)
    {
        if let Some((rows, s)) = run.backfill {
            row(format!("{}, under load", run.label), rows, s);
        }
    }
    md.push_str(&t.render());

    if let Some(tr) = &r.triggers {
        md.push_str(&format!(
            "\n### Trigger write overhead\n\nWrite-only workload (UPDATE 5 : INSERT 2, the new build's statements) on the validated table, pgevolve's triggers enabled and disabled (`ALTER TABLE users DISABLE TRIGGER USER`) in alternating {} s windows, after a `VACUUM ANALYZE` and an uncounted warm-up window; rounds alternate their order (on/off, off/on, on/off).\n\n",
            num(args.trigger_window.as_secs_f64(), 0)
        ));
        let mut t = Table::new(&["window", "writes/s", "p99 ms"]);
        for (_, w, p) in &tr.windows {
            t.row(vec![p.name.clone(), num(*w, 0), num(p.p99_ms, 2)]);
        }
        t.row(vec![
            "**with triggers / without**".into(),
            format!(
                "{} / {} = {}",
                num(tr.writes_per_sec(true), 0),
                num(tr.writes_per_sec(false), 0),
                num(ratio(tr.writes_per_sec(true), tr.writes_per_sec(false)), 3)
            ),
            String::new(),
        ]);
        md.push_str(&t.render());
    }

    let missing = not_measured_steps();
    if !missing.is_empty() {
        md.push_str("\n### Not measured yet\n\n");
        for s in missing {
            md.push_str(&format!(
                "- **{}** ({}): pgevolve has no `{}` yet. The plain run includes `{}`; the pgevolve runs do not, so their figures cover only the steps pgevolve supports.\n",
                s.name,
                s.what,
                s.attribute,
                s.plain_sql.join("; ")
            ));
        }
    }

    md.push_str("\n### Targets\n\n");
    md.push_str(&report::targets_table(targets));
    md
}

#[tokio::main]
async fn main() {
    support::main_with_server(
        USAGE,
        parse_args(),
        |a: &Args| (!a.fast).then(|| a.server_settings.clone()),
        run_all,
    )
    .await;
}

async fn run_all(args: &Args, server: &mut Server) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run `cargo bench` for optimized figures");
    }
    let mut machine = report::machine();
    machine["loadavg"] = json!(loadavg());
    let settings = server.describe().await?;
    eprintln!("[{}] seeding {} rows", clock(), args.rows);
    let template = server.create_template(args.rows).await?;
    eprintln!("[{}] seeded in {:.1} s", clock(), template.seed_seconds);
    let mut r = Results::default();
    if args.throttled {
        r.throttled = Some(
            run_pgevolve(
                server,
                &template,
                args,
                true,
                "pgevolve_throttled",
                Variant::Closed,
            )
            .await?,
        );
    }
    if args.unthrottled {
        r.unthrottled = Some(
            run_pgevolve(
                server,
                &template,
                args,
                false,
                "pgevolve_unthrottled",
                Variant::Closed,
            )
            .await?,
        );
    }
    if args.runs("plain") {
        r.plain = Some(run_plain(server, &template, args).await?);
    }
    if args.runs("baseline") {
        let seconds = args.baseline_seconds.unwrap_or_else(|| {
            [&r.throttled, &r.unthrottled]
                .into_iter()
                .flatten()
                .map(|run| run.recorded.whole.seconds)
                .fold(0.0, f64::max)
                .max(5.0)
        });
        r.baseline = Some(run_baseline(server, &template, args, seconds).await?);
    }
    let open_rate = args
        .open_rate
        .or_else(|| r.baseline_phase().map(|b| b.ops_per_sec / 2.0));
    match open_rate {
        Some(rate) if args.runs("open") => {
            let clients = args.open_clients.unwrap_or(args.clients * 2);
            r.open = Some(
                run_pgevolve(
                    server,
                    &template,
                    args,
                    true,
                    "pgevolve_open_loop",
                    Variant::Open { clients, rate },
                )
                .await?,
            );
        }
        _ => {}
    }
    if args.runs("holder") {
        r.holder = Some(
            run_pgevolve(
                server,
                &template,
                args,
                false,
                "pgevolve_holder_at_contract",
                Variant::HolderAtContract,
            )
            .await?,
        );
    }
    if args.runs("idle") {
        r.idle_update = Some(run_idle_update(server, &template).await?);
    }
    if args.runs("triggers") {
        r.triggers = Some(run_triggers(server, &template, args).await?);
    }
    server.drop_database(&template.name).await?;
    for &rows in &args.scale_rows {
        eprintln!("[{}] seeding {rows} rows for the scale run", clock());
        let big = server.create_template(rows).await?;
        let mut run = run_pgevolve(
            server,
            &big,
            args,
            true,
            "pgevolve_throttled_scale",
            Variant::Closed,
        )
        .await?;
        run.label = format!("pgevolve, throttled, {rows} rows");
        r.scale.push(run);
        server.drop_database(&big.name).await?;
    }

    let targets = targets(args, &r);
    let md = markdown(args, &r, &targets, &machine, &settings);
    let base = r.baseline_phase();
    let json = json!({
        "benchmark": "under_load",
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "rows": args.rows,
        "clients": args.clients,
        "mix": {"update": 50, "select": 30, "insert": 20},
        "settle_seconds": args.settle.as_secs_f64(),
        "durable": !args.fast,
        "server_settings": args.server_settings,
        "open_rate": open_rate.map(|x| round(x, 1)),
        "seed_seconds": round(template.seed_seconds, 3),
        "machine": machine,
        "server": settings.iter().cloned().collect::<BTreeMap<_, _>>(),
        "runs": r.runs().map(|run| run.json(base)).collect::<Vec<_>>(),
        "idle_update": r.idle_update.as_ref().map(|u| json!({
            "rows": u.rows, "seconds": round(u.seconds, 3),
            "rows_per_sec": round(ratio(u.rows as f64, u.seconds), 1), "wal_bytes": u.wal_bytes,
        })),
        "trigger_overhead": r.triggers.as_ref().map(|t| json!({
            "idle_backfill": {"rows": t.backfill_rows, "seconds": round(t.backfill_seconds, 3),
                "rows_per_sec": round(ratio(t.backfill_rows as f64, t.backfill_seconds), 1),
                "evolution_seconds": round(t.evolution_seconds, 3),
                "steps": t.idle_steps,
                "phases": t.idle_phases.iter().map(|(n, s)| json!({"phase": n, "seconds": round(*s, 3)})).collect::<Vec<_>>()},
            "writes_per_sec_with_triggers": round(t.writes_per_sec(true), 1),
            "writes_per_sec_without_triggers": round(t.writes_per_sec(false), 1),
            "throughput_loss": round(t.overhead(), 4),
            "windows": t.windows.iter().map(|(on, w, p)| json!({
                "triggers": on, "writes_per_sec": round(*w, 1), "phase": p.json(None),
            })).collect::<Vec<_>>(),
        })),
        "not_measured": not_measured_steps().iter().map(|s| json!({
            "step": s.name, "what": s.what, "attribute": s.attribute,
            "reason": "not implemented in pgevolve yet",
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(Target::json).collect::<Vec<_>>(),
    });
    println!("{md}");
    let (j, m) = report::write_results(&format!("under_load-{}", args.rows), &json, &md);
    eprintln!("results: {} and {}", j.display(), m.display());
    Ok(())
}
