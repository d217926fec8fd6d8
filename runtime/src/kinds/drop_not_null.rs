//! NOT NULL off, declared with `#[evolve(drop_not_null)]` on an `Option<T>` field over a NOT
//! NULL column. Builds that read the column into a `T` fail on a NULL, so NOT NULL stays (and
//! refuses the new build's NULLs) until every live instance acknowledged the step; then `DROP
//! NOT NULL` at contract, metadata only. Nothing changes before contract, so an abort has no
//! DDL to run.

use super::resolving::BoxFuture;
use super::{Kind, PlannedPhase, Resolving, Shown};
use crate::error::Result;
use crate::spec::{ColumnSpec, ModelSpec};
use crate::sql::not_null;
use crate::step::{Phase, StepId};

pub(crate) struct DropNotNull(pub &'static ColumnSpec);

impl Kind for DropNotNull {
    fn name(&self) -> &'static str {
        "drop_not_null"
    }

    fn identity(&self) -> Vec<&'static str> {
        vec![self.0.name, self.0.sql_type]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand, Phase::Retire, Phase::Contract]
    }

    fn plan(&self, model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "no DDL: NOT NULL stays, so a NULL the new build writes is refused while builds that read the \
                       column into a non-Option field may run",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Retire,
                note: "no DDL: contract waits until every live instance acknowledged, so no build that cannot read \
                       NULL is running",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Contract,
                note: "gated (deploy window, explicit contract() or auto_contract), after every acknowledgement; \
                       one short transaction: DROP NOT NULL (metadata only, no scan)",
                statements: not_null::contract_drop(model, self.0),
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!("drop not null {}.{}", model.qualified_name(), self.0.name)
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    fn aborts_without_ddl(&self) -> bool {
        true
    }

    /// The recorded phase; with no record, a nullable column needs nothing. A missing column
    /// is drift: `drop_not_null` changes a column, it does not add one.
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        let c = self.0;
        let recorded = cx.recorded_phase();
        let done = match (recorded, cx.live.column(c.name)) {
            (Some(p @ (Phase::Contract | Phase::Aborted)), _) => p,
            (_, None) => {
                cx.missing_column(
                    c.name,
                    c.field,
                    "drop_not_null",
                    "remove `drop_not_null` to add the column nullable",
                );
                recorded.unwrap_or(Phase::Pending)
            }
            (Some(p), Some(_)) => p,
            (None, Some(live)) if !live.not_null => Phase::Contract,
            (None, Some(_)) => Phase::Pending,
        };
        Box::pin(async move { Ok(done) })
    }
}
