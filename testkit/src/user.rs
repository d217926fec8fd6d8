//! Running the server's programs as a user PostgreSQL accepts.
//!
//! PostgreSQL refuses to run as root. When this process is root, `initdb`, `postgres` and
//! `pg_ctl` run as the `postgres` OS user through `runuser` (or `su` where there is no
//! `runuser`), and the temporary directory is handed to that user.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// The OS user that owns the cluster when this process is root.
const SERVER_USER: &str = "postgres";

/// How to start a program as the owner of the cluster.
#[derive(Debug, Clone)]
pub(crate) enum RunAs {
    /// Not root: run programs directly, as ourselves.
    Current,
    /// Root: `runuser -u postgres -- program args…`.
    Runuser(PathBuf),
    /// Root without `runuser`: `su postgres -s /bin/sh -c 'exec "$0" "$@"' program args…`.
    Su(PathBuf),
}

impl RunAs {
    /// Picks the way to run the server: as ourselves, or as `postgres` when we are root.
    pub(crate) fn detect() -> Result<RunAs, Error> {
        if !is_root() {
            return Ok(RunAs::Current);
        }
        if !user_exists(SERVER_USER) {
            return Err(Error::NoServerUser(format!(
                "there is no `{SERVER_USER}` user to run it as"
            )));
        }
        if let Some(runuser) = find_program("runuser") {
            return Ok(RunAs::Runuser(runuser));
        }
        if let Some(su) = find_program("su") {
            return Ok(RunAs::Su(su));
        }
        Err(Error::NoServerUser(
            "neither `runuser` nor `su` was found to switch to the `postgres` user".to_owned(),
        ))
    }

    /// The words to put before a program to run it as the cluster's owner (empty if none).
    pub(crate) fn prefix(&self) -> Vec<OsString> {
        match self {
            RunAs::Current => Vec::new(),
            RunAs::Runuser(runuser) => {
                vec![runuser.into(), "-u".into(), SERVER_USER.into(), "--".into()]
            }
            RunAs::Su(su) => vec![
                su.into(),
                SERVER_USER.into(),
                "-s".into(),
                "/bin/sh".into(),
                "-c".into(),
                r#"exec "$0" "$@""#.into(),
            ],
        }
    }

    /// A command that runs `program` as the cluster's owner; add its arguments with `.arg()`.
    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut words = self.prefix().into_iter();
        let mut command = match words.next() {
            Some(first) => {
                let mut command = Command::new(first);
                command.args(words).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.stdin(Stdio::null());
        command
    }

    /// Gives `dir` to the cluster's owner, so `initdb` and the server can write into it.
    pub(crate) fn hand_over(&self, dir: &Path) -> Result<(), Error> {
        self.chown(dir, false)
    }

    /// Gives `dir` and everything in it to the cluster's owner (a data directory copied by
    /// this process).
    pub(crate) fn hand_over_tree(&self, dir: &Path) -> Result<(), Error> {
        self.chown(dir, true)
    }

    fn chown(&self, dir: &Path, recursive: bool) -> Result<(), Error> {
        if let RunAs::Current = self {
            return Ok(());
        }
        let context = format!("chown {SERVER_USER}: {}", dir.display());
        let status = Command::new("chown")
            .args(recursive.then_some("-R"))
            .arg(format!("{SERVER_USER}:"))
            .arg(dir)
            .stdin(Stdio::null())
            .status()
            .map_err(Error::io(context.clone()))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Io {
                context,
                source: std::io::Error::other(format!("chown exited with {status}")),
            })
        }
    }
}

/// Whether the effective user id is 0, read from `/proc/self/status` (or `id -u` without /proc).
fn is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        // "Uid:\t<real>\t<effective>\t<saved>\t<filesystem>"
        if let Some(line) = status.lines().find(|line| line.starts_with("Uid:")) {
            return line.split_whitespace().nth(2) == Some("0");
        }
    }
    Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// Whether the OS knows `user` (`id -u <user>` succeeds).
fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(user)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Looks for `name` on `PATH`, then in the sbin directories root's `PATH` usually has.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
