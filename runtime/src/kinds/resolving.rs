//! What a kind reads to tell how far its step has come: the live table, the state store's
//! records, a connection for catalog queries, and where drift goes. Every kind's `progress`
//! runs before any DDL, so it only reads.

use std::future::Future;
use std::pin::Pin;

use sqlx::PgConnection;

use crate::catalog::LiveTable;
use crate::error::DriftProblem;
use crate::spec::ModelSpec;
use crate::state::StepRow;
use crate::step::{Phase, StepId};

/// The recorded steps, by id.
pub(crate) type Recorded = std::collections::HashMap<StepId, StepRow>;

/// A boxed future: the `Kind` trait is used as `dyn Kind`, so its async methods return these.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where drift found while resolving goes, with the table it concerns.
pub(crate) struct Problems<'p> {
    table: String,
    found: &'p mut Vec<DriftProblem>,
}

impl<'p> Problems<'p> {
    pub(crate) fn new(model: &ModelSpec, found: &'p mut Vec<DriftProblem>) -> Problems<'p> {
        Problems {
            table: model.qualified_name(),
            found,
        }
    }

    /// One way the database differs from what the model expects.
    pub(crate) fn add(&mut self, column: Option<&str>, message: String) {
        self.found.push(DriftProblem {
            table: self.table.clone(),
            column: column.map(str::to_string),
            message,
        });
    }
}

/// One step being resolved.
pub(crate) struct Resolving<'c, 'p> {
    pub conn: &'c mut PgConnection,
    pub recorded: &'c Recorded,
    pub model: &'c ModelSpec,
    pub live: &'c LiveTable,
    pub id: &'c StepId,
    /// The names and descriptions of the objects of the model's steps before this one (two
    /// declarations may not take one name).
    pub earlier: &'c [(Option<String>, String)],
    pub problems: &'c mut Problems<'p>,
}

impl Resolving<'_, '_> {
    /// The phase the state store has for the step.
    pub(crate) fn recorded_phase(&self) -> Option<Phase> {
        self.recorded.get(self.id).map(|r| r.phase)
    }
}

impl Resolving<'_, '_> {
    /// Drift for a step that changes an existing column (`attribute` on field `field`) when
    /// the column is missing; `instead` says what adds one.
    pub(crate) fn missing_column(
        &mut self,
        column: &str,
        field: &str,
        attribute: &str,
        instead: &str,
    ) {
        self.problems.add(
            Some(column),
            format!(
                "the column does not exist and field `{field}` is declared `{attribute}`, which changes an existing \
                 column; {instead}"
            ),
        );
    }

    /// Drift when a `backfill = "..."` of `column` cannot run: the table has no primary key for
    /// the batches to walk, or `expr` is not a valid expression over the table.
    pub(crate) async fn check_backfill(
        &mut self,
        column: &str,
        expr: &str,
    ) -> crate::error::Result<()> {
        if self.live.primary_key.is_empty() {
            self.problems.add(
                Some(column),
                "a backfill walks the primary key in batches but the table has none; add a primary key to the table first"
                    .into(),
            );
        }
        let probe = format!(
            "SELECT ({expr}) FROM {} AS {} LIMIT 0",
            crate::ident::Qualified(self.model.schema, self.model.table),
            crate::ident::Ident(self.model.table)
        );
        if let Err(sqlx::Error::Database(e)) = sqlx::query(sqlx::AssertSqlSafe(&*probe))
            .execute(&mut *self.conn)
            .await
        {
            self.problems.add(
                Some(column),
                format!(
                    "`backfill = \"{expr}\"` is not a valid expression over the table: {}; fix the expression",
                    e.message()
                ),
            );
        }
        Ok(())
    }
}
