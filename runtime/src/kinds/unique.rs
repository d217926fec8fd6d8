//! A unique constraint on one column (`#[evolve(unique)]`): its unique index built concurrently
//! in the background, then attached with `ADD CONSTRAINT ... UNIQUE USING INDEX` (an instant
//! under ACCESS EXCLUSIVE, no scan).

use super::resolving::BoxFuture;
use super::{Kind, NewTablePart, PlannedPhase, Resolving, Runner, Shown, catalog_object};
use crate::error::Result;
use crate::ident::Ident;
use crate::spec::{ColumnSpec, ModelSpec};
use crate::sql::Statement;
use crate::sql::index::{self, IndexDef, unique_name};
use crate::step::{Phase, StepId};

pub(crate) struct AddUnique(pub &'static ColumnSpec);

const UNIQUE_BUILD_NOTE: &str = "in the background, not at boot: outside any transaction, on a dedicated connection \
with lock_timeout = 0 and statement_timeout = 0 (SHARE UPDATE EXCLUSIVE blocks neither reads nor writes); an INVALID \
index of this name is dropped CONCURRENTLY first; on duplicates the INVALID index is dropped and the error lists them";

impl Kind for AddUnique {
    fn name(&self) -> &'static str {
        "add_unique"
    }

    fn identity(&self) -> Vec<&'static str> {
        vec![self.0.name]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand, Phase::Validate]
    }

    fn expands_at_boot(&self) -> bool {
        false
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        let index = IndexDef::for_unique(model, self.0, id);
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: UNIQUE_BUILD_NOTE,
                statements: vec![index::create_concurrently(model, &index)],
            },
            PlannedPhase {
                phase: Phase::Validate,
                note: "one short transaction under lock_timeout, retried: the valid index becomes the \
                       constraint (ACCESS EXCLUSIVE for an instant, no scan)",
                statements: vec![index::attach_unique(model, &index.name)],
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, id: &StepId) -> String {
        format!(
            "add unique constraint {} on {} ({})",
            unique_name(model, self.0, id),
            model.qualified_name(),
            self.0.name
        )
    }

    /// The constraint (if attached), then the index, concurrently.
    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        let name = unique_name(model, self.0, id);
        vec![
            index::drop_constraint(model, &name),
            index::drop_concurrently(model, &name),
        ]
    }

    fn index(&self, model: &ModelSpec, id: &StepId) -> Option<IndexDef> {
        Some(IndexDef::for_unique(model, self.0, id))
    }

    fn object_name(&self, model: &ModelSpec, id: &StepId) -> Option<String> {
        Some(unique_name(model, self.0, id))
    }

    fn in_new_table(&self, model: &ModelSpec, id: &StepId) -> Option<NewTablePart> {
        Some(NewTablePart::Constraint(format!(
            "CONSTRAINT {} UNIQUE ({})",
            Ident(&unique_name(model, self.0, id)),
            Ident(self.0.name)
        )))
    }

    fn runner(&self, phase: Phase) -> Runner {
        match phase {
            Phase::Expand => Runner::ConcurrentBuild,
            Phase::Validate => Runner::ValidateData,
            _ => Runner::Statements,
        }
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let name = self.object_name(cx.model, cx.id).unwrap_or_default();
            if let Some(phase) = catalog_object::settled(cx, &name, &self.describe(cx.model, cx.id))
            {
                return Ok(phase);
            }
            let def = IndexDef::for_unique(cx.model, self.0, cx.id);
            catalog_object::index_progress(cx, &def, Some(self.0), &name).await
        })
    }

    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let name = self.object_name(cx.model, cx.id).unwrap_or_default();
            catalog_object::index_left(cx, &name, true).await
        })
    }

    fn judged_on_catalog(&self) -> bool {
        true
    }
}
