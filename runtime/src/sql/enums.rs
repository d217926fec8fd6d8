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
///
/// A neighbour this build renames is named by its old name: the label is added at expand,
/// before the rename's contract. (Once the rename ran, the label is there too, and its step
/// runs nothing.)
pub(crate) fn placement(spec: &EnumSpec, label: &str) -> Option<String> {
    let at = spec.labels.iter().position(|l| *l == label)?;
    let live = |l: &str| spec.renamed_from(l).unwrap_or(l).to_string();
    if at > 0 {
        Some(format!(" AFTER {}", Literal(&live(spec.labels[at - 1]))))
    } else {
        spec.labels
            .get(1)
            .map(|next| format!(" BEFORE {}", Literal(&live(next))))
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

/// `ALTER TYPE ... RENAME VALUE '<old>' TO '<new>'`: a catalog change (the rows keep the
/// label's OID), in the contract's transaction; it locks the type, not a table.
pub(crate) fn rename_value(spec: &EnumSpec, old: &str, new: &str) -> Statement {
    Statement::always(format!(
        "ALTER TYPE {} RENAME VALUE {} TO {}",
        spec.qualified_name(),
        Literal(old),
        Literal(new)
    ))
    .on_type_only()
}

/// What an accessor writes for a value of the enum sent as text (`param`), while the renames
/// in `pending` (`(new, old)`) have not run: the new labels mapped to the old ones, cast to the
/// type. With none pending, the cast alone.
pub(crate) fn write_mapped(spec: &EnumSpec, pending: &[(&str, &str)], param: &str) -> String {
    if pending.is_empty() {
        return format!("CAST({param} AS {})", spec.qualified_name());
    }
    let whens: String = pending
        .iter()
        .map(|(new, old)| format!(" WHEN {} THEN {}", Literal(new), Literal(old)))
        .collect();
    format!(
        "CAST(CASE {param}{whens} ELSE {param} END AS {})",
        spec.qualified_name()
    )
}

/// What an accessor reads for a column of the enum (`read`, an expression of the type) while
/// the renames in `pending` have not run: as text, the old labels mapped to the new ones.
pub(crate) fn read_mapped(pending: &[(&str, &str)], read: &str) -> String {
    if pending.is_empty() {
        return read.to_string();
    }
    let whens: String = pending
        .iter()
        .map(|(new, old)| format!(" WHEN {} THEN {}", Literal(old), Literal(new)))
        .collect();
    format!("(CASE CAST({read} AS text){whens} ELSE CAST({read} AS text) END)")
}

/// Of the renames `(type, old, new)` given as arrays, the 1-based positions of those whose
/// contract committed: the type has the new label and not the old one.
pub(crate) fn renamed_labels() -> &'static str {
    "SELECT COALESCE(array_agg(r.i), '{}')::bigint[] AS renamed \
     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS r(type, old, new, i) \
     WHERE EXISTS (SELECT 1 FROM pg_enum e WHERE e.enumtypid = to_regtype(r.type) AND e.enumlabel = r.new) \
       AND NOT EXISTS (SELECT 1 FROM pg_enum e WHERE e.enumtypid = to_regtype(r.type) AND e.enumlabel = r.old)"
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: EnumSpec = EnumSpec {
        rust_name: "Status",
        schema: "public",
        name: "order_status",
        labels: &["pending", "it's shipped", "delivered"],
        renamed: &[],
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
    fn a_renamed_label_is_written_and_read_through_its_old_name_until_contract() {
        let pending = [("shipped", "shipped_out")];
        assert_eq!(
            write_mapped(&STATUS, &pending, "$2"),
            "CAST(CASE $2 WHEN 'shipped' THEN 'shipped_out' ELSE $2 END AS \"public\".\"order_status\")"
        );
        assert_eq!(
            read_mapped(&pending, "\"status\""),
            "(CASE CAST(\"status\" AS text) WHEN 'shipped_out' THEN 'shipped' ELSE CAST(\"status\" AS text) END)"
        );
        assert_eq!(
            write_mapped(&STATUS, &[], "$2"),
            "CAST($2 AS \"public\".\"order_status\")"
        );
    }

    #[test]
    fn a_label_added_next_to_a_renamed_one_is_placed_by_its_old_name() {
        const RENAMING: EnumSpec = EnumSpec {
            renamed: &[("it's shipped", "shipped_out")],
            ..STATUS
        };
        assert_eq!(
            placement(&RENAMING, "delivered").as_deref(),
            Some(" AFTER 'shipped_out'")
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
