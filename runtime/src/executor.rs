//! Runs a phase's statements so that the application is never blocked for longer than
//! `lock_timeout`: each group is one short transaction with `SET LOCAL lock_timeout`, retried with
//! exponential backoff and jitter when the lock is not granted in time. Before each attempt it
//! looks for long lock holders on the table (`long_holders`, older than `DdlOptions::long_holder`)
//! and does not enter the lock queue while one is there: a request waiting behind a long holder
//! would queue every application query behind itself. Every holder it meets (waited for, or
//! holding the table when an attempt timed out) is remembered with how long it held the lock, so
//! the error at the deadline says who held it and for how long, even once they are gone.

use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool, Row};
use tracing::{Instrument, info, info_span, warn};

use crate::error::{ErrorKind, Result};
use crate::ident::{Ident, Qualified};
use crate::options::DdlOptions;
use crate::sql::{Exists, Statement};
use crate::step::Phase;

/// SQLSTATEs worth another attempt: the lock was not granted in time, or a deadlock was broken.
const RETRYABLE: [&str; 2] = ["55P03", "40P01"];

/// What a group of statements belongs to, for errors and logs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub step: &'a str,
    pub phase: Phase,
    pub schema: &'a str,
    pub table: &'a str,
}

impl Target<'_> {
    fn table_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// Runs DDL under the lock policy.
#[derive(Debug, Clone)]
pub(crate) struct Executor {
    pub pool: PgPool,
    pub options: DdlOptions,
}

impl Executor {
    /// Runs `statements` and then `record` (state-store writes) in one transaction, so the phase's
    /// effect and its record commit together or not at all. `long_running` lifts any
    /// `statement_timeout` for statements that scan without blocking writers (VALIDATE).
    pub async fn run(
        &self,
        target: Target<'_>,
        statements: &[Statement],
        record: &[String],
        long_running: bool,
    ) -> Result<()> {
        let span = info_span!("ddl", step = target.step, phase = %target.phase, table = %target.table_name());
        async {
            let started = Instant::now();
            let deadline = started + self.options.deadline;
            let mut attempts = 0;
            let mut seen = Seen::default();
            loop {
                let outcome = self
                    .attempt(
                        target,
                        statements,
                        record,
                        long_running,
                        deadline,
                        &mut seen,
                    )
                    .await;
                match outcome {
                    Ok(Attempt::Done) => return Ok(()),
                    Ok(Attempt::DeadlinePassed) => {}
                    Err(e) if is_retryable(&e) => {
                        attempts += 1;
                        // Who held the table when the attempt gave up, for the log and for the
                        // error at the deadline.
                        let holders = self.holders_now(target).await;
                        seen.note(&holders);
                        if attempts < self.options.max_attempts && Instant::now() < deadline {
                            let wait = self.backoff(attempts);
                            warn!(
                                attempts,
                                wait_ms = wait.as_millis() as u64,
                                holders = %describe(&holders),
                                "lock not granted within lock_timeout; retrying"
                            );
                            tokio::time::sleep(
                                wait.min(deadline.saturating_duration_since(Instant::now())),
                            )
                            .await;
                            continue;
                        }
                    }
                    Err(source) => {
                        return Err(ErrorKind::Statement {
                            step: target.step.to_string(),
                            phase: target.phase.to_string(),
                            table: target.table_name(),
                            source,
                        }
                        .into());
                    }
                }
                let blockers = self.blockers(target).await;
                return Err(ErrorKind::LockTimeout {
                    step: target.step.to_string(),
                    phase: target.phase.to_string(),
                    table: target.table_name(),
                    attempts,
                    waited_secs: started.elapsed().as_secs_f64(),
                    blockers,
                    held: seen.summary(),
                }
                .into());
            }
        }
        .instrument(span)
        .await
    }

    async fn attempt(
        &self,
        target: Target<'_>,
        statements: &[Statement],
        record: &[String],
        long_running: bool,
        deadline: Instant,
        seen: &mut Seen,
    ) -> sqlx::Result<Attempt> {
        let mut conn = self.pool.acquire().await?;
        // Only DDL on the table asks for a lock the application needs; the state store's
        // records alone do not.
        if statements.iter().any(|s| s.locks_table)
            && !self
                .wait_for_long_holders(&mut conn, target, deadline, seen)
                .await?
        {
            return Ok(Attempt::DeadlinePassed);
        }
        let mut tx = conn.begin().await?;
        sqlx::query(AssertSqlSafe(&*format!(
            "SET LOCAL lock_timeout = '{}ms'",
            self.options.lock_timeout.as_millis()
        )))
        .execute(&mut *tx)
        .await?;
        if long_running {
            sqlx::query("SET LOCAL statement_timeout = 0")
                .execute(&mut *tx)
                .await?;
            sqlx::query(AssertSqlSafe(crate::sql::watch_client(true)))
                .execute(&mut *tx)
                .await?;
        }
        for statement in statements {
            let exists = match &statement.unless {
                None => false,
                Some(Exists::Constraint(name)) => {
                    sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
                    )
                    .bind(Qualified(target.schema, target.table).to_string())
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?
                }
                Some(Exists::Schema(name)) => {
                    sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                    )
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?
                }
                Some(Exists::Type(name)) => {
                    sqlx::query_scalar("SELECT to_regtype($1) IS NOT NULL")
                        .bind(name)
                        .fetch_one(&mut *tx)
                        .await?
                }
            };
            if exists {
                continue;
            }
            sqlx::query(AssertSqlSafe(&*statement.sql))
                .execute(&mut *tx)
                .await?;
        }
        for sql in record {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Attempt::Done)
    }

    /// Waits, outside the lock queue, while the table has a long holder: a transaction open for
    /// longer than `long_holder` holding a lock on it, a `VACUUM` working on it, or a session
    /// already waiting in its lock queue. Returns `false` when the deadline passed first. Who
    /// is waited for is logged when it changes.
    async fn wait_for_long_holders(
        &self,
        conn: &mut PgConnection,
        target: Target<'_>,
        deadline: Instant,
        seen: &mut Seen,
    ) -> sqlx::Result<bool> {
        let mut last: Option<String> = None;
        loop {
            let holders = long_holders(conn, target, self.options.long_holder).await?;
            seen.note(&holders);
            if holders.is_empty() {
                if last.is_some() {
                    info!("the long lock holders are gone; asking for the lock");
                }
                return Ok(true);
            }
            let pids: String = holders.iter().map(|h| format!("{} ", h.pid)).collect();
            if last.as_deref() != Some(&pids) {
                let who: Vec<String> = holders.iter().map(LongHolder::to_string).collect();
                info!(
                    "not asking for the lock while a long holder is there (it would queue every query behind it): {}",
                    who.join("; ")
                );
                last = Some(pids);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            let poll = Duration::from_millis(100).mul_f64(rand::random_range(1.0..=2.0));
            tokio::time::sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Every session holding (or waiting for) a lock on the table now, whatever its age: after
    /// an attempt timed out, these are who it waited behind. Empty if they could not be read
    /// (the error at the deadline then names the holders of that moment only).
    async fn holders_now(&self, target: Target<'_>) -> Vec<LongHolder> {
        let Ok(mut conn) = self.pool.acquire().await else {
            return Vec::new();
        };
        long_holders(&mut conn, target, Duration::ZERO)
            .await
            .unwrap_or_default()
    }

    /// Exponential backoff with jitter in [50 %, 100 %] of the step, so instances that collide
    /// do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .options
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = base.min(self.options.max_backoff);
        capped.mul_f64(rand::random_range(0.5..=1.0))
    }

    /// The sessions holding locks on the target table, for the error when retries run out:
    /// pid, role and lock modes from `pg_locks` and `pg_stat_activity`, which every role may
    /// read; state, times and query text when the role may see them (its own sessions, or
    /// membership in `pg_read_all_stats`), and otherwise a note saying why they are hidden.
    async fn blockers(&self, target: Target<'_>) -> String {
        let rows = sqlx::query(
            "SELECT l.pid, string_agg(DISTINCT l.mode, ', ' ORDER BY l.mode), a.usename::text, a.state, \
                    a.xact_start::text || ', ' || round(extract(epoch FROM now() - a.xact_start)::numeric, 1) || ' s ago', \
                    a.query_start::text, left(a.query, 300), \
                    coalesce(a.query = '<insufficient privilege>', false), current_user::text \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.relation = to_regclass($1) AND l.granted AND l.pid <> pg_backend_pid() \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             GROUP BY l.pid, a.usename, a.state, a.xact_start, a.query_start, a.query \
             ORDER BY l.pid",
        )
        .bind(Qualified(target.schema, target.table).to_string())
        .fetch_all(&self.pool)
        .await;
        match rows {
            Ok(rows) if rows.is_empty() => "no session holds a lock on the table any more".into(),
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    let pid = r.get::<i32, _>(0);
                    let modes = r.get::<Option<String>, _>(1).unwrap_or_default();
                    let holder = match r.get::<Option<String>, _>(2) {
                        Some(role) => format!("role {}, ", Ident(&role)),
                        None => String::new(),
                    };
                    if r.get::<bool, _>(7) {
                        format!(
                            "pid {pid} ({holder}holds {modes}; its state and query are hidden from role {}, \
                             which is not a member of pg_read_all_stats; end it with SELECT pg_terminate_backend({pid}))",
                            Ident(&r.get::<String, _>(8))
                        )
                    } else {
                        format!(
                            "pid {pid} ({holder}holds {modes}; {}, transaction started {}, query started {}): {}",
                            r.get::<Option<String>, _>(3).unwrap_or_default(),
                            r.get::<Option<String>, _>(4).unwrap_or_default(),
                            r.get::<Option<String>, _>(5).unwrap_or_default(),
                            r.get::<Option<String>, _>(6).unwrap_or_default()
                        )
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("(could not read pg_locks: {e})"),
        }
    }
}

/// How one attempt ended without an error.
enum Attempt {
    Done,
    /// The deadline passed while waiting for long holders: no lock was asked for.
    DeadlinePassed,
}

/// A session the DDL should not queue behind.
#[derive(Clone)]
struct LongHolder {
    pid: i32,
    what: String,
    modes: String,
    granted: bool,
    seconds: Option<f64>,
}

impl std::fmt::Display for LongHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.granted { "holds" } else { "waits for" };
        write!(f, "pid {} ({}) {state} {}", self.pid, self.what, self.modes)?;
        if let Some(secs) = self.seconds {
            write!(f, ", transaction open for {secs:.1} s")?;
        }
        Ok(())
    }
}

/// The holders a statement group met while it waited for its lock, by pid: what each was, when it
/// was first and last seen, and the age of its transaction when last seen.
#[derive(Default)]
struct Seen {
    holders: BTreeMap<i32, SeenHolder>,
}

struct SeenHolder {
    holder: LongHolder,
    first: Instant,
    last: Instant,
}

impl Seen {
    fn note(&mut self, holders: &[LongHolder]) {
        let now = Instant::now();
        for h in holders {
            let entry = self.holders.entry(h.pid).or_insert_with(|| SeenHolder {
                holder: h.clone(),
                first: now,
                last: now,
            });
            entry.last = now;
            // Keep the oldest transaction age seen and the latest description.
            let seconds = match (entry.holder.seconds, h.seconds) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            entry.holder = LongHolder {
                seconds,
                ..h.clone()
            };
        }
    }

    /// The holders met, the one that held the lock longest first (at most five), each with how
    /// long: its transaction's age when last seen (what it had held the lock for at least, when
    /// that is visible) and how long it was seen during this wait.
    fn summary(&self) -> String {
        if self.holders.is_empty() {
            return "no holder was seen (none held a conflicting lock when looked at)".into();
        }
        let held = |s: &SeenHolder| {
            s.holder
                .seconds
                .unwrap_or(0.0)
                .max((s.last - s.first).as_secs_f64())
        };
        let mut all: Vec<&SeenHolder> = self.holders.values().collect();
        all.sort_by(|a, b| held(b).total_cmp(&held(a)));
        let mut parts: Vec<String> = all
            .iter()
            .take(5)
            .map(|s| {
                let h = &s.holder;
                let verb = if h.granted { "held" } else { "waited for" };
                let age = match h.seconds {
                    Some(secs) => format!("its transaction open for {secs:.1} s when last seen"),
                    None => "its transaction's age hidden from this role".to_string(),
                };
                format!(
                    "pid {} ({}) {verb} {} for at least {:.1} s ({age}, seen for {:.1} s of the wait)",
                    h.pid,
                    h.what,
                    h.modes,
                    held(s),
                    (s.last - s.first).as_secs_f64()
                )
            })
            .collect();
        if all.len() > 5 {
            parts.push(format!("and {} more", all.len() - 5));
        }
        parts.join("; ")
    }
}

/// One line naming the holders, for logs.
fn describe(holders: &[LongHolder]) -> String {
    if holders.is_empty() {
        return "none seen".into();
    }
    holders
        .iter()
        .map(LongHolder::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The sessions holding a lock on the table for longer than `threshold` (their transaction's
/// age), running a `VACUUM` of it, or waiting in its lock queue. A session whose transaction
/// start this role may not see (another role's, without `pg_read_all_stats`) counts as long
/// only by what it visibly is (a VACUUM, a waiter): otherwise the attempt's `lock_timeout`
/// still bounds the stall.
async fn long_holders(
    conn: &mut PgConnection,
    target: Target<'_>,
    threshold: Duration,
) -> sqlx::Result<Vec<LongHolder>> {
    let rows = sqlx::query(
        "SELECT l.pid, \
                coalesce(a.backend_type, 'session') || coalesce(', ' || left(a.query, 80), '') AS what, \
                string_agg(DISTINCT l.mode, ', ' ORDER BY l.mode) AS modes, bool_and(l.granted) AS granted, \
                extract(epoch FROM now() - a.xact_start)::float8 AS seconds \
           FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE l.locktype = 'relation' AND l.relation = to_regclass($1) \
            AND l.pid <> pg_backend_pid() \
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
            AND (NOT l.granted \
                 OR a.xact_start < now() - make_interval(secs => $2) \
                 OR a.backend_type = 'autovacuum worker' \
                 OR EXISTS (SELECT 1 FROM pg_stat_progress_vacuum v WHERE v.pid = l.pid)) \
          GROUP BY l.pid, a.backend_type, a.query, a.xact_start \
          ORDER BY l.pid",
    )
    .bind(Qualified(target.schema, target.table).to_string())
    .bind(threshold.as_secs_f64())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LongHolder {
                pid: r.try_get("pid")?,
                what: r.try_get("what")?,
                modes: r.try_get::<Option<String>, _>("modes")?.unwrap_or_default(),
                granted: r.try_get::<Option<bool>, _>("granted")?.unwrap_or(true),
                seconds: r.try_get("seconds")?,
            })
        })
        .collect()
}

/// `57014`: a statement ran past its `statement_timeout` (a backfill batch cancelled, its locks
/// released).
pub(crate) fn is_statement_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

pub(crate) fn is_retryable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| RETRYABLE.contains(&c.as_ref())))
}
