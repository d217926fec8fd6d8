//! The leader lock as a lease: the session that holds it, checked before each piece of
//! background work. A session advisory lock lives exactly as long as its session, and a session
//! can end without its client noticing (terminated, a proxy or network failure, an idle
//! connection nobody reads): another instance then takes the lock, and two leaders would work at
//! once. Checking that the session still holds the lock before every phase, and running every
//! backfill batch on that very session, rules the overlap out: a batch under way when the
//! session ends ends with it (rolled back), so the next leader never writes beside it.

use sqlx::PgConnection;
use tokio::sync::{Mutex, MutexGuard};

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
        let mut session = self.session().await;
        Self::check_on(&mut session, self.key, &self.steps, steps).await
    }

    /// The leader lock's session (`None` while this instance does not lead), held until the
    /// guard drops: the backfill runs its batches on it (see the module comment).
    pub(crate) async fn session(&self) -> MutexGuard<'_, Option<PgConnection>> {
        self.conn.lock().await
    }

    /// [`Lease::check`] on a session already taken with [`Lease::session`].
    pub(crate) async fn check_session(
        &self,
        session: &mut MutexGuard<'_, Option<PgConnection>>,
        steps: &[&str],
    ) -> Result<bool> {
        Self::check_on(session, self.key, &self.steps, steps).await
    }

    async fn check_on(
        guard: &mut MutexGuard<'_, Option<PgConnection>>,
        key: i64,
        steps_table: &str,
        steps: &[&str],
    ) -> Result<bool> {
        let Some(conn) = guard.as_mut() else {
            return Ok(false);
        };
        let sql = format!(
            "SELECT {HELD}, EXISTS (SELECT FROM {steps_table} WHERE id = ANY($2) AND phase = 'aborted')"
        );
        let answer: std::result::Result<(bool, bool), sqlx::Error> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(key)
                .bind(steps)
                .fetch_one(&mut *conn)
                .await;
        match answer {
            Ok((true, aborted)) => Ok(aborted),
            Ok((false, _)) | Err(_) => {
                **guard = None;
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
