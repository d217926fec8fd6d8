//! The backfill engine: one pass per table over the primary key, filling every pending column
//! at once; keyset batches, each one statement that also commits the checkpoint, with a batch
//! size and a pause that keep the pass to its duty cycle and its WAL budget (`pacing.rs`),
//! stretched or turned into a wait when the database's health asks for it (`health.rs`).

use sqlx::AssertSqlSafe;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgPool, Postgres, Row};
use tracing::{Instrument, info, info_span, warn};

use crate::batch_gate::{BatchGate, Next, Stop};
use crate::error::{ErrorKind, Result};
use crate::executor::{is_retryable, is_statement_timeout};
use crate::health_follower::{HealthFollower, journal_steps};
use crate::options::{BackfillOptions, DdlOptions};
use crate::pacing::{AfterBatch, PassPacing, WalWindow};
use crate::progress::Progress;
use crate::spec::ModelSpec;
use crate::sql;
use crate::sql::backfill::{Bounds, FillColumn};
use crate::state::Event;
use crate::state::{StateStore, StepRow};
use crate::step::Phase;
use crate::telemetry;

pub(crate) struct Backfill<'a> {
    pub pool: &'a PgPool,
    pub store: &'a StateStore,
    pub model: &'a ModelSpec,
    /// The columns this pass fills, one per step (see `sql::backfill::pass`).
    pub fills: &'a [FillColumn],
    pub options: &'a BackfillOptions,
    pub ddl: &'a DdlOptions,
    pub progress: &'a Progress,
    /// Set to stop after the current batch (an abort is waiting for the leader lock).
    pub stop: &'a AtomicBool,
    /// The leader lock, checked before every batch: a leader that lost it stops.
    pub lease: &'a crate::lease::Lease,
    /// This instance, for the journal.
    pub instance: &'a str,
}

impl Backfill<'_> {
    /// Fills every row up to the upper bound recorded when the pass first started, resuming
    /// from the checkpoint. Returns whether it finished (`false`: stopped on request, with the
    /// checkpoint of the last batch committed).
    pub async fn run(&self) -> Result<bool> {
        let model = self.model;
        let ids = self
            .fills
            .iter()
            .map(|f| f.step.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let columns = self
            .fills
            .iter()
            .map(|f| f.written())
            .collect::<Vec<_>>()
            .join(", ");
        let span = info_span!("backfill", steps = %ids, columns = %columns, phase = "backfill", table = %model.qualified_name());
        async {
            let Some((mut cursor, upper, mut done, estimate)) = self.start().await? else {
                return Ok(true); // empty table: the triggers cover every row from now on
            };
            self.announce_triggers().await?;
            let table = model.qualified_name();
            telemetry::paused(&table, None);
            self.remaining(estimate - done);
            let health = HealthFollower::new(
                self.pool,
                self.store,
                self.steps(),
                self.instance,
                table.clone(),
                self.options.health.clone(),
            );
            let mut gate = BatchGate::new(self.stop, self.lease, health);
            gate.start().await?;
            let steps_table = self.store.table("steps");
            // Consecutive cancelled batches at the smallest size (see below).
            let mut too_slow = 0u32;
            let mut pacing = PassPacing::new(self.options);
            let wal_report = WalReport {
                pool: self.pool,
                store: self.store,
                steps: self.steps(),
                instance: self.instance,
                table: &table,
                budget: self.options.wal_budget.unwrap_or(0),
                unit: "rows",
            };
            let mut batch_size = self.options.initial_batch_size.max(1);
            let started = Instant::now();
            let mut filled_this_run = 0i64;
            let mut attempts = 0u32;
            let mut last_log = Instant::now();
            // One connection for the whole pass when not leading: no pool round trip per batch.
            let mut conn: Option<PoolConnection<Postgres>> = None;
            loop {
                let (verdict, mut session) = match gate.before_batch(done).await? {
                    Next::Run { verdict, session } => (verdict, session),
                    Next::Stop(why) => {
                        // An operator's pause (`pgevolve pause`): the checkpoint stays where
                        // the last batch left it, and the walk goes on with other tables
                        // (`evolver/background.rs` journals the pause and comes back).
                        if why == Stop::Paused {
                            self.report(done, 0.0);
                            telemetry::paused(&table, Some("operator"));
                        }
                        return Ok(false);
                    }
                };
                let sql = sql::backfill::batch(
                    model,
                    self.fills,
                    &steps_table,
                    self.ddl.lock_timeout,
                    self.options.batch_timeout,
                    self.options.skip_user_triggers,
                    Bounds::Values {
                        cursor: cursor.as_deref(),
                        upper: &upper,
                        limit: batch_size,
                    },
                );
                let t0 = Instant::now();
                // A leader runs the batch on the session that holds the leader lock: if that
                // session ends, the batch under way ends with it, and the next leader cannot
                // fill beside it.
                let leading = session.is_some();
                let outcome = match (session.as_mut(), conn.as_mut()) {
                    (Some(c), _) => batch(c, &sql).await,
                    (None, Some(c)) => batch(c, &sql).await,
                    (None, None) => match self.pool.acquire().await {
                        Ok(c) => batch(conn.insert(c), &sql).await,
                        Err(e) => Err(e),
                    },
                };
                drop(session);
                if leading && outcome.is_err() {
                    // A session that ended under the batch (terminated, its connection lost) is a
                    // lost leadership, not a failed batch.
                    self.lease.check(&self.steps(), &[]).await?;
                }
                match outcome {
                    Ok(None) => break,
                    Ok(Some(Batch { filled, last, wal })) => {
                        attempts = 0;
                        too_slow = 0;
                        done += filled;
                        filled_this_run += filled;
                        cursor = Some(last);
                        let elapsed = t0.elapsed();
                        let window = wal.map(|(start, end)| WalWindow {
                            start,
                            end,
                            at: t0,
                            took: elapsed,
                        });
                        let after = pacing.after(batch_size, elapsed, window, verdict.slowdown());
                        wal_report.after(batch_size, &after).await?;
                        let pace = after.pace;
                        batch_size = pace.next_size;
                        let rate =
                            filled_this_run as f64 / started.elapsed().as_secs_f64().max(1e-3);
                        self.report(done, rate);
                        for fill in self.fills {
                            telemetry::rows_filled(
                                fill.step.as_str(),
                                &table,
                                filled.max(0) as u64,
                            );
                        }
                        telemetry::batch(&table, elapsed);
                        telemetry::batch_size(&table, batch_size);
                        self.remaining(estimate - done);
                        if last_log.elapsed() >= Duration::from_secs(2) {
                            last_log = Instant::now();
                            info!(
                                rows_done = done,
                                rows_per_second = rate as i64,
                                batch_size,
                                "backfill progress"
                            );
                        }
                        if !pace.pause.is_zero() {
                            tokio::time::sleep(pace.pause).await;
                        }
                    }
                    // Past the batch timeout: cancelled, its locks released. Halve and go on;
                    // only a batch of the smallest size that still cannot finish counts as a
                    // failed attempt (a writer holding its rows, a server far too busy).
                    Err(e)
                        if is_statement_timeout(&e)
                            && (batch_size > self.options.min_batch_size
                                || too_slow < self.ddl.max_attempts) =>
                    {
                        // The cancelled batch wrote WAL too: no window of others' WAL here.
                        pacing.interrupted();
                        if batch_size <= self.options.min_batch_size {
                            too_slow += 1;
                            tokio::time::sleep(
                                (self.ddl.initial_backoff * too_slow).min(self.ddl.max_backoff),
                            )
                            .await;
                        } else {
                            tokio::time::sleep(self.options.pause_after(t0.elapsed())).await;
                        }
                        warn!(
                            batch_size,
                            timeout_ms = self.options.batch_timeout.as_millis() as u64,
                            "batch cancelled past the batch timeout; retrying at half the size"
                        );
                        batch_size = (batch_size / 2).max(self.options.min_batch_size);
                    }
                    Err(e) if is_retryable(&e) && attempts < self.ddl.max_attempts => {
                        attempts += 1;
                        pacing.interrupted();
                        // Rows of this batch are locked by a long writer: smaller batch, try again.
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
                    Err(source) => {
                        return Err(ErrorKind::Statement {
                            step: ids.clone(),
                            phase: Phase::Backfill.to_string(),
                            table: model.qualified_name(),
                            source,
                        }
                        .into());
                    }
                }
            }
            self.remaining(0);
            info!(
                rows = done,
                seconds = started.elapsed().as_secs_f64(),
                "backfill complete"
            );
            Ok(true)
        }
        .instrument(span)
        .await
    }

    /// Logs and journals (for every step of the pass, so `Evolution::status()` shows it) the
    /// application's own triggers on the table: those every batch fires, or, with
    /// `skip_user_triggers`, those it skips. Nothing is recorded for a table without any.
    async fn announce_triggers(&self) -> Result<()> {
        let skip = self.options.skip_user_triggers;
        let mut conn = self.pool.acquire().await?;
        let triggers =
            crate::plan::read_batch_triggers(&mut conn, self.model, self.fills, skip).await?;
        if triggers.fired.is_empty() && triggers.not_fired.is_empty() {
            return Ok(());
        }
        let (fired, not_fired) = (triggers.fired_list(), triggers.not_fired_list());
        let (fired, not_fired) = (fired.as_str(), not_fired.as_str());
        let event = if skip {
            info!(skipped = %not_fired, still_fired = %fired, "backfill batches run with session_replication_role = replica: user triggers skipped");
            Event::BackfillSkipsTriggers { fired, not_fired }
        } else {
            if !triggers.fired.is_empty() {
                warn!(triggers = %fired, "every backfill batch fires these user triggers for the rows it fills; BackfillOptions::skip_user_triggers skips them");
            }
            Event::BackfillFiresTriggers { fired, not_fired }
        };
        drop(conn);
        self.journal(&event).await
    }

    /// Journals `event` for every step of the pass, in one message.
    async fn journal(&self, event: &Event<'_>) -> Result<()> {
        journal_steps(self.pool, self.store, &self.steps(), self.instance, event).await
    }

    fn steps(&self) -> Vec<&str> {
        self.fills.iter().map(|f| f.step.as_str()).collect()
    }

    /// Where the pass starts: the recorded checkpoint and upper bound when every step of the
    /// pass shares them (a pass interrupted earlier), else from the start up to the highest key
    /// now. Starting again is always safe: a batch only fills rows whose column is `NULL`, and
    /// rows above any recorded bound were filled by the triggers. `None`: the table is empty.
    async fn start(&self) -> Result<Option<(Option<Vec<String>>, Vec<String>, i64, i64)>> {
        let model = self.model;
        let mut conn = self.pool.acquire().await?;
        let steps = self.store.steps();
        let recorded = steps.rows(&mut conn).await?;
        let rows: Vec<Option<&StepRow>> =
            self.fills.iter().map(|f| recorded.get(&f.step)).collect();
        let shared = |get: &dyn Fn(&StepRow) -> Option<Vec<String>>| {
            let first = rows[0].and_then(get);
            rows.iter()
                .all(|r| r.and_then(get) == first)
                .then_some(first)
                .flatten()
        };
        let cursor = shared(&|r| r.checkpoint.clone());
        let done = if cursor.is_some() {
            rows.iter()
                .flatten()
                .map(|r| r.rows_done)
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        if let Some(upper) = shared(&|r| r.upper_bound.clone()) {
            let estimate = rows
                .iter()
                .flatten()
                .filter_map(|r| r.rows_estimated)
                .max()
                .unwrap_or(0);
            self.set_estimate(estimate);
            return Ok(Some((cursor, upper, done, estimate)));
        }
        let bound: Option<Vec<String>> =
            sqlx::query_scalar(AssertSqlSafe(&*sql::backfill::upper_bound(model)))
                .fetch_optional(&mut *conn)
                .await?;
        let Some(bound) = bound else {
            return Ok(None);
        };
        let estimate: i64 = sqlx::query_scalar(sql::backfill::estimate_rows())
            .bind(model.schema)
            .bind(model.table)
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or(0);
        let estimate = if estimate >= 0 {
            estimate
        } else {
            sqlx::query_scalar(AssertSqlSafe(&*sql::backfill::count_rows(model)))
                .fetch_one(&mut *conn)
                .await?
        };
        // One transaction for every step of the pass: a crash between two of them would leave
        // bounds that differ, and every later resume would start again from the first key.
        let mut tx = conn.begin().await?;
        for (i, fill) in self.fills.iter().enumerate() {
            if i == 1 {
                crate::failpoint::pause_at("backfill-bounds").await;
            }
            steps
                .start_backfill(&mut tx, &fill.step, &bound, estimate)
                .await?;
        }
        tx.commit().await?;
        self.set_estimate(estimate);
        Ok(Some((None, bound, 0, estimate)))
    }

    fn set_estimate(&self, estimate: i64) {
        self.progress.set_estimate(|id| self.in_pass(id), estimate);
    }

    /// The [`telemetry::ROWS_REMAINING`] gauge of every step of the pass.
    fn remaining(&self, rows: i64) {
        let table = self.model.qualified_name();
        for fill in self.fills {
            telemetry::rows_remaining(fill.step.as_str(), &table, rows);
        }
    }

    /// Every step of the pass reports the rows the pass filled.
    fn report(&self, done: i64, rate: f64) {
        self.progress.set_rows(|id| self.in_pass(id), done, rate);
    }

    fn in_pass(&self, step: &crate::step::StepId) -> bool {
        self.fills.iter().any(|f| &f.step == step)
    }
}

/// Where a walk in batches reports how its WAL paced it (`pacing::PassPacing`): the metrics of
/// `table` after every batch, and the first time the budget set the pace, the log and the
/// journal of `steps` (`backfill paced on wal`). Shared by the SQL pass, the computed walk
/// (`computed.rs`) and the key widening's referencing fill (`evolver/widen_key.rs`).
pub(crate) struct WalReport<'a> {
    pub pool: &'a PgPool,
    pub store: &'a StateStore,
    pub steps: Vec<&'a str>,
    pub instance: &'a str,
    pub table: &'a str,
    /// `BackfillOptions::wal_budget`, 0 without one.
    pub budget: u64,
    /// What a batch's size counts: `rows`, `heap pages`.
    pub unit: &'static str,
}

impl WalReport<'_> {
    /// After a batch of `size` that `after` paced.
    pub async fn after(&self, size: u32, after: &AfterBatch) -> Result<()> {
        let pace = after.pace;
        telemetry::batch_wal(self.table, after.wal, pace.wal_bound);
        if !after.first_wal_bound {
            return Ok(());
        }
        info!(
            budget_bytes_per_second = self.budget,
            batch_size = size,
            unit = self.unit,
            batch_wal_bytes = after.wal,
            pause_ms = pace.pause.as_millis() as u64,
            next_batch_size = pace.next_size,
            "backfill paced on its WAL budget (BackfillOptions::wal_budget)"
        );
        let event = Event::WalPaced {
            budget: self.budget,
            size: i64::from(size),
            unit: self.unit,
            wal: after.wal,
            pause: pace.pause,
            next_size: pace.next_size,
        };
        journal_steps(self.pool, self.store, &self.steps, self.instance, &event).await
    }
}

/// The WAL position a walk's result `rows` carry in `column` (`sql::backfill::WAL_START`,
/// `WAL_END`), if any.
fn wal_position(rows: &[PgRow], column: &str) -> Option<i64> {
    rows.iter().find_map(|r| r.try_get::<i64, _>(column).ok())
}

/// A batch's WAL window from the results of its `sql::backfill::wal_start` (`start`) and
/// `wal_end` (`end`), the first read at `at` and the second `took` later; `None` unless both
/// positions were read.
pub(crate) fn wal_window(
    start: &[PgRow],
    end: &[PgRow],
    at: Instant,
    took: Duration,
) -> Option<WalWindow> {
    Some(WalWindow {
        start: wal_position(start, sql::backfill::WAL_START)?,
        end: wal_position(end, sql::backfill::WAL_END)?,
        at,
        took,
    })
}

/// What one batch did.
struct Batch {
    filled: i64,
    /// The batch's last key, the next cursor.
    last: Vec<String>,
    /// The WAL positions before and after the batch's statement, when both were read.
    wal: Option<(i64, i64)>,
}

/// One batch (see `sql::backfill::batch`); `None` when no key is left. Its result sets are
/// told apart by their columns: `wal_start`, then `filled` and `last_key`, then `wal_end`.
async fn batch(conn: &mut PgConnection, sql: &str) -> sqlx::Result<Option<Batch>> {
    let rows = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(conn).await?;
    let Some(row) = rows.iter().find(|r| r.try_get::<i64, _>("filled").is_ok()) else {
        return Err(sqlx::Error::RowNotFound);
    };
    let filled: i64 = row.try_get("filled")?;
    let last: Option<Vec<String>> = row.try_get("last_key")?;
    let wal = match (
        wal_position(&rows, crate::sql::backfill::WAL_START),
        wal_position(&rows, crate::sql::backfill::WAL_END),
    ) {
        (Some(start), Some(end)) => Some((start, end)),
        _ => None,
    };
    Ok(last.map(|last| Batch { filled, last, wal }))
}
