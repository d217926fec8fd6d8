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

/// How often paused background work (a backfill before its next batch, the walk before its
/// next phase) checks again whether the pause was lifted.
pub(crate) const PAUSED_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// The leader lock's session while this instance leads the background work.
#[derive(Debug)]
pub(crate) struct Lease {
    key: i64,
    /// The state store's steps table, where an abort by another instance shows.
    steps: String,
    /// The state store's pauses table, where an operator's pause shows.
    pauses: String,
    conn: Mutex<Option<PgConnection>>,
}

/// What a [`Lease::check`] found, besides the lock still being held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Another instance aborted one of the watched steps.
    pub aborted: bool,
    /// An operator paused every step, or one of the steps asked about
    /// (`pgevolve pause`, see `state/requests.rs`).
    pub paused: bool,
}

impl Lease {
    pub(crate) fn new(key: i64, store: &crate::state::StateStore) -> Lease {
        Lease {
            key,
            steps: store.table("steps"),
            pauses: store.table("pauses"),
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
    /// working on them), and whether an operator paused every step or one of `pausing` (the
    /// leader then waits before its next batch or phase).
    pub(crate) async fn check(&self, steps: &[&str], pausing: &[&str]) -> Result<Checked> {
        let mut session = self.session().await;
        self.check_on(&mut session, steps, pausing).await
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
        pausing: &[&str],
    ) -> Result<Checked> {
        self.check_on(session, steps, pausing).await
    }

    async fn check_on(
        &self,
        guard: &mut MutexGuard<'_, Option<PgConnection>>,
        steps: &[&str],
        pausing: &[&str],
    ) -> Result<Checked> {
        let Some(conn) = guard.as_mut() else {
            return Ok(Checked::default());
        };
        let sql = format!(
            "SELECT {HELD}, EXISTS (SELECT FROM {} WHERE id = ANY($2) AND phase = 'aborted'), \
             EXISTS (SELECT FROM {} WHERE scope = '*' OR scope = ANY($3))",
            self.steps, self.pauses
        );
        let mut answer: std::result::Result<(bool, bool, bool), sqlx::Error> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(self.key)
                .bind(steps)
                .bind(pausing)
                .fetch_one(&mut *conn)
                .await;
        if let Err(e) = &answer
            && crate::state::instances::is_missing_table(e)
        {
            // A store bootstrapped by an older build has no pauses table: nothing is paused.
            let sql = format!(
                "SELECT {HELD}, EXISTS (SELECT FROM {} WHERE id = ANY($2) AND phase = 'aborted'), false",
                self.steps
            );
            answer = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(self.key)
                .bind(steps)
                .fetch_one(&mut *conn)
                .await;
        }
        match answer {
            Ok((true, aborted, paused)) => Ok(Checked { aborted, paused }),
            Ok((false, ..)) | Err(_) => {
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
