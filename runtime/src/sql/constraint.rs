//! The SQL of constraint steps: a foreign key or CHECK added `NOT VALID` (brief lock, no scan;
//! new writes are checked from then on), then `VALIDATE CONSTRAINT` (SHARE UPDATE EXCLUSIVE:
//! reads and writes go on), and the queries that show the rows violating one.

use super::index::{conventional_name, unique_name};
use super::{Exists, Statement, table};
use crate::ident::{Ident, Qualified};
use crate::plan::PlannedPhase;
use crate::spec::{CheckSpec, ColumnSpec, ForeignKeySpec, ModelSpec};
use crate::step::{Phase, StepId, StepKind};

/// The foreign key of a column (`None` when the column has no `references`).
pub(crate) fn foreign_key(column: &ColumnSpec) -> Option<&ForeignKeySpec> {
    column.references.as_ref()
}

/// The name of a column's foreign key: `<table>_<column>_fkey`.
pub(crate) fn fk_name(model: &ModelSpec, column: &ColumnSpec, id: &StepId) -> String {
    conventional_name(model.table, &[column.name], "fkey", id)
}

/// The name of a CHECK: its `name`, else `<table>_<column>_check` for one declared on a field,
/// else `<table>_check_<id>` (the step id keeps several unnamed struct-level checks apart).
pub(crate) fn check_name(model: &ModelSpec, check: &CheckSpec, id: &StepId) -> String {
    match (check.name, check.column) {
        (Some(name), _) => name.to_string(),
        (None, Some(column)) => conventional_name(model.table, &[column], "check", id),
        (None, None) => conventional_name(model.table, &["check"], &id.as_str()[..8], id),
    }
}

/// The referenced table: `schema.table` as written, else in the model's own schema.
pub(crate) fn referenced<'a>(model: &'a ModelSpec, fk: &'a ForeignKeySpec) -> Qualified<'a> {
    Qualified(fk.schema.unwrap_or(model.schema), fk.table)
}

fn references(model: &ModelSpec, column: &ColumnSpec, fk: &ForeignKeySpec) -> String {
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
    Statement {
        sql: format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
            table(model),
            Ident(name),
            references(model, column, fk)
        ),
        unless: Some(Exists::Constraint(name.to_string())),
    }
}

/// `ADD CONSTRAINT ... CHECK (...) NOT VALID`: ACCESS EXCLUSIVE, briefly; no scan.
pub(crate) fn add_check(model: &ModelSpec, check: &CheckSpec, name: &str) -> Statement {
    Statement {
        sql: format!(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({}) NOT VALID",
            table(model),
            Ident(name),
            check.expr
        ),
        unless: Some(Exists::Constraint(name.to_string())),
    }
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

/// The phases of a constraint step (`AddForeignKey`, `AddCheck`).
pub(crate) fn phases(model: &ModelSpec, kind: &StepKind, id: &StepId) -> Vec<PlannedPhase> {
    match *kind {
        StepKind::AddForeignKey(column) => {
            let Some(fk) = foreign_key(column) else {
                return Vec::new();
            };
            let name = fk_name(model, column, id);
            vec![
                PlannedPhase {
                    phase: Phase::Expand,
                    note: "one short transaction under lock_timeout, retried: SHARE ROW EXCLUSIVE on both tables \
                           for an instant, no scan; new writes are checked from now on",
                    statements: vec![add_foreign_key(model, column, fk, &name)],
                },
                PlannedPhase {
                    phase: Phase::Validate,
                    note: "SHARE UPDATE EXCLUSIVE on the table and ROW SHARE on the referenced one: reads and \
                           writes go on; rows that violate it: the constraint is dropped and the error lists them",
                    statements: vec![validate(model, &name)],
                },
            ]
        }
        StepKind::AddCheck(check) => {
            let name = check_name(model, check, id);
            vec![
                PlannedPhase {
                    phase: Phase::Expand,
                    note: "one short transaction under lock_timeout, retried: no scan; new writes are checked \
                           from now on",
                    statements: vec![add_check(model, check, &name)],
                },
                PlannedPhase {
                    phase: Phase::Validate,
                    note: "SHARE UPDATE EXCLUSIVE: reads and writes go on; rows that violate it: the constraint \
                           is dropped and the error lists them",
                    statements: vec![validate(model, &name)],
                },
            ]
        }
        _ => Vec::new(),
    }
}

/// What undoes a constraint step: the constraint is dropped (brief lock, under lock_timeout).
pub(crate) fn abort(model: &ModelSpec, kind: &StepKind, id: &StepId) -> Vec<Statement> {
    match super::index::object_name(model, kind, id) {
        Some(name) => vec![super::index::drop_constraint(model, &name)],
        None => Vec::new(),
    }
}

/// One line for a constraint step.
pub(crate) fn describe(model: &ModelSpec, kind: &StepKind, id: &StepId) -> String {
    let table = model.qualified_name();
    match *kind {
        StepKind::AddForeignKey(column) => match foreign_key(column) {
            Some(fk) => format!(
                "add foreign key {} on {table} ({}) references {}.{} ({}) on delete {}",
                fk_name(model, column, id),
                column.name,
                fk.schema.unwrap_or(model.schema),
                fk.table,
                fk.column,
                fk.on_delete.as_sql().to_lowercase()
            ),
            None => String::new(),
        },
        StepKind::AddCheck(check) => format!(
            "add check {} on {table}: {}",
            check_name(model, check, id),
            check.expr
        ),
        _ => String::new(),
    }
}

/// The constraints of every unique, foreign key and CHECK step, as lines of a `CREATE TABLE`:
/// the table is new and empty, so they are created valid at once.
pub(crate) fn table_constraints(model: &ModelSpec) -> Vec<String> {
    let mut lines = Vec::new();
    for kind in constraint_kinds(model) {
        let id = StepId::for_step(model, &kind);
        match kind {
            StepKind::AddUnique(c) => lines.push(format!(
                "CONSTRAINT {} UNIQUE ({})",
                Ident(&unique_name(model, c, &id)),
                Ident(c.name)
            )),
            StepKind::AddForeignKey(c) => {
                if let Some(fk) = foreign_key(c) {
                    lines.push(format!(
                        "CONSTRAINT {} {}",
                        Ident(&fk_name(model, c, &id)),
                        references(model, c, fk)
                    ));
                }
            }
            StepKind::AddCheck(check) => lines.push(format!(
                "CONSTRAINT {} CHECK ({})",
                Ident(&check_name(model, check, &id)),
                check.expr
            )),
            _ => {}
        }
    }
    lines
}

/// The unique, foreign key and CHECK steps of a model, in plan order.
pub(crate) fn constraint_kinds(model: &ModelSpec) -> Vec<StepKind> {
    let mut kinds: Vec<StepKind> = model
        .columns
        .iter()
        .filter(|c| c.unique)
        .map(StepKind::AddUnique)
        .collect();
    kinds.extend(
        model
            .columns
            .iter()
            .filter(|c| c.references.is_some())
            .map(StepKind::AddForeignKey),
    );
    kinds.extend(model.checks.iter().map(StepKind::AddCheck));
    kinds
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

/// Up to `limit` rows whose column references no row: each row's key and the column's value.
pub(crate) fn fk_violations(
    model: &ModelSpec,
    column: &ColumnSpec,
    fk: &ForeignKeySpec,
    limit: u32,
) -> String {
    let col = Ident(column.name);
    format!(
        "SELECT {}, t.{col}::text FROM {} AS t WHERE t.{col} IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM {} AS r WHERE r.{} = t.{col}) LIMIT {limit}",
        row_key(model, "t"),
        table(model),
        referenced(model, fk),
        Ident(fk.column)
    )
}

/// Up to `limit` rows for which the CHECK expression is false: each row's key. The table is
/// aliased by its own name, so the expression reads as it does in the constraint.
pub(crate) fn check_violations(model: &ModelSpec, check: &CheckSpec, limit: u32) -> String {
    let alias = Ident(model.table).to_string();
    format!(
        "SELECT {}, NULL::text FROM {} AS {alias} WHERE NOT ({}) LIMIT {limit}",
        row_key(model, &alias),
        table(model),
        check.expr
    )
}
