//! Rows of the `steps` table.

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::StateStore;
use crate::plan::PlannedStep;
use crate::sql::lit;
use crate::step::{Phase, StepId};

/// A step as the state store has it.
#[derive(Debug, Clone)]
pub(crate) struct StepRow {
    pub phase: Phase,
    pub checkpoint: Option<Vec<String>>,
    pub upper_bound: Option<Vec<String>>,
    pub rows_done: i64,
    pub rows_estimated: Option<i64>,
}

/// A step's recorded status, for operators and dashboards.
#[derive(Debug, Clone)]
pub struct StepStatus {
    /// The step id.
    pub id: StepId,
    /// Model (Rust struct) name.
    pub model: String,
    /// `schema.table`.
    pub table: String,
    /// What the step does.
    pub description: String,
    /// The last phase it completed.
    pub phase: Phase,
    /// Rows the backfill filled so far.
    pub rows_done: i64,
    /// Rows the table was estimated to hold when the backfill started.
    pub rows_estimated: Option<i64>,
    /// Last change, as PostgreSQL formats it.
    pub updated_at: String,
    /// Who did what to the step, and when, oldest first.
    pub history: Vec<super::JournalEntry>,
}

pub(crate) struct Steps<'a> {
    pub store: &'a StateStore,
}

impl Steps<'_> {
    /// Every recorded step, in one query (boot reads them all at once).
    pub async fn rows(
        &self,
        conn: &mut PgConnection,
    ) -> sqlx::Result<std::collections::HashMap<StepId, StepRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, phase, checkpoint, upper_bound, rows_done, rows_estimated FROM {}",
            self.store.table("steps")
        )))
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|r| Ok((StepId::from_stored(r.try_get("id")?), StepRow::read(r)?)))
            .collect()
    }

    pub async fn get(&self, conn: &mut PgConnection, id: &StepId) -> sqlx::Result<Option<StepRow>> {
        let row = sqlx::query(AssertSqlSafe(&*format!(
            "SELECT phase, checkpoint, upper_bound, rows_done, rows_estimated FROM {} WHERE id = $1",
            self.store.table("steps")
        )))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(StepRow::read).transpose()
    }

    /// Upsert that records `phase` as completed; SQL text so it commits with the phase's DDL.
    /// An aborted step stays aborted: a leader that finished a phase of a step another instance
    /// aborted meanwhile records nothing.
    pub fn record_phase_sql(&self, step: &PlannedStep, phase: Phase) -> String {
        format!(
            "{} ON CONFLICT (id) DO UPDATE SET phase = EXCLUDED.phase, object_name = EXCLUDED.object_name, updated_at = now() \
             WHERE s.phase <> 'aborted' OR EXCLUDED.phase = 'aborted'",
            self.insert_sql(step, phase)
        )
    }

    /// Forgets the step `id` (SQL text, to commit with the DDL that made it moot): an index step
    /// of an earlier build whose index the contract dropped, so it is not found again.
    pub fn forget_sql(&self, id: &str) -> String {
        format!(
            "DELETE FROM {} WHERE id = {}",
            self.store.table("steps"),
            crate::sql::lit(id)
        )
    }

    /// Records `phase` for a step the state store does not know yet (satisfied by the catalog
    /// before pgevolve ran it), so every instance reads the same phases from the store.
    pub fn record_if_missing_sql(&self, step: &PlannedStep, phase: Phase) -> String {
        format!(
            "{} ON CONFLICT (id) DO NOTHING",
            self.insert_sql(step, phase)
        )
    }

    /// The `INSERT` of a step's row at `phase`, without its conflict clause.
    fn insert_sql(&self, step: &PlannedStep, phase: Phase) -> String {
        format!(
            "INSERT INTO {} AS s (id, model, table_schema, table_name, column_name, kind, description, phase, object_name) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {})",
            self.store.table("steps"),
            lit(step.id.as_str()),
            lit(step.model.rust_name),
            lit(step.model.schema),
            lit(step.model.table),
            step.kind
                .column()
                .map(|c| lit(c.name))
                .unwrap_or_else(|| "NULL".into()),
            lit(step.kind.name()),
            lit(&step.describe()),
            lit(phase.as_str()),
            step.object_name()
                .map(|n| lit(&n))
                .unwrap_or_else(|| "NULL".into()),
        )
    }

    /// Records a step's progress in a fill that keeps no checkpoint (`$1` the step, `$2` rows
    /// done, `$3` rows estimated), in the fill's batch transaction: the key widening's fills of
    /// the referencing tables.
    pub fn rows_sql(&self) -> String {
        format!(
            "UPDATE {} SET rows_done = $2, rows_estimated = $3, updated_at = now() WHERE id = $1",
            self.store.table("steps")
        )
    }

    /// Starts a backfill: records the upper bound and estimate. Called for every step of a pass
    /// in one transaction, and only when their bounds differ, so a pass's steps always share one.
    pub async fn start_backfill(
        &self,
        conn: &mut PgConnection,
        id: &StepId,
        upper: &[String],
        estimate: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(AssertSqlSafe(&*format!(
            "UPDATE {} SET upper_bound = $2, rows_estimated = $3, updated_at = now() WHERE id = $1",
            self.store.table("steps")
        )))
        .bind(id.as_str())
        .bind(upper)
        .bind(estimate)
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn all(&self, conn: &mut PgConnection) -> sqlx::Result<Vec<StepStatus>> {
        let rows = sqlx::query(AssertSqlSafe(&*format!(
            "SELECT id, model, table_schema || '.' || table_name AS qualified, description, phase, rows_done, \
             rows_estimated, updated_at::text AS updated_at FROM {} ORDER BY created_at, id",
            self.store.table("steps")
        )))
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StepStatus {
                    id: StepId::from_stored(r.try_get("id")?),
                    model: r.try_get("model")?,
                    table: r.try_get("qualified")?,
                    description: r.try_get("description")?,
                    phase: stored_phase(r)?,
                    rows_done: r.try_get("rows_done")?,
                    rows_estimated: r.try_get("rows_estimated")?,
                    updated_at: r.try_get("updated_at")?,
                    history: Vec::new(),
                })
            })
            .collect()
    }
}

impl StepRow {
    fn read(r: &PgRow) -> sqlx::Result<StepRow> {
        Ok(StepRow {
            phase: stored_phase(r)?,
            checkpoint: r.try_get("checkpoint")?,
            upper_bound: r.try_get("upper_bound")?,
            rows_done: r.try_get("rows_done")?,
            rows_estimated: r.try_get("rows_estimated")?,
        })
    }
}

/// The `phase` column of a row: a value this build does not know (written by a newer build, or
/// by hand) is an error that names it, never read as some other phase.
fn stored_phase(r: &PgRow) -> sqlx::Result<Phase> {
    let text: String = r.try_get("phase")?;
    Phase::parse(&text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "phase".into(),
        source: format!(
            "unknown phase {text:?} in the state store (written by a newer pgevolve, or by hand?)"
        )
        .into(),
    })
}
