//! A foreign key from one column (`references = "table(column)"`): added `NOT VALID` at boot
//! (new writes are checked from then on), validated in the background.

use super::resolving::BoxFuture;
use super::{
    Kind, NewTablePart, PlannedPhase, Resolving, Runner, Shown, Violations, catalog_object,
};
use crate::error::Result;
use crate::ident::Ident;
use crate::spec::{ColumnSpec, ModelSpec};
use crate::sql::constraint::{self, fk_name, foreign_key};
use crate::sql::{Statement, index};
use crate::step::{Phase, StepId};

pub(crate) struct AddForeignKey(pub &'static ColumnSpec);

impl Kind for AddForeignKey {
    fn name(&self) -> &'static str {
        "add_foreign_key"
    }

    fn identity(&self) -> Vec<&'static str> {
        let c = self.0;
        let mut parts = vec![c.name];
        if let Some(fk) = &c.references {
            parts.extend([
                fk.schema.unwrap_or_default(),
                fk.table,
                fk.column,
                fk.on_delete.as_sql(),
            ]);
        }
        parts
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand, Phase::Validate]
    }

    fn referenced_table(&self, model: &ModelSpec) -> Option<(&'static str, &'static str)> {
        let fk = self.0.references.as_ref()?;
        Some((fk.schema.unwrap_or(model.schema), fk.table))
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        let Some(fk) = foreign_key(self.0) else {
            return Vec::new();
        };
        let name = fk_name(model, self.0, id);
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "one short transaction under lock_timeout, retried: SHARE ROW EXCLUSIVE on both tables \
                       for an instant, no scan; new writes are checked from now on",
                statements: vec![constraint::add_foreign_key(model, self.0, fk, &name)],
            },
            PlannedPhase {
                phase: Phase::Validate,
                note: "SHARE UPDATE EXCLUSIVE on the table and ROW SHARE on the referenced one: reads and \
                       writes go on; rows that violate it: the constraint is dropped and the error lists them",
                statements: vec![constraint::validate(model, &name)],
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, id: &StepId) -> String {
        let c = self.0;
        match foreign_key(c) {
            Some(fk) => format!(
                "add foreign key {} on {} ({}) references {}.{} ({}) on delete {}",
                fk_name(model, c, id),
                model.qualified_name(),
                c.name,
                fk.schema.unwrap_or(model.schema),
                fk.table,
                fk.column,
                fk.on_delete.as_sql().to_lowercase()
            ),
            None => String::new(),
        }
    }

    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        vec![index::drop_constraint(model, &fk_name(model, self.0, id))]
    }

    fn object_name(&self, model: &ModelSpec, id: &StepId) -> Option<String> {
        Some(fk_name(model, self.0, id))
    }

    fn in_new_table(&self, model: &ModelSpec, id: &StepId) -> Option<NewTablePart> {
        let fk = foreign_key(self.0)?;
        Some(NewTablePart::Constraint(format!(
            "CONSTRAINT {} {}",
            Ident(&fk_name(model, self.0, id)),
            constraint::references(model, self.0, fk)
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
            catalog_object::fk_progress(cx, self.0, &name).await
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
        let (column, fk) = (self.0, foreign_key(self.0)?);
        Some(Violations {
            what: format!(
                "foreign key {} ({} references {}.{} ({}))",
                fk_name(model, column, id),
                column.name,
                fk.schema.unwrap_or(model.schema),
                fk.table,
                fk.column
            ),
            query: constraint::fk_violations(model, column, fk, limit),
            column: Some(column.name),
        })
    }
}
