//! A throwaway PostgreSQL cluster: `initdb` in a temporary directory, a server on a free port.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::binaries::Binaries;
use crate::guardian::{Guardian, wait_timeout};
use crate::user::RunAs;

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many free ports to try when another process takes the chosen one first.
const PORT_ATTEMPTS: u32 = 5;

/// How many lines of the server log an error shows.
const LOG_TAIL_LINES: usize = 30;

/// Settings for speed (durability is pointless in a throwaway cluster) and for many pools.
const SERVER_SETTINGS: [&str; 7] = [
    "listen_addresses=127.0.0.1",
    // The same zone on every host, whatever its `TZ`: no test may depend on where it runs.
    "TimeZone=UTC",
    "log_timezone=UTC",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=300",
];

/// A running throwaway PostgreSQL server that owns a temporary directory.
///
/// Dropping it (or calling [`Cluster::shutdown`]) stops the server and removes the directory.
/// If the process ends without dropping it (the process-wide cluster behind
/// [`TestDatabase`](crate::TestDatabase) lives in a `static`, and `kill -9` skips all drops), a
/// guardian process started alongside the server does the same right after the process ends.
///
/// The superuser is `postgres`, authentication is `trust`, and the server listens on
/// `127.0.0.1` only.
///
/// ```
/// let cluster = pgevolve_testkit::Cluster::start()?;
/// println!("connect to {}", cluster.url());
/// cluster.shutdown()?;
/// # Ok::<(), pgevolve_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Cluster {
    /// The temporary directory: data directory, server log, Unix socket.
    pub(crate) root: PathBuf,
    /// `root/data`, made by `initdb` (or by `pg_basebackup` for a replica).
    pub(crate) data: PathBuf,
    /// TCP port on 127.0.0.1.
    pub(crate) port: u16,
    /// The `postgres` process (or the `runuser`/`su` running it), once started.
    pub(crate) server: Option<Child>,
    /// Cleans up when this process ends; `None` once shut down.
    pub(crate) guardian: Option<Guardian>,
}

impl Cluster {
    /// Creates and starts a new cluster. Blocks for a second or two; in async code call it
    /// from [`tokio::task::spawn_blocking`].
    ///
    /// # Errors
    ///
    /// [`Error::BinariesNotFound`] without PostgreSQL installed, [`Error::NoServerUser`] when
    /// root can't switch to the `postgres` user, [`Error::Initdb`] and [`Error::Start`] with
    /// the programs' output, [`Error::Io`] for file-system failures.
    pub fn start() -> Result<Cluster, Error> {
        Cluster::start_with(&[])
    }

    /// Like [`Cluster::start`], with `settings` (`name=value`) passed to the server after the
    /// testkit's own, so they win: `Cluster::start_with(&["fsync=on", "synchronous_commit=on",
    /// "full_page_writes=on"])` gives a durable cluster, as production runs, for benchmarks
    /// (the testkit's defaults turn those off for speed).
    ///
    /// # Errors
    ///
    /// As [`Cluster::start`].
    pub fn start_with(settings: &[&str]) -> Result<Cluster, Error> {
        let binaries = Binaries::find()?;
        let run_as = RunAs::detect()?;
        // On any error below, dropping `cluster` cleans up.
        let mut cluster = Cluster::prepare(&binaries, &run_as)?;
        cluster.initdb(&binaries, &run_as)?;
        cluster.launch_with(&binaries, &run_as, settings)?;
        Ok(cluster)
    }

    /// A cluster not started yet: a new temporary directory owned by the server's user, with
    /// a guardian that removes it (and stops a server started in it) even if this process dies.
    /// The data directory `root/data` does not exist yet.
    pub(crate) fn prepare(binaries: &Binaries, run_as: &RunAs) -> Result<Cluster, Error> {
        let root = create_temp_dir()?;
        let data = root.join("data");
        let mut pg_ctl = run_as.prefix();
        pg_ctl.push(binaries.path("pg_ctl").into());
        let guardian = match Guardian::spawn(&root, &data, pg_ctl) {
            Ok(guardian) => guardian,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(error);
            }
        };
        let cluster = Cluster {
            root,
            data,
            port: 0,
            server: None,
            guardian: Some(guardian),
        };
        run_as.hand_over(&cluster.root)?;
        Ok(cluster)
    }

    /// URL of the `postgres` maintenance database, as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port the server listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (inside the temporary directory that is removed on shutdown).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Stops the server (immediate shutdown) and removes the temporary directory, reporting
    /// failures that `Drop` would ignore.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the server could not be stopped or the directory not removed.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop()
    }

    /// Runs `initdb` into the data directory.
    fn initdb(&self, binaries: &Binaries, run_as: &RunAs) -> Result<(), Error> {
        let output = run_as
            .command(&binaries.path("initdb"))
            .arg("-D")
            .arg(&self.data)
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--no-locale",
            ])
            .arg("--no-sync")
            .output()
            .map_err(Error::io("running initdb"))?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(Error::Initdb {
            status: output.status,
            stderr: text,
        })
    }

    /// Starts the server on a free port, retrying when the port was taken in the meantime.
    pub(crate) fn launch(&mut self, binaries: &Binaries, run_as: &RunAs) -> Result<(), Error> {
        self.launch_with(binaries, run_as, &[])
    }

    /// Starts the server with the testkit's settings, then `extra` (which win).
    fn launch_with(
        &mut self,
        binaries: &Binaries,
        run_as: &RunAs,
        extra: &[&str],
    ) -> Result<(), Error> {
        let log_path = self.root.join("server.log");
        let log = File::create(&log_path).map_err(Error::io("creating the server log"))?;
        let mut attempt = 1;
        loop {
            self.port = free_port()?;
            let stderr = log
                .try_clone()
                .map_err(Error::io("opening the server log"))?;
            let stdout = log
                .try_clone()
                .map_err(Error::io("opening the server log"))?;
            let server = run_as
                .command(&binaries.path("postgres"))
                .arg("-D")
                .arg(&self.data)
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-c")
                .arg(format!("unix_socket_directories={}", self.root.display()))
                .args(
                    SERVER_SETTINGS
                        .iter()
                        .chain(extra)
                        .flat_map(|setting| ["-c", setting]),
                )
                .stdout(stdout)
                .stderr(stderr)
                .process_group(0)
                .spawn()
                .map_err(Error::io("starting postgres"))?;
            let server = self.server.insert(server);
            let reason = match wait_ready(server, &self.data, self.port) {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            let tail = log_tail(&log_path);
            let port_taken = tail.contains("could not bind") || tail.contains("already in use");
            if port_taken && attempt < PORT_ATTEMPTS && self.server_exited() {
                attempt += 1;
                continue;
            }
            return Err(Error::Start {
                reason,
                log: log_path,
                log_tail: tail,
            });
        }
    }

    /// Whether the server process has exited (reaping it if so).
    fn server_exited(&mut self) -> bool {
        self.server
            .as_mut()
            .is_none_or(|server| matches!(server.try_wait(), Ok(Some(_))))
    }

    /// Has the guardian stop the server and remove the directory, then reaps the server.
    fn stop(&mut self) -> Result<(), Error> {
        let stopped = match self.guardian.take() {
            Some(guardian) => guardian.finish(),
            None => Ok(()),
        };
        if let Some(mut server) = self.server.take() {
            // The guardian has stopped it; reap the process (`postgres` or `runuser`).
            if let Ok(None) = wait_timeout(&mut server, Duration::from_secs(5)) {
                let _ = server.kill();
                let _ = server.wait();
            }
        }
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root)
                .map_err(Error::io(format!("removing {}", self.root.display())))?;
        }
        stopped
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Polls until the server accepts connections: `postmaster.pid` says `ready`, or `standby` for a
/// hot standby (PostgreSQL 10 and later write the postmaster's status on its eighth line), and
/// its port takes a TCP connection.
/// No client program is needed, so server-only installations work too. The error is a reason.
fn wait_ready(server: &mut Child, data: &Path, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match server.try_wait() {
            Ok(Some(status)) => return Err(format!("the server exited ({status})")),
            Ok(None) => {}
            Err(error) => return Err(format!("could not check the server process: {error}")),
        }
        let status_ready = std::fs::read_to_string(data.join("postmaster.pid")).is_ok_and(|pid| {
            pid.lines()
                .nth(7)
                .is_some_and(|l| matches!(l.trim(), "ready" | "standby"))
        });
        let ready = status_ready
            && std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(2),
            )
            .is_ok();
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no connection accepted within {} s",
                START_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A new directory `pgevolve-testkit-<pid>-<n>` under the system temporary directory, mode 0700.
pub(crate) fn create_temp_dir() -> Result<PathBuf, Error> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let parent = std::env::temp_dir();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("pgevolve-testkit-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(Error::io(format!("chmod 0700 {}", dir.display())))?;
                return Ok(dir);
            }
            // Left over from an earlier process with the same pid.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(Error::Io {
                    context: format!("creating {}", dir.display()),
                    source: error,
                });
            }
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(Error::io("looking for a free TCP port"))?;
    let address = listener
        .local_addr()
        .map_err(Error::io("looking for a free TCP port"))?;
    Ok(address.port())
}

/// The last lines of the log, or a note saying why it can't be read.
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(could not read the log: {error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_exits_reports_the_end_of_its_log() {
        // Skip initdb, so `postgres` finds no data directory and exits at once.
        let binaries = Binaries::find().unwrap();
        let run_as = RunAs::detect().unwrap();
        let mut cluster = Cluster::prepare(&binaries, &run_as).unwrap();
        let root = cluster.root.clone();

        let error = cluster.launch(&binaries, &run_as).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::Start { .. }), "{message}");
        assert!(message.contains("the server exited"), "{message}");
        assert!(message.contains("data"), "{message}");

        drop(cluster);
        assert!(!root.exists());
    }
}
