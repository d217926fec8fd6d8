//! A changed default of an existing column, declared with `#[evolve(set_default = "...")]`:
//! `SET DEFAULT` at expand, metadata only (a brief lock under lock_timeout, no scan, whatever
//! the expression: a default applies to rows inserted later). One phase, done at boot: writers
//! that leave the column out (raw SQL, other services) get the new default from then on; the
//! accessors of every build write every field and never rely on it.

use super::resolving::BoxFuture;
use super::{Kind, PlannedPhase, Resolving, Shown};
use crate::error::Result;
use crate::spec::{ColumnSpec, ModelSpec};
use crate::sql::default;
use crate::step::{Phase, StepId};

pub(crate) struct SetDefault(pub &'static ColumnSpec);

impl SetDefault {
    fn expr(&self) -> &'static str {
        self.0.set_default.unwrap_or("NULL")
    }
}

impl Kind for SetDefault {
    fn name(&self) -> &'static str {
        "set_default"
    }

    fn identity(&self) -> Vec<&'static str> {
        vec![self.0.name, self.expr()]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand]
    }

    fn plan(&self, model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![PlannedPhase {
            phase: Phase::Expand,
            note: "metadata only, one short transaction under lock_timeout: rows inserted from now on without the \
                   column get the new default; existing rows keep their values",
            statements: default::set_default(model, self.0.name, self.expr()),
        }]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "set default {}.{} to {}",
            model.qualified_name(),
            self.0.name,
            self.expr()
        )
    }

    /// Recorded: done. The column's default already printed as declared: done. A missing
    /// column is drift (`set_default` changes a column, `default` adds one); an expression
    /// PostgreSQL refuses as the column's default is drift too, found before any DDL.
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let c = self.0;
            if let Some(p) = cx.recorded_phase() {
                return Ok(p);
            }
            let Some(live) = cx.live.column(c.name) else {
                cx.missing_column(
                    c.name,
                    c.field,
                    "set_default",
                    "to add the column with a default write `default = \"...\"` instead",
                );
                return Ok(Phase::Pending);
            };
            if live.default.as_deref() == Some(self.expr()) {
                return Ok(Phase::Expand);
            }
            if let Err(message) =
                crate::catalog::default_is_metadata_only(&mut *cx.conn, c.sql_type, self.expr())
                    .await?
            {
                cx.problems.add(
                    Some(c.name),
                    format!(
                        "`set_default = \"{}\"` is not a valid default for a `{}` column: {message}; fix the expression",
                        self.expr(),
                        c.sql_type
                    ),
                );
            }
            Ok(Phase::Pending)
        })
    }
}
