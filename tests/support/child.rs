//! Real child processes for the kill tests: the test binary runs itself again
//! (`std::env::current_exe()`) on one entry point, with [`CHILD_ENV`] set to a scenario and a
//! database URL, and the parent kills it with SIGKILL ([`ChildProcess::kill`]) once it has
//! reported (a line on its standard output) or paused (`PGEVOLVE_PAUSE_AT`) where the test wants
//! it to die; or holds it at a pause point while the test acts, then lets it go on
//! ([`ChildProcess::held_at`], [`ChildProcess::release`]). See `tests/README.md`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in a child: `<scenario> <database url>`. Unset in a normal run, where the entry point
/// returns at once.
pub const CHILD_ENV: &str = "PGEVOLVE_TEST_CHILD";

static CHILD_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// In an entry point: `(scenario, url)` when this process is a child, `None` in a normal run.
pub fn child_spec() -> Option<(String, String)> {
    let spec = std::env::var(CHILD_ENV).ok()?;
    let (scenario, url) = spec.split_once(' ').expect("<scenario> <url>");
    Some((scenario.to_string(), url.to_string()))
}

/// True in a child process: the parent tests return at once there (the child runs only its
/// entry point, but a filter mistake must not run a parent inside a child).
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// In a child: one line for the parent.
pub fn report(line: &str) {
    println!("\n{line}");
    std::io::stdout().flush().unwrap();
}

/// In a child: reports `PROGRESS <rows>` (the most rows any step of `evolution` has filled)
/// every 10 ms, for ever; the parent kills the process.
pub async fn report_progress_forever(evolution: &pgevolve::Evolution) -> ! {
    loop {
        let done = evolution
            .progress()
            .iter()
            .map(|p| p.rows_done)
            .max()
            .unwrap_or(0);
        report(&format!("PROGRESS {done}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A child process; killed with SIGKILL when dropped (a failing test leaves none behind).
pub struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The file whose creation ends the child's pause (`PGEVOLVE_PAUSE_RELEASE`).
    release: Option<std::path::PathBuf>,
}

impl ChildProcess {
    /// Runs this test binary again on the test `entry` with `scenario` and `url`, pausing at
    /// `pause_at` (the runtime's `PGEVOLVE_PAUSE_AT`) when given.
    pub fn start(entry: &str, scenario: &str, url: &str, pause_at: Option<&str>) -> ChildProcess {
        ChildProcess::spawn(entry, scenario, url, pause_at, None)
    }

    fn spawn(
        entry: &str,
        scenario: &str,
        url: &str,
        pause_at: Option<&str>,
        release: Option<std::path::PathBuf>,
    ) -> ChildProcess {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([entry, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{scenario} {url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("PGEVOLVE_CHILD_STDERR_DIR") {
                Some(dir) => Stdio::from(
                    std::fs::File::create(std::path::Path::new(&dir).join(format!(
                        "child-{}-{}.log",
                        std::process::id(),
                        CHILD_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    )))
                    .unwrap(),
                ),
                None => Stdio::null(),
            });
        if let Some(point) = pause_at {
            command.env("PGEVOLVE_PAUSE_AT", point);
        }
        if let Some(file) = &release {
            command.env("PGEVOLVE_PAUSE_RELEASE", file);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProcess {
            child,
            lines,
            release,
        }
    }

    /// Starts the child with `PGEVOLVE_PAUSE_AT=point` and returns once it has paused there.
    pub fn paused_at(entry: &str, scenario: &str, url: &str, point: &str) -> ChildProcess {
        let mut child = ChildProcess::start(entry, scenario, url, Some(point));
        child.expect(&format!("PAUSED {point}"));
        child
    }

    /// Starts the child with `PGEVOLVE_PAUSE_AT=point` and returns once it is held there, until
    /// [`ChildProcess::release`]; later passes at the point go on at once.
    pub fn held_at(entry: &str, scenario: &str, url: &str, point: &str) -> ChildProcess {
        let file = std::env::temp_dir().join(format!(
            "pgevolve-release-{}-{}",
            std::process::id(),
            CHILD_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&file);
        let mut child = ChildProcess::spawn(entry, scenario, url, Some(point), Some(file));
        child.expect(&format!("PAUSED {point}"));
        child
    }

    /// Lets a child started with [`ChildProcess::held_at`] go on, and returns once it has.
    pub fn release(&mut self) {
        let file = self.release.as_ref().expect("a child started with held_at");
        std::fs::write(file, b"").unwrap();
        self.expect("RELEASED ");
    }

    /// The OS process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The first line (from its start) that contains `prefix`, waiting at most 60 s; panics if
    /// the child exits or stays silent.
    pub fn expect(&mut self, prefix: &str) -> String {
        self.wait_for(prefix, |_| true)
    }

    /// The first line `<prefix><rest>` whose `rest` satisfies `done`, waiting at most 60 s.
    pub fn wait_for(&mut self, prefix: &str, mut done: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "no {prefix:?} line from the child ({e}; exit status {:?})",
                    self.child.try_wait()
                )
            });
            if let Some(at) = line.find(prefix) {
                let found = &line[at..];
                if done(&found[prefix.len()..]) {
                    return found.to_string();
                }
            }
        }
    }

    /// Waits for `PROGRESS <rows>` with at least `rows` (see [`report_progress_forever`]) and
    /// returns the number reported.
    pub fn progress_at_least(&mut self, rows: i64) -> i64 {
        let line = self.wait_for("PROGRESS ", |n| n.trim().parse::<i64>().unwrap() >= rows);
        line["PROGRESS ".len()..].trim().parse().unwrap()
    }

    /// The lines printed since the last call (or since the start), without waiting.
    pub fn new_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Whether the process has ended by itself, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits at most 60 s for the child to end by itself, and asserts that it succeeded.
    pub fn wait_for_success(mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the child failed ({status})");
                return;
            }
            assert!(Instant::now() < deadline, "the child did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (`Child::kill` on Unix): no destructor, no deregistration, no `COMMIT`; waits for
    /// the process to be gone and checks that the signal is what ended it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the child ended by SIGKILL, not on its own ({status})"
        );
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(file) = &self.release {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Waits until no session of the current database holds an advisory lock (the leader lock of a
/// killed process is released when the server sees its session end).
pub async fn until_no_advisory_lock(pool: &sqlx::PgPool) {
    until_none(
        pool,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        None,
        "advisory locks held in the current database (a killed process's leader lock)",
    )
    .await;
}

/// Waits until the server has ended every session of the current database whose
/// `application_name` is `application_name` (a killed process's sessions end when the server
/// notices; until then a statement one of them had read may still commit).
pub async fn until_sessions_end(pool: &sqlx::PgPool, application_name: &str) {
    until_none(
        pool,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
        Some(application_name),
        &format!("sessions with application_name {application_name:?} (pg_stat_activity)"),
    )
    .await;
}

/// Runs `count` (one `bigint`; `$1` bound to `arg` when given) every 20 ms until it returns 0;
/// panics after 30 s, naming `what` it counts.
async fn until_none(pool: &sqlx::PgPool, count: &'static str, arg: Option<&str>, what: &str) {
    const DEADLINE: Duration = Duration::from_secs(30);
    let started = Instant::now();
    loop {
        let mut query = sqlx::query_scalar::<_, i64>(count);
        if let Some(arg) = arg {
            query = query.bind(arg);
        }
        let left = query.fetch_one(pool).await.unwrap();
        if left == 0 {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "waited {DEADLINE:?} for no {what}; still {left}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
