//! The one error type of the crate.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;

/// Everything that can go wrong while providing a throwaway database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No PostgreSQL server binaries (`initdb`, `postgres`, `pg_ctl`) were found.
    #[error(
        "PostgreSQL server binaries not found (looked at `pg_config --bindir` and \
         /usr/lib/postgresql/*/bin); install them with `apt-get install -y postgresql` \
         or set DATABASE_URL to an existing server"
    )]
    BinariesNotFound,

    /// `PGEVOLVE_PG_BINDIR` names a directory without `initdb`, `postgres` and `pg_ctl`.
    #[error(
        "PGEVOLVE_PG_BINDIR is {dir:?}, which lacks `initdb`, `postgres` or `pg_ctl`; point it at a \
         server's bin directory (`scripts/pg-binaries 13` prints one) or unset it"
    )]
    BinariesIncomplete {
        /// The directory named.
        dir: PathBuf,
    },

    /// The process runs as root, PostgreSQL refuses to, and there is no way to switch to the
    /// `postgres` user.
    #[error(
        "running as root, but PostgreSQL refuses to run as root and {0}; install the \
         `postgresql` package (it creates the `postgres` user) or set DATABASE_URL"
    )]
    NoServerUser(String),

    /// `initdb` exited with a failure.
    #[error("`initdb` failed ({status}):\n{stderr}")]
    Initdb {
        /// How `initdb` exited.
        status: ExitStatus,
        /// What it printed on stdout and stderr.
        stderr: String,
    },

    /// The server did not start, or did not accept connections in time.
    #[error("PostgreSQL did not start: {reason}; end of the server log {log}:\n{log_tail}")]
    Start {
        /// What went wrong (exit status or timeout).
        reason: String,
        /// Path of the server log (removed together with the temporary directory).
        log: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// `pg_basebackup` exited with a failure while copying a primary for a replica.
    #[error("`pg_basebackup` failed ({status}):\n{output}")]
    Basebackup {
        /// How `pg_basebackup` exited.
        status: ExitStatus,
        /// What it printed on stdout and stderr.
        output: String,
    },

    /// `pgbouncer` is neither on `PATH` nor in `/usr/sbin`.
    #[error(
        "pgbouncer not found (looked on PATH and in /usr/sbin); install it with \
         `apt-get install -y pgbouncer`"
    )]
    BouncerNotFound,

    /// PgBouncer did not start, or did not accept connections in time.
    #[error("PgBouncer did not start: {reason}; end of its log:\n{log_tail}")]
    BouncerStart {
        /// What went wrong (exit status or timeout).
        reason: String,
        /// The last lines of its log.
        log_tail: String,
    },

    /// `DATABASE_URL` is not a URL this crate can put another database name into.
    #[error("DATABASE_URL `{0}` is not a `postgres://` or `postgresql://` URL")]
    BadUrl(String),

    /// Starting the process-wide cluster failed in an earlier call; this is that first error,
    /// shared by every caller in the process.
    #[error(transparent)]
    Shared(Arc<Error>),

    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A query against the server failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
