//! A label of a Rust enum (`#[derive(EvolveEnum)]`) its PostgreSQL type lacks: `ALTER TYPE ...
//! ADD VALUE IF NOT EXISTS '<label>' AFTER '<previous label>'` at expand, done at boot.
//!
//! - **Where it runs.** In the phase's own short transaction under `lock_timeout`, retried by
//!   the executor, together with the phase's record. PostgreSQL allows `ADD VALUE` in a
//!   transaction block since version 12 (pgevolve supports 13 and later); the new value cannot
//!   be used before that transaction commits, and the transaction uses no value of the type, so
//!   nothing in it can trip over that. The accessors of the new build write the label only once
//!   boot has returned, after the commit.
//! - **Locks.** `ADD VALUE` takes an exclusive lock on the type object (`pg_locks.locktype =
//!   'object'`, `pg_type`), not on any table: queries reading and writing the tables that use
//!   the type go on. Only another change of the same type waits.
//! - **Abort.** None: the step is done at boot, with no phase before a contract to abort from,
//!   like a nullable column's. PostgreSQL cannot drop an enum value; a label no build writes is
//!   harmless (older builds never write it; reading a row that holds it fails in an older build
//!   only). Getting rid of a label is a type change to a new type.

use super::resolving::BoxFuture;
use super::{Kind, NewTablePart, PlannedPhase, Resolving, Shown};
use crate::catalog;
use crate::error::Result;
use crate::ident::Literal;
use crate::spec::{EnumSpec, ModelSpec};
use crate::sql::enums;
use crate::step::{Phase, StepId, fnv1a};

pub(crate) struct AddEnumValue(pub &'static EnumSpec, pub &'static str);

/// The id of the step adding `label` to `spec` on `model`'s table, for a label this build may
/// not know (see `enum_type`): the same parts as `StepId::for_step`.
pub(super) fn step_id(model: &ModelSpec, spec: &EnumSpec, label: &str) -> StepId {
    let parts = [
        "v1",
        "add_enum_value",
        model.schema,
        model.table,
        spec.schema,
        spec.name,
        label,
    ];
    StepId::from_stored(format!("{:016x}", fnv1a(&parts)))
}

impl Kind for AddEnumValue {
    fn name(&self) -> &'static str {
        "add_enum_value"
    }

    /// The type and the label, not its place: moving a variant does not make a new step.
    fn identity(&self) -> Vec<&'static str> {
        vec![self.0.schema, self.0.name, self.1]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand]
    }

    fn plan(&self, _model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![PlannedPhase {
            phase: Phase::Expand,
            note: "only when the type lacks the label: one short transaction under lock_timeout that uses no value of the type; \
                   locks the type, not the table",
            statements: vec![enums::add_value(self.0, self.1)],
        }]
    }

    fn describe(&self, _model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "add value {} to enum type {}",
            Literal(self.1),
            self.0.qualified_name()
        )
    }

    /// With a new table, in its transaction before the `CREATE TABLE`: a no-op when the type was
    /// just created with every label, the missing label when another table's type lacks it.
    fn in_new_table(&self, _model: &ModelSpec, _id: &StepId) -> Option<NewTablePart> {
        Some(NewTablePart::Before(vec![enums::add_value(self.0, self.1)]))
    }

    /// The label is there: done. Missing where the store says a previous boot added it: drift
    /// (dropped by hand, or the type recreated), reported before any DDL.
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let (spec, label) = (self.0, self.1);
            let live = catalog::read_enum(&mut *cx.conn, &spec.qualified_name()).await?;
            let present = live
                .as_ref()
                .is_some_and(|l| l.labels.iter().any(|x| x == label));
            if present {
                return Ok(Phase::Expand);
            }
            if live.is_some()
                && cx
                    .recorded_phase()
                    .is_some_and(|p| p >= Phase::Expand && p != Phase::Aborted)
            {
                cx.problems.add(
                    None,
                    format!(
                        "enum type {} lacks label {}, which a previous boot added (step {}): dropped by hand, or the type \
                         was recreated; add it back with `ALTER TYPE {} ADD VALUE {}{}`, then boot again",
                        spec.qualified_name(),
                        Literal(label),
                        cx.id,
                        spec.qualified_name(),
                        Literal(label),
                        enums::placement(spec, label).unwrap_or_default()
                    ),
                );
            }
            Ok(Phase::Pending)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::StepKind;

    static STATUS: EnumSpec = EnumSpec {
        rust_name: "Status",
        schema: "public",
        name: "order_status",
        labels: &["pending", "shipped"],
        renamed: &[],
    };

    #[test]
    fn the_computed_id_is_the_steps_id() {
        let model = ModelSpec {
            table: "orders",
            ..ModelSpec::DEFAULT
        };
        assert_eq!(
            step_id(&model, &STATUS, "shipped"),
            StepId::for_step(&model, &StepKind::AddEnumValue(&STATUS, "shipped"))
        );
    }
}
