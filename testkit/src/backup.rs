//! A base backup of a running cluster without `pg_basebackup`, for server installations that
//! ship only `initdb`, `pg_ctl` and `postgres` (the npm packages of other majors).
//!
//! PostgreSQL's low-level backup API, in the non-exclusive form every supported major has: one
//! session calls `pg_backup_start` (`pg_start_backup` before 15), which checkpoints and forces
//! full-page writes, the data directory is copied while the server keeps running, the same
//! session calls `pg_backup_stop` (`pg_stop_backup`), and the `backup_label` it returns goes
//! into the copy. The WAL the copy needs is copied last, after the stop, so it holds every
//! record from the backup's checkpoint to its end; a standby started on the copy streams the
//! rest from the primary.

use std::path::Path;

use sqlx::{Connection, PgConnection, Row};

use crate::Error;

/// Entries of the data directory that a backup leaves out (see "Making a Base Backup Using the
/// Low Level API" in PostgreSQL's documentation): the running server's own files, and
/// directories whose contents are rebuilt at start. The directories themselves are made empty.
const SKIPPED_FILES: [&str; 4] = [
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
];
const EMPTIED_DIRS: [&str; 8] = [
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Copies the data directory `from` of the server at `url` into `into` (which must not exist)
/// as an online base backup, and makes the copy a standby of that server: `standby.signal`
/// and a `primary_conninfo` pointing at `127.0.0.1:port` as `postgres`.
///
/// Runs on a thread of its own with a runtime of its own, so it may be called from sync code
/// and from a blocking task alike.
pub(crate) fn copy_running_cluster(
    url: &str,
    port: u16,
    from: &Path,
    into: &Path,
) -> Result<(), Error> {
    let (url, from, target) = (url.to_owned(), from.to_owned(), into.to_owned());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("starting a runtime for the base backup"))?
            .block_on(backup(&url, &from, &target))
    })
    .join()
    .map_err(|_| {
        Error::io("copying the data directory")(std::io::Error::other(
            "the copying thread panicked",
        ))
    })??;
    write_standby_settings(into, port)
}

/// The backup proper: start, copy, stop, label, WAL.
async fn backup(url: &str, from: &Path, into: &Path) -> Result<(), Error> {
    let mut session = PgConnection::connect(url).await?;
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut session)
        .await?;
    // `fast`: an immediate checkpoint; the non-exclusive form keeps the label in this session.
    let (start, stop) = if version >= 150_000 {
        (
            "SELECT pg_backup_start('pgevolve-testkit', true)",
            "SELECT labelfile FROM pg_backup_stop(false)",
        )
    } else {
        (
            "SELECT pg_start_backup('pgevolve-testkit', true, false)",
            "SELECT labelfile FROM pg_stop_backup(false, false)",
        )
    };
    sqlx::query(start).execute(&mut session).await?;
    let copied = copy_tree(from, into, true);
    // Stop the backup even when the copy failed, so the primary is left as it was.
    let label: String = sqlx::query(stop)
        .fetch_one(&mut session)
        .await?
        .try_get("labelfile")?;
    copied?;
    std::fs::write(into.join("backup_label"), label).map_err(Error::io("writing backup_label"))?;
    copy_tree(&from.join("pg_wal"), &into.join("pg_wal"), false)?;
    session.close().await?;
    Ok(())
}

/// Copies `from` into `into` recursively, keeping permissions. At the top of a data directory
/// (`data_dir`), the entries a backup leaves out are skipped or made empty. A file that
/// disappears while it is copied (a temporary file of the running server) is not an error.
fn copy_tree(from: &Path, into: &Path, data_dir: bool) -> Result<(), Error> {
    make_private_dir(into)?;
    let entries =
        std::fs::read_dir(from).map_err(Error::io(format!("reading {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("reading {}", from.display())))?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let source = entry.path();
        let target = into.join(&name);
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(Error::io(format!("reading {}", source.display()))(error)),
        };
        if kind.is_dir() {
            if data_dir && EMPTIED_DIRS.contains(&&*name_str) {
                make_private_dir(&target)?;
                if name_str == "pg_wal" {
                    make_private_dir(&target.join("archive_status"))?;
                }
            } else {
                copy_tree(&source, &target, false)?;
            }
        } else if kind.is_file() {
            if data_dir && SKIPPED_FILES.contains(&&*name_str) {
                continue;
            }
            match std::fs::copy(&source, &target) {
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(Error::io(format!("copying {}", source.display()))(error));
                }
            }
        }
        // Symbolic links would be tablespaces; a throwaway cluster has none.
    }
    Ok(())
}

/// Creates `dir` with mode 0700, as PostgreSQL requires of its data directory.
fn make_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(Error::io(format!("creating {}", dir.display()))(error)),
    }
}

/// What `pg_basebackup --write-recovery-conf` writes: start as a standby of the primary.
fn write_standby_settings(data: &Path, port: u16) -> Result<(), Error> {
    use std::io::Write;
    std::fs::write(data.join("standby.signal"), "").map_err(Error::io("writing standby.signal"))?;
    let mut auto_conf = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(data.join("postgresql.auto.conf"))
        .map_err(Error::io("opening postgresql.auto.conf"))?;
    writeln!(
        auto_conf,
        "primary_conninfo = 'host=127.0.0.1 port={port} user=postgres'"
    )
    .map_err(Error::io("writing primary_conninfo"))
}
