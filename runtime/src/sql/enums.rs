//! The statements of an enum type's steps (`#[derive(EvolveEnum)]`): create the type, add a
//! value. Both change the catalog only: no table is locked, scanned or rewritten.

use super::Statement;
use crate::ident::{Ident, Literal};
use crate::spec::EnumSpec;
use crate::statement::Exists;

/// `CREATE TYPE ... AS ENUM (...)` with every label, skipped when the type exists (`CREATE
/// TYPE` has no `IF NOT EXISTS`; another table's step may have created it); its schema first
/// when it is not `public`, skipped when it exists.
pub(crate) fn create_type(spec: &EnumSpec) -> Vec<Statement> {
    let mut out = Vec::new();
    if spec.schema != "public" {
        out.push(
            Statement::unless(
                format!("CREATE SCHEMA IF NOT EXISTS {}", Ident(spec.schema)),
                Exists::Schema(spec.schema.to_string()),
            )
            .on_type_only(),
        );
    }
    out.push(create(spec));
    out
}

fn create(spec: &EnumSpec) -> Statement {
    let labels: Vec<String> = spec.labels.iter().map(|l| Literal(l).to_string()).collect();
    Statement::unless(
        format!(
            "CREATE TYPE {} AS ENUM ({})",
            spec.qualified_name(),
            labels.join(", ")
        ),
        Exists::Type(spec.qualified_name()),
    )
    .on_type_only()
}

/// Where a new label goes among the others: after the label declared before it, or before
/// the one declared after it when it is the first.
pub(crate) fn placement(spec: &EnumSpec, label: &str) -> Option<String> {
    let at = spec.labels.iter().position(|l| *l == label)?;
    if at > 0 {
        Some(format!(" AFTER {}", Literal(spec.labels[at - 1])))
    } else {
        spec.labels
            .get(1)
            .map(|next| format!(" BEFORE {}", Literal(next)))
    }
}

/// `ALTER TYPE ... ADD VALUE IF NOT EXISTS '<label>' AFTER '<previous>'`: in the phase's own
/// short transaction (allowed in a transaction block since PostgreSQL 12), which uses no value
/// of the type, under lock_timeout. It locks the type, not a table. Idempotent.
pub(crate) fn add_value(spec: &EnumSpec, label: &str) -> Statement {
    Statement::always(format!(
        "ALTER TYPE {} ADD VALUE IF NOT EXISTS {}{}",
        spec.qualified_name(),
        Literal(label),
        placement(spec, label).unwrap_or_default()
    ))
    .on_type_only()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: EnumSpec = EnumSpec {
        rust_name: "Status",
        schema: "public",
        name: "order_status",
        labels: &["pending", "it's shipped", "delivered"],
    };

    #[test]
    fn labels_and_names_are_quoted() {
        assert_eq!(
            create_type(&STATUS)[0].sql,
            "CREATE TYPE \"public\".\"order_status\" AS ENUM ('pending', 'it''s shipped', 'delivered')"
        );
        assert_eq!(
            add_value(&STATUS, "delivered").sql,
            "ALTER TYPE \"public\".\"order_status\" ADD VALUE IF NOT EXISTS 'delivered' AFTER 'it''s shipped'"
        );
    }

    #[test]
    fn a_first_label_goes_before_the_next() {
        assert_eq!(
            placement(&STATUS, "pending").as_deref(),
            Some(" BEFORE 'it''s shipped'")
        );
    }
}
