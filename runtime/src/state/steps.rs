//! Rows of the `steps` table.

use sqlx::AssertSqlSafe;
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
        Ok(rows
            .into_iter()
            .map(|r| {
                let row = StepRow {
                    phase: Phase::parse(r.get::<String, _>(1).as_str()).unwrap_or(Phase::Pending),
                    checkpoint: r.get(2),
                    upper_bound: r.get(3),
                    rows_done: r.get(4),
                    rows_estimated: r.get(5),
                };
                (StepId::from_stored(r.get(0)), row)
            })
            .collect())
    }

    pub async fn get(&self, conn: &mut PgConnection, id: &StepId) -> sqlx::Result<Option<StepRow>> {
        let row = sqlx::query(AssertSqlSafe(&*format!(
            "SELECT phase, checkpoint, upper_bound, rows_done, rows_estimated FROM {} WHERE id = $1",
            self.store.table("steps")
        )))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
        Ok(row.map(|r| StepRow {
            phase: Phase::parse(r.get::<String, _>(0).as_str()).unwrap_or(Phase::Pending),
            checkpoint: r.get(1),
            upper_bound: r.get(2),
            rows_done: r.get(3),
            rows_estimated: r.get(4),
        }))
    }

    /// Upsert that records `phase` as completed; SQL text so it commits with the phase's DDL.
    /// An aborted step stays aborted: a leader that finished a phase of a step another instance
    /// aborted meanwhile records nothing.
    pub fn record_phase_sql(&self, step: &PlannedStep, phase: Phase) -> String {
        format!(
            "INSERT INTO {} AS s (id, model, table_schema, table_name, column_name, kind, description, phase, object_name) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}) \
             ON CONFLICT (id) DO UPDATE SET phase = EXCLUDED.phase, object_name = EXCLUDED.object_name, updated_at = now() \
             WHERE s.phase <> 'aborted' OR EXCLUDED.phase = 'aborted'",
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

    /// Records `phase` for a step the state store does not know yet (satisfied by the catalog
    /// before pgevolve ran it), so every instance reads the same phases from the store.
    pub fn record_if_missing_sql(&self, step: &PlannedStep, phase: Phase) -> String {
        let upsert = self.record_phase_sql(step, phase);
        let cut = upsert.find(" ON CONFLICT").unwrap_or(upsert.len());
        format!("{} ON CONFLICT (id) DO NOTHING", &upsert[..cut])
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
            "SELECT id, model, table_schema || '.' || table_name, description, phase, rows_done, rows_estimated, \
             updated_at::text FROM {} ORDER BY created_at, id",
            self.store.table("steps")
        )))
        .fetch_all(conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| StepStatus {
                id: StepId::from_stored(r.get(0)),
                model: r.get(1),
                table: r.get(2),
                description: r.get(3),
                phase: Phase::parse(r.get::<String, _>(4).as_str()).unwrap_or(Phase::Pending),
                rows_done: r.get(5),
                rows_estimated: r.get(6),
                updated_at: r.get(7),
                history: Vec::new(),
            })
            .collect())
    }
}
