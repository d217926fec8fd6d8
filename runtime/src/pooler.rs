//! Is there a transaction pooler between the application's pool and PostgreSQL?
//!
//! Behind a transaction pooler (PgBouncer with `pool_mode = transaction` or `statement`, RDS
//! Proxy, Supavisor and the like) consecutive transactions of one client connection may run on
//! different server sessions. The runtime's session work then breaks: the leader lock and the
//! boot lock are session advisory locks (another client could find them held by "its" session,
//! or the lock could be released with a session nobody controls), `LISTEN` registers on a
//! session the client does not keep, and a concurrent index build needs a session of its own in
//! autocommit.
//!
//! # How it is detected
//!
//! Two fresh client connections A and B, with the same options as the pool, on a server with
//! nothing in between:
//!
//! 1. B runs `SELECT pg_backend_pid()` outside a transaction: `b1`;
//! 2. A opens a transaction and runs the same: `a1` (A now holds whatever session it runs on);
//! 3. B runs it again: `b2` (given 2 s; a pooler with no free session makes it wait for A);
//! 4. A rolls back.
//!
//! Directly connected, each client is its own session for life: `b1 == b2`, `a1 != b1`, and B
//! never waits for A. Behind a transaction pooler, B's session went back to the pool after step
//! 1 and a pooler hands out the session used last (PgBouncer's default `server_round_robin = 0`
//! is LIFO), so A gets it: `a1 == b1`, and B, which cannot have it while A's transaction runs,
//! gets another (`b2 != b1`) or waits. A pooler that rotates sessions instead shows `b2 != b1`.
//! Any one of the three is proof (two live sessions never share a pid, and a session's pid never
//! changes); the probe runs up to three rounds, stopping at the first proof. What it can miss:
//! a pooler under load that, in all three rounds, gives A another session than B's and B its
//! own again (another client took B's session in between, and gave it back). Declaring the
//! pooler with [`Evolver::direct`] is therefore the rule; the probe is the safety net.
//!
//! Cheaper checks were rejected: one connection's `pg_backend_pid()` across statements is the
//! same behind PgBouncer whenever the pool is idle (measured: five statements, one pid);
//! `SHOW`/`current_setting('port')` against the URL's port mistakes any TCP proxy or port
//! mapping for a pooler and misses a pooler on the server's port; PgBouncer's own `SHOW` commands
//! exist only on its admin console. The probe costs two connections and twelve short statements
//! (three rounds on the same two connections when nothing is found), only at a slow boot (and
//! before contract, switch or abort) without [`Evolver::direct`]: the boot with nothing pending
//! keeps its one statement and does not check.
//!
//! [`Evolver::direct`]: crate::Evolver::direct

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

/// How many rounds of the probe run (on the same two connections) before concluding that
/// nothing pools sessions.
const ROUNDS: usize = 3;

/// How long B's second statement may wait for a session while A holds one.
const WAIT: Duration = Duration::from_secs(2);

/// `None` when connections with `options` keep their session (a direct connection, or a
/// session pooler); otherwise what showed that they do not.
pub(crate) async fn shares_sessions(options: &PgConnectOptions) -> sqlx::Result<Option<String>> {
    let mut b = PgConnection::connect_with(options).await?;
    let mut a = PgConnection::connect_with(options).await?;
    for _ in 0..ROUNDS {
        if let Some(evidence) = probe(&mut a, &mut b).await? {
            // B may have been abandoned mid-statement: drop it rather than close it.
            let _ = a.close().await;
            return Ok(Some(evidence));
        }
    }
    let _ = a.close().await;
    let _ = b.close().await;
    Ok(None)
}

/// One round of the probe on client connections `a` and `b` (see the module comment).
/// Simple-protocol statements only: no prepared statement is left on any session.
async fn probe(a: &mut PgConnection, b: &mut PgConnection) -> sqlx::Result<Option<String>> {
    let b1 = pid(b, "SELECT pg_backend_pid()").await?;
    let a1 = pid(a, "BEGIN; SELECT pg_backend_pid()").await?;
    let b2 = tokio::time::timeout(WAIT, pid(b, "SELECT pg_backend_pid()")).await;
    sqlx::raw_sql("ROLLBACK").execute(&mut *a).await?;
    Ok(match b2 {
        Err(_) => Some(format!(
            "a statement outside any transaction waited more than {} s while another client \
             connection held a transaction open (they share server sessions)",
            WAIT.as_secs()
        )),
        Ok(b2) => {
            let b2 = b2?;
            if a1 == b1 {
                Some(format!(
                    "two client connections ran on the same server session (pid {b1}), one \
                     while the other was still connected"
                ))
            } else if b1 != b2 {
                Some(format!(
                    "one client connection's consecutive statements ran on two server sessions \
                     (pid {b1}, then pid {b2})"
                ))
            } else {
                None
            }
        }
    })
}

/// Runs `sql` (simple protocol) and reads the `pg_backend_pid()` it returns.
async fn pid(conn: &mut PgConnection, sql: &'static str) -> sqlx::Result<i32> {
    let row = sqlx::raw_sql(sql).fetch_one(conn).await?;
    row.try_get::<i32, _>(0)
}
