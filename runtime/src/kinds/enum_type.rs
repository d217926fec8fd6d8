//! A PostgreSQL enum type a column uses (a field whose type derives `EvolveEnum`), created when
//! it does not exist: `CREATE TYPE ... AS ENUM (...)` with every label, at expand, before the
//! table or column of the type. A catalog change only: no table is locked. One phase, done at
//! boot; the values a later build adds are steps of their own (`enum_value.rs`).
//!
//! Resolving it also checks the labels: a type of that name that is not an enum, or an enum with
//! labels the Rust enum does not know, is drift, unless a newer build's recorded step added the
//! label (an older build booting during a rolling deploy or a rollback: it never writes the
//! label; reading a row that has it fails to decode in that build only). The old name of a
//! label this build renames (`enum_rename.rs`) is known until the rename's contract.

use super::resolving::BoxFuture;
use super::{Kind, NewTablePart, PlannedPhase, Resolving, Shown};
use crate::catalog;
use crate::error::Result;
use crate::ident::Literal;
use crate::spec::{EnumSpec, ModelSpec};
use crate::sql::enums;
use crate::step::{Phase, StepId, StepKind};

pub(crate) struct CreateEnum(pub &'static EnumSpec);

/// The enum steps of a model, in plan order: each type once (first use), created, then each of
/// its labels added when missing.
pub(crate) fn of_model(model: &ModelSpec) -> Vec<StepKind> {
    let mut seen: Vec<&'static EnumSpec> = Vec::new();
    let mut kinds = Vec::new();
    for spec in model.columns.iter().filter_map(|c| c.enum_type) {
        if seen.contains(&spec) {
            continue;
        }
        seen.push(spec);
        kinds.push(StepKind::CreateEnum(spec));
        // A renamed label is not added: the rename gives the type its new name at contract.
        kinds.extend(
            spec.labels
                .iter()
                .filter(|label| spec.renamed_from(label).is_none())
                .map(|label| StepKind::AddEnumValue(spec, label)),
        );
        kinds.extend(
            spec.renamed
                .iter()
                .map(|(new, old)| StepKind::RenameEnumValue(spec, new, old)),
        );
    }
    kinds
}

impl Kind for CreateEnum {
    fn name(&self) -> &'static str {
        "create_enum"
    }

    fn identity(&self) -> Vec<&'static str> {
        vec![self.0.schema, self.0.name]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand]
    }

    fn plan(&self, _model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![PlannedPhase {
            phase: Phase::Expand,
            note: "only when the type does not exist: one short transaction, a catalog change that locks no table; \
                   the value steps below are then already satisfied",
            statements: enums::create_type(self.0),
        }]
    }

    fn describe(&self, _model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "create enum type {} ({})",
            self.0.qualified_name(),
            self.0.labels.join(", ")
        )
    }

    fn in_new_table(&self, _model: &ModelSpec, _id: &StepId) -> Option<NewTablePart> {
        Some(NewTablePart::Before(enums::create_type(self.0)))
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let spec = self.0;
            let Some(live) = catalog::read_enum(&mut *cx.conn, &spec.qualified_name()).await?
            else {
                return Ok(Phase::Pending);
            };
            if !live.is_enum {
                cx.problems.add(
                    None,
                    format!(
                        "type {} exists but is not an enum, and `{}` (`#[derive(EvolveEnum)]`) maps to an enum of that name; \
                         rename the existing type, or give the Rust enum another `type_name`",
                        spec.qualified_name(),
                        spec.rust_name
                    ),
                );
                return Ok(Phase::Expand);
            }
            let unknown: Vec<String> = live
                .labels
                .iter()
                .filter(|l| !spec.labels.contains(&l.as_str()))
                // The old name of a label this build renames, until the rename's contract.
                .filter(|l| !spec.renamed.iter().any(|(_, old)| old == l))
                .filter(|l| !added_by_newer_build(cx, spec, l))
                .map(|l| Literal(l).to_string())
                .collect();
            if !unknown.is_empty() {
                cx.problems.add(
                    None,
                    format!(
                        "enum type {} has {} that `{}` does not know, so reading a row that holds one would fail; \
                         add a variant for each (with `#[sqlx(rename = \"...\")]` when its label differs), \
                         or, to get rid of a label, move the column to a new type without it \
                         (a new `EvolveEnum` with another `type_name` and `#[evolve(type_from = \"{}\", using = \"...\")]` on the field)",
                        spec.qualified_name(),
                        match unknown.len() {
                            1 => format!("label {}", unknown[0]),
                            _ => format!("labels {}", unknown.join(", ")),
                        },
                        spec.rust_name,
                        spec.name
                    ),
                );
            }
            if let Some(problem) = order_drift(spec, &live.labels) {
                cx.problems.add(None, problem);
            }
            Ok(Phase::Expand)
        })
    }
}

/// The labels the build knows, in the type's order (a renamed label under its new name), when
/// that is not the order of the variants: PostgreSQL sorts and compares enum values by it
/// (`ORDER BY`, `<`, `max`), and cannot reorder labels.
fn order_drift(spec: &EnumSpec, live: &[String]) -> Option<String> {
    let in_type: Vec<&str> = live
        .iter()
        .map(|l| {
            spec.renamed
                .iter()
                .find(|(_, old)| old == l)
                .map_or(l.as_str(), |(new, _)| new)
        })
        .filter(|l| spec.labels.contains(l))
        .collect();
    let declared: Vec<&str> = spec
        .labels
        .iter()
        .copied()
        .filter(|l| in_type.contains(l))
        .collect();
    if in_type == declared {
        return None;
    }
    let quoted = |labels: &[&str]| {
        labels
            .iter()
            .map(|l| Literal(l).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "enum type {} orders its labels {}, and `{}` declares them {}; PostgreSQL sorts and compares values \
         (`ORDER BY`, `<`, `max`) in the type's order and cannot reorder labels: declare the variants in the type's \
         order, or, if the build needs its own order, move the column to a new type in that order (a new \
         `EvolveEnum` with another `type_name` and `#[evolve(type_from = \"{}\", using = \"...\")]` on the field)",
        spec.qualified_name(),
        quoted(&in_type),
        spec.rust_name,
        quoted(&declared),
        spec.name
    ))
}

/// Whether a label this build does not know was added by a newer build's step on the same
/// table (its id is content-derived, so this build can compute it).
fn added_by_newer_build(cx: &Resolving<'_, '_>, spec: &EnumSpec, label: &str) -> bool {
    let id = super::enum_value::step_id(cx.model, spec, label);
    cx.recorded
        .get(&id)
        .is_some_and(|r| r.phase >= Phase::Expand && r.phase != Phase::Aborted)
}

#[cfg(test)]
mod tests {
    use super::*;

    static STATUS: EnumSpec = EnumSpec {
        rust_name: "Status",
        schema: "public",
        name: "order_status",
        labels: &["pending", "dispatched", "delivered"],
        renamed: &[("dispatched", "shipped")],
    };

    fn live(labels: &[&str]) -> Vec<String> {
        labels.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn labels_in_the_variants_order_are_no_drift_whatever_else_the_type_has() {
        assert_eq!(
            order_drift(&STATUS, &live(&["pending", "shipped", "delivered"])),
            None
        );
        assert_eq!(
            order_drift(&STATUS, &live(&["pending", "returned", "dispatched"])),
            None
        );
        assert_eq!(order_drift(&STATUS, &live(&["delivered"])), None);
    }

    #[test]
    fn labels_in_another_order_are_drift_naming_both_orders_and_the_fix() {
        let problem = order_drift(&STATUS, &live(&["delivered", "pending", "shipped"])).unwrap();
        assert!(
            problem.contains("orders its labels 'delivered', 'pending', 'dispatched'"),
            "{problem}"
        );
        assert!(
            problem.contains("declares them 'pending', 'dispatched', 'delivered'"),
            "{problem}"
        );
        assert!(
            problem.contains("declare the variants in the type's order"),
            "{problem}"
        );
    }
}
