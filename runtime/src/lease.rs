//! The leader lock as a lease: the session that holds it, checked before each piece of
//! background work. A session advisory lock lives exactly as long as its session, and a session
//! can end without its client noticing (terminated, a proxy or network failure, an idle
//! connection nobody reads): another instance then takes the lock, and two leaders would work at
//! once. Checking that the session still holds the lock before every batch and phase bounds
//! that overlap to the one batch under way.

use sqlx::PgConnection;
use tokio::sync::Mutex;

use crate::error::{ErrorKind, Result};

/// Whether this session holds the session-level advisory lock of a 64-bit key.
const HELD: &str = "EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' \
                    AND pid = pg_backend_pid() AND granted AND objsubid = 1 \
                    AND ((classid::int8 << 32) | objid::int8) = $1)";

/// The leader lock's session while this instance leads the background work.
#[derive(Debug)]
pub(crate) struct Lease {
    key: i64,
    /// The state store's steps table, where an abort by another instance shows.
    steps: String,
    conn: Mutex<Option<PgConnection>>,
}

impl Lease {
    pub(crate) fn new(key: i64, steps: String) -> Lease {
        Lease {
            key,
            steps,
            conn: Mutex::new(None),
        }
    }

    /// This instance leads, on `conn`, which holds the lock.
    pub(crate) async fn hold(&self, conn: PgConnection) {
        *self.conn.lock().await = Some(conn);
    }

    /// Gives the session back (to close it, which releases the lock); `None` when it was lost.
    pub(crate) async fn release(&self) -> Option<PgConnection> {
        self.conn.lock().await.take()
    }

    /// `Ok` while this instance does not lead (nothing to check) or its session still holds the
    /// lock, otherwise [`ErrorKind::LeadershipLost`] (and the session is dropped); in the same
    /// round trip, whether another instance aborted one of `steps` (the leader then stops
    /// working on them): `Ok(true)` when one was.
    pub(crate) async fn check(&self, steps: &[&str]) -> Result<bool> {
        let mut guard = self.conn.lock().await;
        let Some(conn) = guard.as_mut() else {
            return Ok(false);
        };
        let sql = format!(
            "SELECT {HELD}, EXISTS (SELECT FROM {} WHERE id = ANY($2) AND phase = 'aborted')",
            self.steps
        );
        let answer: std::result::Result<(bool, bool), sqlx::Error> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(self.key)
                .bind(steps)
                .fetch_one(&mut *conn)
                .await;
        match answer {
            Ok((true, aborted)) => Ok(aborted),
            Ok((false, _)) | Err(_) => {
                *guard = None;
                Err(ErrorKind::LeadershipLost {
                    reason: match answer {
                        Err(e) => format!("its session is gone ({e})"),
                        _ => "its session no longer holds it".into(),
                    },
                }
                .into())
            }
        }
    }
}
