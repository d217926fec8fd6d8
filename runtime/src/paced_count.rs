//! A validate phase's data check (rows that must not exist) counted one key range at a time,
//! with the backfill's pause between ranges, instead of in one scan of the whole table at full
//! speed: on a small server that scan took the workload's CPU and disk for as long as it ran
//! (issue #13: the p99 of the validate phases). Before each range it checks what a backfill
//! checks before each batch (`batch_gate.rs`): a stop, the database's health (a breach waits),
//! the lease, an abort of the step by another instance and an operator's pause. A count that
//! stops gives no verdict and leaves nothing behind: the phase is not recorded, and counts
//! again from the first key when it runs next.
//!
//! The verdict is the full count's: every row present when the count starts is read (the walk
//! goes up the primary key to the end of the table, each range in a snapshot of its own), and
//! a row written meanwhile is read too when it lands above the cursor; one written below the
//! cursor after its range was read is not, as a one-statement count does not see a row written
//! after its snapshot was taken. The sync triggers keep both columns in step for every later
//! write, so what the count proves, the absence of rows that differ, holds from then on either
//! way.

use std::time::Instant;

use sqlx::{AssertSqlSafe, PgPool, Row};
use tracing::debug;

use crate::batch_gate::{BatchGate, Next, Stop};
use crate::error::Result;
use crate::options::BackfillOptions;
use crate::pacing::Pacer;
use crate::spec::ModelSpec;
use crate::sql;

/// Reading a key range costs far less than filling it: ranges start and stay this many times
/// the batch sizes.
const READ_FACTOR: u32 = 10;

/// The rows of `model`'s table matching `condition`, counted in paced key ranges.
pub(crate) struct PacedCount<'a> {
    pub pool: &'a PgPool,
    pub model: &'a ModelSpec,
    pub condition: &'a str,
    /// The backfill's options: their duty cycle and target duration pace the ranges.
    pub options: &'a BackfillOptions,
    /// Checked before every range, as before a backfill's batches: the stop flag, the
    /// database's health, the lease, an abort of the step, an operator's pause.
    pub gate: BatchGate<'a>,
}

/// How a paced count ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// It read every range: the matching rows, and the ranges read.
    Done { matching: i64, ranges: u32 },
    /// It stopped before a range (see [`Stop`]): no verdict. The count writes nothing, so
    /// nothing is left half-done; the phase counts again from the first key when it runs next.
    Stopped(Stop),
}

impl PacedCount<'_> {
    /// Whether counting in ranges paces anything: a table with a primary key to walk, under a
    /// duty cycle below one (an unthrottled evolution counts in one scan, the quickest).
    pub fn applies(model: &ModelSpec, options: &BackfillOptions) -> bool {
        model.primary_key().next().is_some() && options.duty_cycle < 1.0
    }

    /// Counts, range after range, until the end of the table or a reason to stop.
    pub async fn run(mut self) -> Result<Counted> {
        let o = self.options;
        let ranges = BackfillOptions {
            initial_batch_size: o.initial_batch_size.saturating_mul(READ_FACTOR),
            min_batch_size: o.min_batch_size.saturating_mul(READ_FACTOR),
            max_batch_size: o.max_batch_size.saturating_mul(READ_FACTOR),
            // Reads write no WAL worth pacing.
            wal_budget: None,
            ..o.clone()
        };
        let pacer = Pacer { options: &ranges };
        let mut size = ranges.initial_batch_size.max(1);
        let mut cursor: Option<Vec<String>> = None;
        // Rows read so far, for the health follower's log and journal.
        let (mut matching, mut read, mut scanned_total) = (0i64, 0u32, 0i64);
        let mut conn = self.pool.acquire().await?;
        self.gate.start().await?;
        loop {
            // A range only reads: it runs on a connection of the pool, not the lease's session.
            let slowdown = match self.gate.before_batch(scanned_total).await? {
                Next::Run { verdict, .. } => verdict.slowdown(),
                Next::Stop(why) => return Ok(Counted::Stopped(why)),
            };
            let query =
                sql::verify::range_count(self.model, self.condition, cursor.as_deref(), size);
            let t0 = Instant::now();
            let rows = sqlx::raw_sql(AssertSqlSafe(query))
                .fetch_all(&mut *conn)
                .await?;
            let Some(row) = rows.iter().find(|r| r.try_get::<i64, _>("scanned").is_ok()) else {
                return Err(sqlx::Error::RowNotFound.into());
            };
            let violations: i64 = row.try_get("violations")?;
            let scanned: i64 = row.try_get("scanned")?;
            let last: Option<Vec<String>> = row.try_get("last_key")?;
            matching += violations;
            read += 1;
            scanned_total += scanned;
            match last {
                Some(last) if scanned >= i64::from(size) => cursor = Some(last),
                // A short range: the end of the table.
                _ => break,
            }
            // Tests hold the count here, between two ranges.
            crate::failpoint::pause_at("paced-count-range").await;
            let pace = pacer.after(size, t0.elapsed(), None, slowdown);
            size = pace.next_size;
            if !pace.pause.is_zero() {
                tokio::time::sleep(pace.pause).await;
            }
        }
        debug!(
            table = %self.model.qualified_name(),
            ranges = read,
            matching,
            "paced count done"
        );
        Ok(Counted::Done {
            matching,
            ranges: read,
        })
    }
}
