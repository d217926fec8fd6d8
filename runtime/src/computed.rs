//! The backfill of a column computed in Rust (`kinds::computed_column`): walks over the primary
//! key, each batch one read (keys, row versions and inputs of the rows still without a value)
//! and, after the generated adapter computed the values, one write (values guarded by the row
//! version, plus the checkpoint) in a transaction of its own, on the leader lock's session.
//!
//! Only rows whose column is `NULL` are read, so a walk can start anywhere and be repeated: a
//! row an old build inserted or changed after a walk passed it is `NULL` again (the reset
//! trigger) and the next walk computes it. The checkpoint is the last key of the last batch;
//! a walk that reaches the end sets it back to the start.
//!
//! Paced as the SQL pass is (`pacing::PassPacing`): the duty cycle, the health verdict, and the
//! WAL budget, on the WAL each batch's transaction wrote (its position read when the
//! transaction's settings are sent and after the write, before the commit).

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};
use tracing::{Instrument, info, info_span, warn};

use crate::backfill::{WalReport, wal_window};
use crate::batch_gate::{BatchGate, Next, Stop};
use crate::error::{ErrorKind, Result};
use crate::executor::{is_retryable, is_statement_timeout};
use crate::health_follower::HealthFollower;
use crate::options::{BackfillOptions, DdlOptions};
use crate::pacing::{PassPacing, WalWindow};
use crate::progress::Progress;
use crate::spec::{ColumnSpec, ComputeFn, ModelSpec};
use crate::sql::{Helpers, computed, key_range};
use crate::state::StateStore;
use crate::step::{Phase, StepId};
use crate::telemetry;

/// Walks in a row that a drain makes before giving up (rows keep appearing without a value:
/// a build that does not know the column still writes).
const MAX_DRAIN_WALKS: u32 = 50;

pub(crate) struct ComputedFill<'a> {
    pub pool: &'a PgPool,
    pub store: &'a StateStore,
    pub model: &'a ModelSpec,
    pub step: &'a StepId,
    pub column: &'static ColumnSpec,
    pub compute: ComputeFn,
    pub options: &'a BackfillOptions,
    pub ddl: &'a DdlOptions,
    pub progress: &'a Progress,
    /// Set to stop after the current batch.
    pub stop: &'a AtomicBool,
    /// The leader lock, checked before every batch; batches run on its session.
    pub lease: &'a crate::lease::Lease,
    /// This instance, for the journal.
    pub instance: &'a str,
}

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// It reached the end of the table: rows it read, and rows it wrote.
    Done { read: i64, written: i64 },
    /// Stopped on request, or a step was aborted; the checkpoint of the last batch committed.
    Stopped,
}

impl ComputedFill<'_> {
    /// One walk from the checkpoint (the first key when there is none) to the end of the table.
    pub async fn walk(&self) -> Result<Walk> {
        let span = info_span!("backfill", step = %self.step, column = self.column.name, phase = "backfill", table = %self.model.qualified_name(), computed = true);
        self.walk_inner().instrument(span).await
    }

    /// Walks from the first key until one walk reads no row without a value. Returns `false`
    /// when stopped.
    pub async fn drain(&self) -> Result<bool> {
        self.restart().await?;
        for _ in 0..MAX_DRAIN_WALKS {
            match self.walk().await? {
                Walk::Stopped => return Ok(false),
                Walk::Done { read: 0, .. } => return Ok(true),
                Walk::Done { read, written } => {
                    info!(step = %self.step, read, written, "rows without a value remained; walking again");
                }
            }
        }
        Err(ErrorKind::Verification {
            step: self.step.to_string(),
            phase: Phase::Validate.to_string(),
            table: self.model.qualified_name(),
            message: format!(
                "rows of column {} keep being written without a value after {MAX_DRAIN_WALKS} walks: a build that does \
                 not know the column still writes the table (an instance without a coordinator?); stop it, then boot again",
                self.column.name
            ),
        }
        .into())
    }

    /// The checkpoint back to the first key.
    async fn restart(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query(AssertSqlSafe(computed::end_walk(
            &self.store.table("steps"),
            self.step,
        )))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn walk_inner(&self) -> Result<Walk> {
        let steps_table = self.store.table("steps");
        let (mut cursor, mut done) = self.start().await?;
        // Rows inserted after the walk started are the next walk's: a walk ends even while an
        // old build keeps inserting.
        let upper: Option<Vec<String>> = {
            let mut conn = self.pool.acquire().await?;
            sqlx::query_scalar(AssertSqlSafe(crate::sql::backfill::upper_bound(self.model)))
                .fetch_optional(&mut *conn)
                .await?
        };
        let Some(upper) = upper else {
            return Ok(Walk::Done {
                read: 0,
                written: 0,
            });
        };
        let helpers = Helpers::new(self.model, self.column, self.step);
        let write = computed::write(self.model, self.column, &helpers, &steps_table, self.step);
        let settings = computed::write_settings(
            self.ddl.lock_timeout,
            self.options.batch_timeout,
            self.options.skip_user_triggers,
        );
        let id = [self.step.as_str()];
        let mut batch_size = self.options.initial_batch_size.max(1);
        let (mut read, mut written) = (0i64, 0i64);
        let (mut attempts, mut too_slow) = (0u32, 0u32);
        let started = Instant::now();
        let mut last_log = Instant::now();
        telemetry::paused(&self.model.qualified_name(), None);
        // The database's health, as for SQL backfills: a breach waits before the next batch
        // (the lease still checked), journaled and shown by `pgevolve status`; a strain
        // stretches the pause.
        let health = HealthFollower::new(
            self.pool,
            self.store,
            id.to_vec(),
            self.instance,
            self.model.qualified_name(),
            self.options.health.clone(),
        );
        let mut gate = BatchGate::new(self.stop, self.lease, health);
        gate.start().await?;
        let table = self.model.qualified_name();
        let mut pacing = PassPacing::new(self.options);
        let wal_report = WalReport {
            pool: self.pool,
            store: self.store,
            steps: id.to_vec(),
            instance: self.instance,
            table: &table,
            budget: self.options.wal_budget.unwrap_or(0),
            unit: "rows",
        };
        loop {
            let (verdict, mut session) = match gate.before_batch(done).await? {
                Next::Run { verdict, session } => (verdict, session),
                Next::Stop(why) => {
                    // An operator's pause, as SQL backfills: the walk journals it and comes
                    // back once it is lifted.
                    if why == Stop::Paused {
                        self.progress.set_rows(|s| s == self.step, done, 0.0);
                        telemetry::paused(&self.model.qualified_name(), Some("operator"));
                    }
                    return Ok(Walk::Stopped);
                }
            };
            let read_sql = computed::read(
                self.model,
                self.column,
                cursor.as_deref(),
                &upper,
                batch_size,
            );
            let t0 = Instant::now();
            let outcome = match session.as_mut() {
                Some(conn) => self.batch(conn, &read_sql, &settings, &write).await,
                None => {
                    drop(session);
                    let mut conn = self.pool.acquire().await?;
                    self.batch(&mut conn, &read_sql, &settings, &write).await
                }
            };
            match outcome {
                Ok(None) => return self.end_walk(read, written, started).await,
                Ok(Some(Written {
                    read: n,
                    filled,
                    last,
                    wal,
                })) => {
                    // A read short of its limit scanned every key up to the walk's bound: rows
                    // written there since are the next walk's (a walk must not chase an old
                    // build's inserts).
                    let reached_end = n < i64::from(batch_size);
                    attempts = 0;
                    too_slow = 0;
                    read += n;
                    written += filled;
                    done += filled;
                    cursor = Some(last);
                    let elapsed = t0.elapsed();
                    let after = pacing.after(batch_size, elapsed, wal, verdict.slowdown());
                    wal_report.after(batch_size, &after).await?;
                    batch_size = after.pace.next_size;
                    let rate = written as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    self.progress.set_rows(|s| s == self.step, done, rate);
                    if last_log.elapsed() >= Duration::from_secs(2) {
                        last_log = Instant::now();
                        info!(rows_done = done, batch_size, "computed backfill progress");
                    }
                    if reached_end {
                        return self.end_walk(read, written, started).await;
                    }
                    telemetry::rows_filled(
                        self.step.as_str(),
                        &self.model.qualified_name(),
                        filled.max(0) as u64,
                    );
                    telemetry::batch(&self.model.qualified_name(), elapsed);
                    telemetry::batch_size(&self.model.qualified_name(), batch_size);
                    if !after.pace.pause.is_zero() {
                        tokio::time::sleep(after.pace.pause).await;
                    }
                }
                Err(Failure::Sql(e))
                    if is_statement_timeout(&e)
                        && (batch_size > self.options.min_batch_size
                            || too_slow < self.ddl.max_attempts) =>
                {
                    pacing.interrupted();
                    if batch_size <= self.options.min_batch_size {
                        too_slow += 1;
                        tokio::time::sleep(
                            (self.ddl.initial_backoff * too_slow).min(self.ddl.max_backoff),
                        )
                        .await;
                    }
                    warn!(
                        batch_size,
                        "batch cancelled past the batch timeout; retrying at half the size"
                    );
                    batch_size = (batch_size / 2).max(self.options.min_batch_size);
                }
                Err(Failure::Sql(e)) if is_retryable(&e) && attempts < self.ddl.max_attempts => {
                    attempts += 1;
                    pacing.interrupted();
                    batch_size = (batch_size / 2).max(self.options.min_batch_size);
                    warn!(
                        attempts,
                        "batch could not lock its rows within lock_timeout; retrying"
                    );
                    tokio::time::sleep(
                        (self.ddl.initial_backoff * attempts).min(self.ddl.max_backoff),
                    )
                    .await;
                }
                Err(Failure::Sql(source)) => {
                    // A session that ended under the batch is a lost leadership.
                    self.lease.check(&id, &[]).await?;
                    return Err(ErrorKind::Statement {
                        step: self.step.to_string(),
                        phase: Phase::Backfill.to_string(),
                        table: self.model.qualified_name(),
                        source,
                    }
                    .into());
                }
                Err(Failure::Panicked {
                    first_key,
                    last_key,
                    message,
                }) => {
                    return Err(ErrorKind::BackfillFunctionPanicked {
                        step: self.step.to_string(),
                        table: self.model.qualified_name(),
                        function: self.function().to_string(),
                        first_key,
                        last_key,
                        message,
                    }
                    .into());
                }
                Err(Failure::Compute(source)) => {
                    return Err(ErrorKind::Statement {
                        step: self.step.to_string(),
                        phase: Phase::Backfill.to_string(),
                        table: self.model.qualified_name(),
                        source,
                    }
                    .into());
                }
            }
        }
    }

    async fn end_walk(&self, read: i64, written: i64, started: Instant) -> Result<Walk> {
        self.restart().await?;
        info!(
            rows_read = read,
            rows_written = written,
            seconds = started.elapsed().as_secs_f64(),
            "walk of the computed backfill complete"
        );
        Ok(Walk::Done { read, written })
    }

    /// The checkpoint and the rows written so far, from the state store.
    async fn start(&self) -> Result<(Option<Vec<String>>, i64)> {
        let mut conn = self.pool.acquire().await?;
        let rows = self.store.steps().rows(&mut conn).await?;
        let row = rows.get(self.step);
        if row.is_none_or(|r| r.rows_estimated.is_none()) {
            let estimate: i64 = sqlx::query_scalar(crate::sql::backfill::estimate_rows())
                .bind(self.model.schema)
                .bind(self.model.table)
                .fetch_optional(&mut *conn)
                .await?
                .unwrap_or(0);
            self.progress
                .set_estimate(|s| s == self.step, estimate.max(0));
        } else if let Some(estimate) = row.and_then(|r| r.rows_estimated) {
            self.progress.set_estimate(|s| s == self.step, estimate);
        }
        Ok((
            row.and_then(|r| r.checkpoint.clone()),
            row.map_or(0, |r| r.rows_done),
        ))
    }

    /// One batch: the read, the values computed, the write with the checkpoint in one
    /// transaction, whose WAL is measured from its settings to the end of the write. `None`: no
    /// row without a value is left above the cursor.
    async fn batch(
        &self,
        conn: &mut PgConnection,
        read: &str,
        settings: &str,
        write: &str,
    ) -> std::result::Result<Option<Written>, Failure> {
        let rows = sqlx::query(AssertSqlSafe(read))
            .fetch_all(&mut *conn)
            .await
            .map_err(Failure::Sql)?;
        let Some(last_row) = rows.last() else {
            return Ok(None);
        };
        let k = self.model.primary_key().count();
        let text = |row: &sqlx::postgres::PgRow, name: &str| -> sqlx::Result<String> {
            row.try_get::<String, _>(name)
        };
        let mut query = crate::__private::query(write);
        for i in 0..k {
            let name = key_range::alias(i);
            let keys = rows
                .iter()
                .map(|r| text(r, &name))
                .collect::<sqlx::Result<Vec<String>>>()
                .map_err(Failure::Compute)?;
            query = query.bind(keys);
        }
        let versions = rows
            .iter()
            .map(|r| text(r, "__pgevolve_xmin"))
            .collect::<sqlx::Result<Vec<String>>>()
            .map_err(Failure::Compute)?;
        query = query.bind(versions);
        let last = (0..k)
            .map(|i| text(last_row, &key_range::alias(i)))
            .collect::<sqlx::Result<Vec<String>>>()
            .map_err(Failure::Compute)?;
        // The user's function runs on this task: a panic must end the backfill with an error
        // naming the batch, not unwind through the engine (which would leave the leader lock to
        // a dead task) or take the service down with it.
        let compute = self.compute;
        query = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            compute(&rows, query)
        })) {
            Ok(computed) => computed.map_err(Failure::Compute)?,
            Err(panic) => {
                let first = (0..k)
                    .map(|i| text(&rows[0], &key_range::alias(i)))
                    .collect::<sqlx::Result<Vec<String>>>()
                    .map_err(Failure::Compute)?;
                return Err(Failure::Panicked {
                    first_key: key_text(&first),
                    last_key: key_text(&last),
                    message: panic_message(&*panic),
                });
            }
        };
        query = query.bind(last.clone());
        let mut tx = conn.begin().await.map_err(Failure::Sql)?;
        let at = Instant::now();
        let start = sqlx::raw_sql(AssertSqlSafe(settings.to_string()))
            .fetch_all(&mut *tx)
            .await
            .map_err(Failure::Sql)?;
        let filled: i64 = query
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get("filled"))
            .map_err(Failure::Sql)?;
        let end = sqlx::raw_sql(AssertSqlSafe(crate::sql::backfill::wal_end()))
            .fetch_all(&mut *tx)
            .await
            .map_err(Failure::Sql)?;
        let wal = wal_window(&start, &end, at, at.elapsed());
        crate::failpoint::pause_at("computed-batch").await;
        tx.commit().await.map_err(Failure::Sql)?;
        Ok(Some(Written {
            read: rows.len() as i64,
            filled,
            last,
            wal,
        }))
    }

    /// The function's path as written in `backfill_with`.
    fn function(&self) -> &'static str {
        self.column.computed.map_or("(unknown)", |c| c.function)
    }
}

/// What one batch did.
struct Written {
    /// Rows read (without a value when read).
    read: i64,
    /// Rows written (still the version read).
    filled: i64,
    /// The batch's last key, the next cursor.
    last: Vec<String>,
    /// The WAL positions around its write, when both were read.
    wal: Option<WalWindow>,
}

/// Why a batch failed: the database, reading the inputs / the function's adapter, or a panic
/// of the function.
enum Failure {
    Sql(sqlx::Error),
    Compute(sqlx::Error),
    Panicked {
        first_key: String,
        last_key: String,
        message: String,
    },
}

/// A key as people read it: `42`, or `(7, 42)` for a composite one.
fn key_text(key: &[String]) -> String {
    match key {
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    }
}

/// The text a panic carries (`panic!("...")` with or without arguments), or a note that it
/// carries none.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
