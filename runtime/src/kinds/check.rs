//! A CHECK constraint (`check = "..."` on a field or the struct): added `NOT VALID` at boot (no
//! scan; new writes are checked from then on), validated in the background.

use super::resolving::BoxFuture;
use super::{
    Kind, NewTablePart, PlannedPhase, Resolving, Runner, Shown, Violations, catalog_object,
};
use crate::error::Result;
use crate::ident::Ident;
use crate::spec::{CheckSpec, ModelSpec};
use crate::sql::constraint::{self, check_name};
use crate::sql::{Statement, index};
use crate::step::{Phase, StepId};

pub(crate) struct AddCheck(pub &'static CheckSpec);

impl Kind for AddCheck {
    fn name(&self) -> &'static str {
        "add_check"
    }

    fn identity(&self) -> Vec<&'static str> {
        let ck = self.0;
        vec![
            ck.name.unwrap_or_default(),
            ck.column.unwrap_or_default(),
            ck.expr,
        ]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand, Phase::Validate]
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        let name = check_name(model, self.0, id);
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "one short transaction under lock_timeout, retried: no scan; new writes are checked \
                       from now on",
                statements: vec![constraint::add_check(model, self.0, &name)],
            },
            PlannedPhase {
                phase: Phase::Validate,
                note: "SHARE UPDATE EXCLUSIVE: reads and writes go on; rows that violate it: the constraint \
                       is dropped and the error lists them",
                statements: vec![constraint::validate(model, &name)],
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, id: &StepId) -> String {
        format!(
            "add check {} on {}: {}",
            check_name(model, self.0, id),
            model.qualified_name(),
            self.0.expr
        )
    }

    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        vec![index::drop_constraint(
            model,
            &check_name(model, self.0, id),
        )]
    }

    fn object_name(&self, model: &ModelSpec, id: &StepId) -> Option<String> {
        Some(check_name(model, self.0, id))
    }

    fn in_new_table(&self, model: &ModelSpec, id: &StepId) -> Option<NewTablePart> {
        Some(NewTablePart::Constraint(format!(
            "CONSTRAINT {} CHECK ({})",
            Ident(&check_name(model, self.0, id)),
            self.0.expr
        )))
    }

    fn runner(&self, phase: Phase) -> Runner {
        match phase {
            Phase::Validate => Runner::ValidateConstraint,
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
            catalog_object::check_progress(cx, self.0, &name).await
        })
    }

    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let name = self.object_name(cx.model, cx.id).unwrap_or_default();
            catalog_object::constraint_left(cx, &name).await
        })
    }

    fn judged_on_catalog(&self) -> bool {
        true
    }

    fn violations(&self, model: &ModelSpec, id: &StepId, limit: u32) -> Option<Violations> {
        Some(Violations {
            what: format!("check {} ({})", check_name(model, self.0, id), self.0.expr),
            query: constraint::check_violations(model, self.0, limit),
            column: None,
        })
    }
}
