//! The recorded plan: every planned step's statements, per phase, as the runtime runs them,
//! so that the `pgevolve` CLI shows the plan from the state store alone, without the
//! application's code.
//!
//! ```text
//! plan(step_id text, phase text, ordinal int, position int, phase_position int,
//!      sql text (NULL: a phase without statements), run text ('transaction' | 'concurrently'),
//!      note text, recorded_at timestamptz, PRIMARY KEY (step_id, phase, ordinal))
//! ```
//!
//! `phase` is one of the step's phases, or `abort` for the statements an abort runs. `note`
//! is the phase's note from the plan: how it runs and the lock it takes. The step's
//! description, kind and table are in `steps`, which has a row for every planned step once a
//! boot has expanded. Recorded by the slow boot under the boot lock, in one statement that
//! writes only what changed (a boot of an unchanged build writes nothing); the fast boot
//! never records (its build's plan was recorded by the slow boot before it).

use sqlx::{AssertSqlSafe, PgConnection};

use super::StateStore;
use crate::plan::Plan;
use crate::statement::Run;

pub(crate) struct PlanRecord<'a> {
    pub store: &'a StateStore,
}

/// The rows of one plan, as columns (bound as arrays).
#[derive(Default)]
struct Rows {
    step: Vec<String>,
    phase: Vec<String>,
    ordinal: Vec<i32>,
    position: Vec<i32>,
    phase_position: Vec<i32>,
    sql: Vec<Option<String>>,
    run: Vec<&'static str>,
    note: Vec<String>,
}

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        step: &str,
        phase: &str,
        ordinal: usize,
        position: usize,
        phase_position: usize,
        sql: Option<&str>,
        run: Run,
        note: &str,
    ) {
        self.step.push(step.to_string());
        self.phase.push(phase.to_string());
        self.ordinal.push(ordinal as i32);
        self.position.push(position as i32);
        self.phase_position.push(phase_position as i32);
        self.sql.push(sql.map(str::to_string));
        self.run.push(run_text(run));
        self.note.push(note.to_string());
    }
}

/// The `run` column.
fn run_text(run: Run) -> &'static str {
    match run {
        Run::InTransaction => "transaction",
        Run::Concurrently => "concurrently",
    }
}

/// The note of the abort rows.
const ABORT_NOTE: &str = "on request, before contract: short transactions under lock_timeout \
                          (statements marked concurrently run outside any transaction)";

impl PlanRecord<'_> {
    pub fn bootstrap_sql(&self) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (
                step_id text NOT NULL,
                phase text NOT NULL,
                ordinal int NOT NULL,
                position int NOT NULL,
                phase_position int NOT NULL,
                sql text,
                run text NOT NULL,
                note text NOT NULL,
                recorded_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (step_id, phase, ordinal)
            )",
            self.store.table("plan")
        )]
    }

    /// Records every step of `plans`: rows that changed are updated, rows a step no longer has
    /// are deleted, in one statement.
    pub async fn record(&self, conn: &mut PgConnection, plans: &[Plan]) -> sqlx::Result<()> {
        let mut rows = Rows::default();
        for (position, step) in plans.iter().flat_map(|p| &p.steps).enumerate() {
            let id = step.id.as_str();
            for (phase_position, phase) in step.phases.iter().enumerate() {
                let name = phase.phase.as_str();
                if phase.statements.is_empty() {
                    rows.push(
                        id,
                        name,
                        0,
                        position,
                        phase_position,
                        None,
                        Run::InTransaction,
                        phase.note,
                    );
                }
                for (ordinal, statement) in phase.statements.iter().enumerate() {
                    rows.push(
                        id,
                        name,
                        ordinal,
                        position,
                        phase_position,
                        Some(&statement.sql),
                        statement.run,
                        phase.note,
                    );
                }
            }
            for (ordinal, statement) in step.abort.iter().enumerate() {
                rows.push(
                    id,
                    "abort",
                    ordinal,
                    position,
                    step.phases.len(),
                    Some(&statement.sql),
                    statement.run,
                    ABORT_NOTE,
                );
            }
        }
        let table = self.store.table("plan");
        sqlx::query(AssertSqlSafe(format!(
            "WITH new AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[], $6::text[], $7::text[], $8::text[])
                     AS n(step_id, phase, ordinal, position, phase_position, sql, run, note)
             ), gone AS (
                 DELETE FROM {table} p WHERE p.step_id IN (SELECT step_id FROM new)
                    AND NOT EXISTS (SELECT FROM new n WHERE n.step_id = p.step_id AND n.phase = p.phase AND n.ordinal = p.ordinal)
             )
             INSERT INTO {table} AS p (step_id, phase, ordinal, position, phase_position, sql, run, note)
             SELECT * FROM new
             ON CONFLICT (step_id, phase, ordinal) DO UPDATE SET position = EXCLUDED.position,
                 phase_position = EXCLUDED.phase_position, sql = EXCLUDED.sql, run = EXCLUDED.run,
                 note = EXCLUDED.note, recorded_at = now()
             WHERE (p.position, p.phase_position, p.sql, p.run, p.note)
                 IS DISTINCT FROM (EXCLUDED.position, EXCLUDED.phase_position, EXCLUDED.sql, EXCLUDED.run, EXCLUDED.note)"
        )))
        .bind(&rows.step)
        .bind(&rows.phase)
        .bind(&rows.ordinal)
        .bind(&rows.position)
        .bind(&rows.phase_position)
        .bind(&rows.sql)
        .bind(&rows.run)
        .bind(&rows.note)
        .execute(conn)
        .await?;
        Ok(())
    }
}
