//! Which errors are transient: the connection to the server was lost, or the server is
//! restarting, shutting a session down, or out of connection slots. Work that met one can be
//! tried again later from where it stood; the background work does so by itself (see
//! `evolver/background.rs`), since every phase is resumable (the same guarantee a reboot after
//! a crash relies on).

use crate::error::{Error, ErrorKind};

/// SQLSTATEs of a lost or refused session: class 08 (connection exception), `admin_shutdown`,
/// `crash_shutdown`, `cannot_connect_now` (starting up or in recovery) and
/// `too_many_connections`.
const TRANSIENT_STATES: &[&str] = &["57P01", "57P02", "57P03", "53300"];

/// Whether a database error is transient (see the module comment).
pub(crate) fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || TRANSIENT_STATES.contains(&c.as_ref())),
        _ => false,
    }
}

impl Error {
    /// Whether trying again later may succeed: the connection to the server was lost, or the
    /// server was restarting, ending sessions, or had no connection slot left. Nothing a
    /// transient error interrupted is left half done: every phase resumes from its checkpoint.
    /// The background work retries such errors by itself; [`Evolver::boot`](crate::Evolver::boot),
    /// `switch`, `contract` and `abort` return them, for the caller to try again.
    pub fn is_transient(&self) -> bool {
        match self.kind() {
            ErrorKind::Database(e) | ErrorKind::Statement { source: e, .. } => is_transient_sqlx(e),
            ErrorKind::IndexBuild {
                connection_lost, ..
            } => *connection_lost,
            ErrorKind::Background(inner) => inner.is_transient(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_and_pool_timeouts_are_transient_other_errors_are_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(Error::from(sqlx::Error::Io(io)).is_transient());
        assert!(Error::from(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!Error::from(sqlx::Error::PoolClosed).is_transient());
        assert!(!Error::from(sqlx::Error::RowNotFound).is_transient());
        assert!(
            !Error::from(ErrorKind::LeadershipLost {
                reason: "gone".into()
            })
            .is_transient()
        );
    }
}
