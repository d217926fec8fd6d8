//! A throwaway PgBouncer in transaction pooling mode, in front of a PostgreSQL server.
//!
//! [`PgBouncer::start`] writes `pgbouncer.ini` and a `userlist.txt` into a new temporary
//! directory, picks a free port of `127.0.0.1`, and runs `pgbouncer` in the foreground (as the
//! `postgres` OS user when run as root, as the server is: PgBouncer refuses to run as root). It
//! returns once the port accepts connections. Every database of the server is reachable through
//! it under the same name (`* = host=... port=...`), with the server's user and `trust`
//! authentication.
//!
//! The process is started by a small `/bin/sh` watcher whose stdin is a pipe only this process
//! writes to, as the cluster's guardian is: when the [`PgBouncer`] is dropped, or this process
//! ends however it ends, the watcher stops PgBouncer and removes the directory.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use crate::Error;
use crate::guardian::wait_timeout;
use crate::user::{RunAs, find_program};

/// How long PgBouncer may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many free ports to try when another process takes the chosen one first.
const PORT_ATTEMPTS: u32 = 5;

/// Arguments: the temporary directory, then the words that run PgBouncer (with any user
/// switch). Starts it in the background; a subshell waits for stdin to reach end of file (this
/// process closed the pipe, or ended), then stops it (`SIGTERM`: immediate shutdown) and removes
/// the directory. Exits with PgBouncer's status when PgBouncer ends by itself (leaving the
/// directory and its log to the caller).
const WATCHER: &str = r#"
trap '' HUP INT
exec 3<&0
root=$1
shift
"$@" </dev/null &
pid=$!
(
    read -r line <&3 || true
    kill -TERM "$pid" $(cat "$root/pgbouncer.pid" 2>/dev/null) 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -rf "$root"
) &
watch=$!
exec 3<&-
wait "$pid"
status=$?
wait "$watch" 2>/dev/null
exit "$status"
"#;

/// A running PgBouncer in transaction pooling mode (`pool_mode = transaction`), in front of
/// one PostgreSQL server: between two transactions, a client's next statement may run on
/// another server session, as behind any transaction pooler.
///
/// PgBouncer comes from `PATH` or `/usr/sbin/pgbouncer` (Debian's `pgbouncer` package, 1.18 on
/// Debian 12: no protocol-level prepared statements in transaction mode).
///
/// ```no_run
/// # async fn demo() -> Result<(), pgevolve_testkit::Error> {
/// let db = pgevolve_testkit::TestDatabase::new().await?;
/// let bouncer = pgevolve_testkit::PgBouncer::start(db.url(), 4)?;
/// let pooled_url = bouncer.url_for(db.url())?; // same user and database, through PgBouncer
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PgBouncer {
    /// `ini`, `userlist.txt`, the log and the pid file; removed by the watcher.
    root: PathBuf,
    port: u16,
    /// The server's user, PgBouncer's admin.
    user: String,
    /// The watcher script; closing its stdin stops PgBouncer.
    watcher: Option<Child>,
}

impl PgBouncer {
    /// Starts PgBouncer in transaction pooling mode in front of the server `server_url` points
    /// at (host, port and user are taken from it; any database of that server is reachable),
    /// with at most `pool_size` server connections per database and user. Blocks until it
    /// accepts connections (a fraction of a second).
    ///
    /// # Errors
    ///
    /// [`Error::BouncerNotFound`] when `pgbouncer` is not installed, [`Error::BadUrl`] for a
    /// URL that is not `postgres://`, [`Error::BouncerStart`] with the end of its log when it
    /// does not start, [`Error::Io`] for file-system failures.
    pub fn start(server_url: &str, pool_size: u32) -> Result<PgBouncer, Error> {
        let program = find_program("pgbouncer").ok_or(Error::BouncerNotFound)?;
        let server =
            PgConnectOptions::from_str(server_url).map_err(|_| Error::BadUrl(server_url.into()))?;
        let run_as = RunAs::detect()?;
        let root = crate::cluster::create_temp_dir()?;
        let result = Self::launch(&root, &program, &server, pool_size, &run_as);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&root);
        }
        result
    }

    fn launch(
        root: &Path,
        program: &Path,
        server: &PgConnectOptions,
        pool_size: u32,
        run_as: &RunAs,
    ) -> Result<PgBouncer, Error> {
        let user = server.get_username().to_owned();
        let userlist = root.join("userlist.txt");
        std::fs::write(&userlist, format!("{} \"\"\n", quote(&user)))
            .map_err(Error::io("writing userlist.txt"))?;
        let ini = root.join("pgbouncer.ini");
        let log = root.join("pgbouncer.log");
        let mut attempt = 1;
        loop {
            let port = crate::cluster::free_port()?;
            let config = config(root, server, port, pool_size, &userlist, &log);
            std::fs::write(&ini, config).map_err(Error::io("writing pgbouncer.ini"))?;
            run_as.hand_over(root)?;
            let mut words = run_as.prefix();
            words.push(program.into());
            words.push(ini.clone().into());
            let mut watcher = Command::new("/bin/sh")
                .arg("-c")
                .arg(WATCHER)
                .arg("pgevolve-testkit-pgbouncer") // $0
                .arg(root)
                .args(words)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(
                    File::create(root.join("watcher.log"))
                        .map_err(Error::io("creating watcher.log"))?,
                )
                .process_group(0)
                .spawn()
                .map_err(Error::io("starting pgbouncer"))?;
            let reason = match wait_ready(&mut watcher, port) {
                Ok(()) => {
                    return Ok(PgBouncer {
                        root: root.to_owned(),
                        port,
                        user: user.clone(),
                        watcher: Some(watcher),
                    });
                }
                Err(reason) => reason,
            };
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            drop(watcher.stdin.take());
            let _ = wait_timeout(&mut watcher, Duration::from_secs(10));
            if tail.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                attempt += 1;
                continue;
            }
            let tail: Vec<&str> = tail.lines().collect();
            return Err(Error::BouncerStart {
                reason,
                log_tail: tail[tail.len().saturating_sub(20)..].join("\n"),
            });
        }
    }

    /// The TCP port PgBouncer listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process ids (`pg_backend_pid()`) of the server sessions PgBouncer holds now, from
    /// `SHOW SERVERS` on its admin console (as the server's user): the sessions its clients'
    /// transactions run on.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the admin console cannot be reached.
    pub async fn server_pids(&self) -> Result<Vec<i32>, Error> {
        use sqlx::{Connection, Row};
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(&self.user)
            .database("pgbouncer")
            .statement_cache_capacity(0);
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        let rows = sqlx::raw_sql("SHOW SERVERS").fetch_all(&mut conn).await?;
        let _ = conn.close().await;
        let mut pids = Vec::with_capacity(rows.len());
        for row in rows {
            pids.push(row.try_get::<i32, _>("remote_pid")?);
        }
        Ok(pids)
    }

    /// `database_url` (a database of the server PgBouncer stands in front of) with its host and
    /// port replaced by PgBouncer's: the same user, database and parameters, through the pooler.
    ///
    /// # Errors
    ///
    /// [`Error::BadUrl`] when `database_url` is not a `postgres://` URL with a host.
    pub fn url_for(&self, database_url: &str) -> Result<String, Error> {
        crate::url::with_port(database_url, self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut watcher) = self.watcher.take() {
            drop(watcher.stdin.take());
            if let Ok(None) = wait_timeout(&mut watcher, Duration::from_secs(10)) {
                let _ = watcher.kill();
                let _ = watcher.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Polls until the port takes a TCP connection; the error is a reason.
fn wait_ready(watcher: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match watcher.try_wait() {
            Ok(Some(status)) => return Err(format!("pgbouncer exited ({status})")),
            Ok(None) => {}
            Err(error) => return Err(format!("could not check the process: {error}")),
        }
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no connection accepted within {} s",
                START_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The configuration: every database of the server, transaction pooling, `trust`.
fn config(
    root: &Path,
    server: &PgConnectOptions,
    port: u16,
    pool_size: u32,
    userlist: &Path,
    log: &Path,
) -> String {
    let host = server.get_host();
    let mut text = String::new();
    let _ = writeln!(text, "[databases]");
    let _ = writeln!(text, "* = host={host} port={}", server.get_port());
    let _ = writeln!(text, "[pgbouncer]");
    let settings = [
        ("listen_addr", "127.0.0.1".to_owned()),
        ("listen_port", port.to_string()),
        ("unix_socket_dir", String::new()),
        ("pool_mode", "transaction".to_owned()),
        ("auth_type", "trust".to_owned()),
        ("auth_file", userlist.display().to_string()),
        ("logfile", log.display().to_string()),
        ("pidfile", root.join("pgbouncer.pid").display().to_string()),
        ("default_pool_size", pool_size.to_string()),
        ("max_client_conn", "1000".to_owned()),
        // sqlx sends it at startup; PgBouncer 1.18 refuses unknown startup parameters.
        ("ignore_startup_parameters", "extra_float_digits".to_owned()),
        ("server_login_retry", "1".to_owned()),
        // For [`PgBouncer::server_pids`]: `SHOW SERVERS` on the admin console.
        ("admin_users", server.get_username().to_owned()),
    ];
    for (key, value) in settings {
        let _ = writeln!(text, "{key} = {value}");
    }
    text
}

/// A name in `userlist.txt`: in double quotes, inner quotes doubled.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
