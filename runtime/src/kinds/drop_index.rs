//! An index an earlier build declared and the struct no longer does: dropped with `DROP INDEX
//! CONCURRENTLY` at contract. The name comes from the state store; these steps are found at
//! contract time and are never part of a model's static plan.

use super::resolving::BoxFuture;
use super::{Kind, PlannedPhase, Resolving, Shown, catalog_object};
use crate::error::Result;
use crate::spec::ModelSpec;
use crate::sql::index;
use crate::step::{Phase, StepId};

pub(crate) struct DropIndex(pub String);

impl Kind for DropIndex {
    fn name(&self) -> &'static str {
        "drop_index"
    }

    fn identity(&self) -> Vec<&str> {
        vec![&self.0]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Contract]
    }

    fn expands_at_boot(&self) -> bool {
        false
    }

    fn plan(&self, model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![PlannedPhase {
            phase: Phase::Contract,
            note: "gated; outside any transaction, lock_timeout = 0: SHARE UPDATE EXCLUSIVE, waits for the \
                   transactions that may use the index, blocks neither reads nor writes",
            statements: vec![index::drop_concurrently(model, &self.0)],
        }]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "drop index {} on {} (no longer declared)",
            self.0,
            model.qualified_name()
        )
    }

    fn object_name(&self, _model: &ModelSpec, _id: &StepId) -> Option<String> {
        Some(self.0.to_string())
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let name = self.object_name(cx.model, cx.id).unwrap_or_default();
            if let Some(phase) = catalog_object::settled(cx, &name, &self.describe(cx.model, cx.id))
            {
                return Ok(phase);
            }
            Ok(Phase::Pending)
        })
    }
}
