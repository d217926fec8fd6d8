//! The validate phase of a foreign key or CHECK added `NOT VALID`: `VALIDATE CONSTRAINT` under
//! the executor's lock policy (SHARE UPDATE EXCLUSIVE: reads and writes go on). When existing
//! rows violate the constraint, it is dropped again (nothing else was changed), the step goes
//! back to pending, and the error lists a few of those rows.

use sqlx::{AssertSqlSafe, Connection, PgPool, Row};
use tracing::warn;

use crate::concurrent::EXAMPLES;
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Executor, Target};
use crate::plan::PlannedStep;
use crate::sql::index;
use crate::state::Event;
use crate::state::StateStore;
use crate::step::Phase;

/// SQLSTATEs of a failed validation: `check_violation`, `foreign_key_violation`.
const VIOLATIONS: [&str; 2] = ["23514", "23503"];

pub(crate) struct Validate<'a> {
    pub pool: &'a PgPool,
    pub executor: &'a Executor,
    pub store: &'a StateStore,
    pub instance: &'a str,
    pub step: &'a PlannedStep,
}

impl Validate<'_> {
    fn target(&self) -> Target<'_> {
        Target {
            step: self.step.id.as_str(),
            phase: Phase::Validate,
            schema: self.step.model.schema,
            table: self.step.model.table,
        }
    }

    /// Validates the constraint; the caller records the phase.
    pub async fn run(&self) -> Result<()> {
        let statements = self.step.statements(Phase::Validate);
        match self
            .executor
            .run(self.target(), statements, &[], true)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_violation(&e) => Err(self.reject(e).await),
            Err(e) => Err(e),
        }
    }

    /// Lists a few violating rows, drops the constraint and puts the step back to pending.
    async fn reject(&self, failure: Error) -> Error {
        let step = self.step;
        let model = &step.model;
        let name = step.object_name().unwrap_or_default();
        let Some(violations) = step.room().violations(model, &step.id, EXAMPLES) else {
            return failure;
        };
        let (what, query) = (violations.what, violations.query);
        let examples = match self.examples(&query).await {
            Ok(rows) if !rows.is_empty() => format!("e.g. {}", rows.join(", ")),
            Ok(_) => format!("none remain now ({failure})"),
            Err(e) => format!("they could not be listed ({e}); PostgreSQL said: {failure}"),
        };
        let record = [
            self.store.steps().record_phase_sql(step, Phase::Pending),
            self.store.journal().insert_sql(
                Some(step.id.as_str()),
                &Event::ValidateFailed {
                    step: &step.describe(),
                },
                self.instance,
            ),
        ];
        let dropped = self
            .executor
            .run(
                self.target(),
                &[index::drop_constraint(model, &name)],
                &record,
                false,
            )
            .await;
        let outcome = match dropped {
            Ok(()) => "the constraint was dropped and nothing else was changed".to_string(),
            Err(e) => {
                warn!(error = %e, "could not drop constraint {name} after its validation failed");
                format!(
                    "the constraint could not be dropped ({e}): it stays NOT VALID, checking new writes only"
                )
            }
        };
        ErrorKind::Verification {
            step: step.id.to_string(),
            phase: Phase::Validate.to_string(),
            table: model.qualified_name(),
            message: format!(
                "{what} does not hold for existing rows, {examples}; {outcome}. Fix those rows (or the \
                 attribute), then boot again"
            ),
        }
        .into()
    }

    /// Runs a violations query (it may scan far: no statement_timeout; ACCESS SHARE only) and
    /// formats each row as `key=value (column = value)`.
    async fn examples(&self, query: &str) -> sqlx::Result<Vec<String>> {
        let model = &self.step.model;
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(AssertSqlSafe(query))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let keys: Vec<&str> = model.primary_key().map(|c| c.name).collect();
        let keys = if keys.is_empty() { vec!["ctid"] } else { keys };
        let column = self
            .step
            .room()
            .violations(model, &self.step.id, EXAMPLES)
            .and_then(|v| v.column);
        Ok(rows
            .iter()
            .map(|r| {
                let key: Vec<Option<String>> = r.get(0);
                let value: Option<String> = r.get(1);
                let key = keys
                    .iter()
                    .zip(key)
                    .map(|(k, v)| format!("{k}={}", v.unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ");
                match (column, value) {
                    (Some(column), Some(value)) => format!("row {key} ({column} = {value})"),
                    _ => format!("row {key}"),
                }
            })
            .collect())
    }
}

fn is_violation(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Statement { source: sqlx::Error::Database(db), .. }
        if db.code().is_some_and(|c| VIOLATIONS.contains(&c.as_ref())))
}
