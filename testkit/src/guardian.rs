//! The guardian: a small shell process that removes the cluster when this process is gone.
//!
//! The process-wide cluster lives in a `static`, and Rust never drops statics, so `Drop` can't
//! be relied on at exit (nor after an abort or `kill -9`). Instead, before anything is written
//! to the temporary directory, a `/bin/sh` script is started with its stdin connected to a pipe
//! whose only writer is this process. The script blocks in `read`; the kernel closes the
//! writer when this process ends, however it ends, and dropping an owned
//! [`Cluster`](crate::Cluster) closes it explicitly. `read` then returns, and the script stops
//! the server with `pg_ctl stop -m immediate` (falling back to `kill -KILL` of the postmaster)
//! and removes the whole temporary directory.
//!
//! The pipe is close-on-exec on our side (as all pipes `std::process` makes), so the server
//! and other programs this process starts don't hold it open. The script runs as the current
//! user (root when we are root), in its own process group so Ctrl-C in a terminal reaches only
//! the test process, and with `SIGHUP`/`SIGINT` ignored.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// Arguments: temporary directory, data directory, then the words that run `pg_ctl` as the
/// cluster's owner. Nothing is ever written to stdin: `read` returns at end of file.
const SCRIPT: &str = r#"
trap '' HUP INT
root=$1 data=$2
shift 2
read -r line || true
if ! "$@" stop -D "$data" -m immediate -w -t 30 >/dev/null 2>&1 && [ -f "$data/postmaster.pid" ]; then
    kill -KILL "$(head -n 1 "$data/postmaster.pid")" 2>/dev/null
fi
rm -rf "$root"
"#;

/// How long an explicit shutdown may take: `pg_ctl` waits up to 30 s, plus the removal.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// A running guardian script, watching this process.
#[derive(Debug)]
pub(crate) struct Guardian {
    /// Its stdin is the pipe; closing it starts the cleanup.
    child: Child,
}

impl Guardian {
    /// Starts watching this process; `pg_ctl` is the command (with any user switch) that
    /// runs `pg_ctl` as the cluster's owner.
    pub(crate) fn spawn(
        root: &Path,
        data: &Path,
        pg_ctl: Vec<OsString>,
    ) -> Result<Guardian, Error> {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("pgevolve-testkit-guardian") // $0
            .arg(root)
            .arg(data)
            .args(pg_ctl)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(Error::io("starting the guardian process (/bin/sh)"))?;
        Ok(Guardian { child })
    }

    /// Asks the guardian to stop the server and remove the directory now, and waits for it.
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        drop(self.child.stdin.take());
        match wait_timeout(&mut self.child, SHUTDOWN_TIMEOUT)
            .map_err(Error::io("waiting for the guardian process"))?
        {
            Some(_) => Ok(()),
            None => {
                // Best effort: the caller removes the directory itself.
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(Error::Io {
                    context: "waiting for the guardian process".to_owned(),
                    source: std::io::ErrorKind::TimedOut.into(),
                })
            }
        }
    }
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub(crate) fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
