//! The SQL of constraint steps: a foreign key or CHECK added `NOT VALID` (brief lock, no scan;
//! new writes are checked from then on), then `VALIDATE CONSTRAINT` (SHARE UPDATE EXCLUSIVE:
//! reads and writes go on), and the queries that show the rows violating one.

use super::{Exists, Statement, table};
use crate::ident::{Ident, Qualified};
use crate::spec::{CheckSpec, ColumnSpec, ForeignKeySpec, ModelSpec};
use crate::step::StepId;
use pgevolve_naming::{self as naming, conventional_name};

/// The foreign key of a column (`None` when the column has no `references`).
pub(crate) fn foreign_key(column: &ColumnSpec) -> Option<&ForeignKeySpec> {
    column.references.as_ref()
}

/// The name of a column's foreign key: `<table>_<column>_fkey`.
pub(crate) fn fk_name(model: &ModelSpec, column: &ColumnSpec, id: &StepId) -> String {
    conventional_name(
        model.table,
        &[column.name],
        naming::FOREIGN_KEY,
        id.as_str(),
    )
}

/// The name of a CHECK: its `name`, else `<table>_<column>_check` for one declared on a field,
/// else `<table>_check_<id>` (the step id keeps several unnamed struct-level checks apart).
pub(crate) fn check_name(model: &ModelSpec, check: &CheckSpec, id: &StepId) -> String {
    match (check.name, check.column) {
        (Some(name), _) => name.to_string(),
        (None, Some(column)) => {
            conventional_name(model.table, &[column], naming::CHECK, id.as_str())
        }
        (None, None) => conventional_name(
            model.table,
            &[naming::CHECK],
            &id.as_str()[..8],
            id.as_str(),
        ),
    }
}

/// The referenced table: `schema.table` as written, else in the model's own schema.
pub(crate) fn referenced<'a>(model: &'a ModelSpec, fk: &'a ForeignKeySpec) -> Qualified<'a> {
    Qualified(fk.schema.unwrap_or(model.schema), fk.table)
}

pub(crate) fn references(model: &ModelSpec, column: &ColumnSpec, fk: &ForeignKeySpec) -> String {
    format!(
        "FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {}",
        Ident(column.name),
        referenced(model, fk),
        Ident(fk.column),
        fk.on_delete.as_sql()
    )
}

/// `ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID`: SHARE ROW EXCLUSIVE on both tables, briefly;
/// existing rows are not checked.
pub(crate) fn add_foreign_key(
    model: &ModelSpec,
    column: &ColumnSpec,
    fk: &ForeignKeySpec,
    name: &str,
) -> Statement {
    Statement::unless(
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
            table(model),
            Ident(name),
            references(model, column, fk)
        ),
        Exists::Constraint(name.to_string()),
    )
}

/// `ADD CONSTRAINT ... CHECK (...) NOT VALID`: ACCESS EXCLUSIVE, briefly; no scan.
pub(crate) fn add_check(model: &ModelSpec, check: &CheckSpec, name: &str) -> Statement {
    Statement::unless(
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({}) NOT VALID",
            table(model),
            Ident(name),
            check.expr
        ),
        Exists::Constraint(name.to_string()),
    )
}

/// `VALIDATE CONSTRAINT`: scans the table under SHARE UPDATE EXCLUSIVE (and ROW SHARE on a
/// referenced table), so reads and writes go on.
pub(crate) fn validate(model: &ModelSpec, name: &str) -> Statement {
    Statement::always(format!(
        "ALTER TABLE {} VALIDATE CONSTRAINT {}",
        table(model),
        Ident(name)
    ))
}

/// How a violating row is named in messages: its primary key as text (the `ctid` without one).
fn row_key(model: &ModelSpec, alias: &str) -> String {
    let keys: Vec<String> = model
        .primary_key()
        .map(|c| format!("{alias}.{}::text", Ident(c.name)))
        .collect();
    if keys.is_empty() {
        format!("ARRAY[{alias}.ctid::text]")
    } else {
        format!("ARRAY[{}]", keys.join(", "))
    }
}

/// Up to `limit` rows whose column references no row: each row's `key` and the column's `value`.
pub(crate) fn fk_violations(
    model: &ModelSpec,
    column: &ColumnSpec,
    fk: &ForeignKeySpec,
    limit: u32,
) -> String {
    let col = Ident(column.name);
    format!(
        "SELECT {} AS key, t.{col}::text AS value FROM {} AS t WHERE t.{col} IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM {} AS r WHERE r.{} = t.{col}) LIMIT {limit}",
        row_key(model, "t"),
        table(model),
        referenced(model, fk),
        Ident(fk.column)
    )
}

/// Up to `limit` rows for which the CHECK expression is false: each row's `key` (`value` NULL). The table is
/// aliased by its own name, so the expression reads as it does in the constraint.
pub(crate) fn check_violations(model: &ModelSpec, check: &CheckSpec, limit: u32) -> String {
    let alias = Ident(model.table).to_string();
    format!(
        "SELECT {} AS key, NULL::text AS value FROM {} AS {alias} WHERE NOT ({}) LIMIT {limit}",
        row_key(model, &alias),
        table(model),
        check.expr
    )
}
