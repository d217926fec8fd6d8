//! The backfill engine: keyset batches by primary key, each its own short transaction that also
//! commits the checkpoint, with a batch size that adapts to a target duration.

use sqlx::AssertSqlSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgPool, Row};
use tracing::{Instrument, info, info_span, warn};

use crate::error::{ErrorKind, Result};
use crate::evolver::StepProgress;
use crate::executor::is_retryable;
use crate::options::{BackfillOptions, DdlOptions};
use crate::plan::PlannedStep;
use crate::spec::ColumnSpec;
use crate::sql;
use crate::state::StateStore;
use crate::step::Phase;

pub(crate) struct Backfill<'a> {
    pub pool: &'a PgPool,
    pub store: &'a StateStore,
    pub step: &'a PlannedStep,
    pub column: &'static ColumnSpec,
    /// The value for rows where the column is NULL (an SQL expression over the row).
    pub expr: &'a str,
    pub options: &'a BackfillOptions,
    pub ddl: &'a DdlOptions,
    pub progress: &'a Arc<Mutex<Vec<StepProgress>>>,
    /// Set to stop after the current batch (an abort is waiting for the leader lock).
    pub stop: &'a AtomicBool,
}

impl Backfill<'_> {
    /// Fills every row up to the upper bound recorded when the backfill first started, resuming
    /// from the checkpoint. Returns whether it finished (`false`: stopped on request, with the
    /// checkpoint of the last batch committed).
    pub async fn run(&self) -> Result<bool> {
        let model = &self.step.model;
        let span = info_span!("backfill", step = %self.step.id, phase = "backfill", table = %model.qualified_name());
        async {
            let mut conn = self.pool.acquire().await?;
            let steps = self.store.steps();
            let row = steps.get(&mut conn, &self.step.id).await?;
            let (mut cursor, mut upper, mut done) = match row {
                Some(r) => (r.checkpoint, r.upper_bound, r.rows_done),
                None => (None, None, 0),
            };
            if upper.is_none() {
                let bound: Option<Vec<String>> =
                    sqlx::query_scalar(AssertSqlSafe(&*sql::backfill_upper_bound(model)))
                        .fetch_optional(&mut *conn)
                        .await?;
                let estimate: i64 = sqlx::query_scalar(sql::estimate_rows())
                    .bind(model.schema)
                    .bind(model.table)
                    .fetch_optional(&mut *conn)
                    .await?
                    .unwrap_or(0);
                let estimate = if estimate >= 0 {
                    estimate
                } else {
                    sqlx::query_scalar(AssertSqlSafe(&*sql::count_rows(model)))
                        .fetch_one(&mut *conn)
                        .await?
                };
                let Some(bound) = bound else {
                    return Ok(true); // empty table: the trigger covers every row from now on
                };
                steps
                    .start_backfill(&mut conn, &self.step.id, &bound, estimate)
                    .await?;
                self.set_estimate(estimate);
                upper = Some(bound);
            }
            let upper = upper.unwrap_or_default();
            drop(conn);

            let first_sql = sql::backfill_batch(model, self.column, self.expr, true);
            let next_sql = sql::backfill_batch(model, self.column, self.expr, false);
            let mut batch_size = self.options.initial_batch_size.max(1);
            let started = Instant::now();
            let mut filled_this_run = 0i64;
            let mut attempts = 0u32;
            let mut last_log = Instant::now();
            loop {
                if self.stop.load(Ordering::Acquire) {
                    info!(
                        rows = done,
                        "backfill stopped on request; it resumes from its checkpoint"
                    );
                    return Ok(false);
                }
                let t0 = Instant::now();
                match self
                    .batch(&first_sql, &next_sql, cursor.as_deref(), &upper, batch_size)
                    .await
                {
                    Ok(None) => break,
                    Ok(Some((filled, last))) => {
                        attempts = 0;
                        done += filled;
                        filled_this_run += filled;
                        cursor = Some(last);
                        let elapsed = t0.elapsed();
                        batch_size = self.adapt(batch_size, elapsed);
                        let rate =
                            filled_this_run as f64 / started.elapsed().as_secs_f64().max(1e-3);
                        self.report(done, rate);
                        if last_log.elapsed() >= Duration::from_secs(2) {
                            last_log = Instant::now();
                            info!(
                                rows_done = done,
                                rows_per_second = rate as i64,
                                batch_size,
                                "backfill progress"
                            );
                        }
                        if !self.options.pause.is_zero() {
                            tokio::time::sleep(self.options.pause).await;
                        }
                    }
                    Err(e) if is_retryable(&e) && attempts < self.ddl.max_attempts => {
                        attempts += 1;
                        // Rows of this batch are locked by a long writer: smaller batch, try again.
                        batch_size = (batch_size / 2).max(self.options.min_batch_size);
                        warn!(
                            attempts,
                            "batch could not lock its rows within lock_timeout; retrying"
                        );
                        tokio::time::sleep(self.ddl.initial_backoff * attempts).await;
                    }
                    Err(source) => {
                        return Err(ErrorKind::Statement {
                            step: self.step.id.to_string(),
                            phase: Phase::Backfill.to_string(),
                            table: model.qualified_name(),
                            source,
                        }
                        .into());
                    }
                }
            }
            info!(
                rows = done,
                seconds = started.elapsed().as_secs_f64(),
                "backfill complete"
            );
            let _ = filled_this_run;
            Ok(true)
        }
        .instrument(span)
        .await
    }

    /// One batch and its checkpoint, in one transaction. `None` when no key is left.
    async fn batch(
        &self,
        first_sql: &str,
        next_sql: &str,
        cursor: Option<&[String]>,
        upper: &[String],
        limit: u32,
    ) -> sqlx::Result<Option<(i64, Vec<String>)>> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(AssertSqlSafe(&*format!(
            "SET LOCAL lock_timeout = '{}ms'",
            self.ddl.lock_timeout.as_millis()
        )))
        .execute(&mut *tx)
        .await?;
        let mut query = sqlx::query(AssertSqlSafe(if cursor.is_some() {
            next_sql
        } else {
            first_sql
        }));
        for value in cursor.unwrap_or_default().iter().chain(upper) {
            query = query.bind(value.as_str());
        }
        let row = query.bind(i64::from(limit)).fetch_one(&mut *tx).await?;
        let filled: i64 = row.get(0);
        let Some(last): Option<Vec<String>> = row.get(1) else {
            return Ok(None);
        };
        self.store
            .steps()
            .checkpoint(&mut tx, &self.step.id, &last, filled)
            .await?;
        tx.commit().await?;
        Ok(Some((filled, last)))
    }

    /// Moves the batch size towards the target duration: down by up to half at once, up by at
    /// most a quarter per batch, so one slow batch is not followed by an even longer one.
    fn adapt(&self, size: u32, elapsed: Duration) -> u32 {
        let target = self.options.target_batch_duration.as_secs_f64();
        let ratio = (target / elapsed.as_secs_f64().max(1e-4)).clamp(0.5, 1.25);
        ((size as f64 * ratio) as u32)
            .clamp(self.options.min_batch_size, self.options.max_batch_size)
    }

    fn set_estimate(&self, estimate: i64) {
        let mut all = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = all.iter_mut().find(|p| p.step == self.step.id) {
            p.rows_estimated = estimate;
        }
    }

    fn report(&self, done: i64, rate: f64) {
        let mut all = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = all.iter_mut().find(|p| p.step == self.step.id) {
            p.rows_done = done;
            p.rows_per_second = rate;
        }
    }
}
