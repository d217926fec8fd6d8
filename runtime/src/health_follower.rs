//! What a backfill does with the health verdict (`health.rs`) before each batch, the same for
//! every walk in batches (through `batch_gate.rs`: SQL passes, columns computed in Rust, a
//! widened key's referencing fill, paced counts): a breach starts
//! (or changes) a wait that is logged, journaled for every step of the pass, recorded in
//! `health_pauses` for `pgevolve status`, and shown in the [`telemetry::PAUSED`] gauge; the
//! first verdict back within the bounds ends it the same ways. Only the decision to wait is
//! returned: the caller keeps checking its lease while it waits.

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, PgPool};
use tracing::info;

use crate::error::Result;
use crate::health::{Breach, Health, Verdict};
use crate::options::HealthBounds;
use crate::state::{Event, StateStore};
use crate::telemetry;

/// The health of the database as one pass follows it.
pub(crate) struct HealthFollower<'a> {
    pool: &'a PgPool,
    store: &'a StateStore,
    /// The steps of the pass: each gets the journal entries and the `health_pauses` row.
    steps: Vec<&'a str>,
    instance: &'a str,
    /// The table, for the gauge.
    table: String,
    health: Health,
    /// How long a wait sleeps before the verdict is read again.
    interval: Duration,
    /// The wait under way: since when, and for which reason.
    paused: Option<(&'static str, Instant)>,
}

impl<'a> HealthFollower<'a> {
    pub fn new(
        pool: &'a PgPool,
        store: &'a StateStore,
        steps: Vec<&'a str>,
        instance: &'a str,
        table: String,
        bounds: HealthBounds,
    ) -> HealthFollower<'a> {
        HealthFollower {
            pool,
            store,
            steps,
            instance,
            table,
            interval: bounds.interval,
            health: Health::new(bounds),
            paused: None,
        }
    }

    /// The steps of the pass.
    pub fn steps(&self) -> &[&'a str] {
        &self.steps
    }

    /// How long a wait sleeps before the verdict is read again (`HealthBounds::interval`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reads the verdict (at most once per interval, see `Health`) and acts on it. Returns the
    /// verdict, whose slowdown stretches the pause after the next batch, and whether to wait
    /// instead of running it. `done`: rows filled so far, for the log and the journal.
    pub async fn before_batch(&mut self, done: i64) -> Result<(Verdict, bool)> {
        let verdict = self.health.verdict(self.pool).await.clone();
        let wait = match (&verdict, self.paused) {
            (Verdict::Pause(breach), current) => {
                let reason = breach.signal.reason();
                if current.is_none_or(|(r, _)| r != reason) {
                    self.start(breach, done).await?;
                    let since = current.map_or_else(Instant::now, |(_, since)| since);
                    self.paused = Some((reason, since));
                }
                true
            }
            (_, Some((reason, since))) => {
                let waited = since.elapsed();
                info!(
                    reason,
                    rows = done,
                    waited_seconds = waited.as_secs_f64(),
                    "backfill resumed: back within its health bounds"
                );
                self.end().await?;
                self.journal(&Event::HealthResumed {
                    reason,
                    paused: waited,
                    rows: done,
                })
                .await?;
                false
            }
            (_, None) => false,
        };
        Ok((verdict, wait))
    }

    /// Forgets a wait: the pass stops, or starts and finds one left by an instance that died
    /// while paused.
    pub async fn end(&mut self) -> Result<()> {
        self.paused = None;
        telemetry::paused(&self.table, None);
        let sql = self.store.health_pauses().clear_sql(&self.steps);
        self.write(sql).await
    }

    /// Journals `event` for every step of the pass, in one message.
    pub async fn journal(&self, event: &Event<'_>) -> Result<()> {
        journal_steps(self.pool, self.store, &self.steps, self.instance, event).await
    }

    async fn start(&self, breach: &Breach, done: i64) -> Result<()> {
        let reason = breach.signal.reason();
        let detail = breach.to_string();
        info!(
            reason,
            rows = done,
            "backfill paused: {detail}; it goes on by itself once back within the bound"
        );
        telemetry::paused(&self.table, Some(reason));
        let sql = self
            .store
            .health_pauses()
            .record_sql(&self.steps, reason, &detail);
        self.write(sql).await?;
        self.journal(&Event::HealthPaused {
            reason,
            detail: &detail,
            rows: done,
        })
        .await
    }

    async fn write(&self, sql: String) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
            Ok(_) => Ok(()),
            // A store bootstrapped by an older build (no `health_pauses` table): the log and
            // the journal still say it.
            Err(e) if crate::state::instances::is_missing_table(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Journals `event` for each of `steps`, in one message.
pub(crate) async fn journal_steps(
    pool: &PgPool,
    store: &StateStore,
    steps: &[&str],
    instance: &str,
    event: &Event<'_>,
) -> Result<()> {
    let journal = store.journal();
    let sql = steps
        .iter()
        .map(|step| journal.insert_sql(Some(step), event, instance))
        .collect::<Vec<_>>()
        .join(";\n");
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
