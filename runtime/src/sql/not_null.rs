//! The statements of NOT NULL on an existing column (`#[evolve(set_not_null)]`) and off
//! (`#[evolve(drop_not_null)]`). Neither scans the table under ACCESS EXCLUSIVE: NOT NULL on
//! goes through a `CHECK (col IS NOT NULL) NOT VALID` validated under SHARE UPDATE EXCLUSIVE,
//! which `SET NOT NULL` then uses instead of a scan; NOT NULL off is metadata only.

use super::{Helpers, Statement, compute_into_new, create_trigger, drop_trigger, table};
use crate::ident::{Ident, Literal, Qualified};
use crate::spec::{ColumnSpec, ModelSpec};

/// Expand of NOT NULL on: with a backfill, the fill trigger (`BEFORE INSERT OR UPDATE`), which
/// gives the backfill's value to every NULL written, whoever writes it (a build that still has
/// an `Option` field, raw SQL, an update of another column on a row not filled yet), and leaves
/// every other value as written; then the check, `NOT VALID` (a brief lock, no scan), which every
/// new write must satisfy from now on.
pub(crate) fn expand_set(
    model: &ModelSpec,
    column: &ColumnSpec,
    backfill: Option<&str>,
    h: &Helpers,
) -> Vec<Statement> {
    let t = table(model);
    let col = Ident(column.name);
    let mut out = Vec::new();
    if let Some(expr) = backfill {
        let function = Qualified(model.schema, &h.function);
        out.push(Statement::always(format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgevolve$\n\
             BEGIN\n\
             \x20 -- NOT NULL is coming: a NULL written by anyone gets the backfill's value; any\n\
             \x20 -- other value is kept as written.\n\
             \x20 IF NEW.{col} IS NULL THEN\n\
             \x20   {}\n\
             \x20 END IF;\n\
             \x20 RETURN NEW;\n\
             END\n\
             $pgevolve$",
            compute_into_new(model, column, expr)
        )));
        out.extend(create_trigger(
            &t,
            &h.trigger,
            "BEFORE INSERT OR UPDATE",
            &function,
        ));
    }
    out.push(super::add_not_null_check(model, column.name, &h.check));
    out
}

/// Contract of NOT NULL on: `SET NOT NULL` behind the guard that the check is validated (it
/// proves there is no NULL: no scan), then the helpers go.
pub(crate) fn contract_set(
    model: &ModelSpec,
    column: &ColumnSpec,
    backfill: bool,
    h: &Helpers,
) -> Vec<Statement> {
    let mut out = super::set_not_null(model, column, &h.check);
    out.extend(abort_set(model, h, backfill));
    out
}

/// Abort of NOT NULL on (and the end of its contract): the check, the trigger and its function
/// go; every value written stays, the column stays nullable.
pub(crate) fn abort_set(model: &ModelSpec, h: &Helpers, backfill: bool) -> Vec<Statement> {
    let mut out = vec![Statement::always(format!(
        "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
        table(model),
        Ident(&h.check)
    ))];
    if backfill {
        out.extend(drop_trigger(model, &h.trigger, &h.function));
    }
    out
}

/// Whether the check or the trigger of NOT NULL on is there (an abort left them).
pub(crate) fn set_helpers_exist(model: &ModelSpec, h: &Helpers) -> String {
    let regclass = Literal(&table(model).to_string()).to_string();
    format!(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = to_regclass({regclass}) AND conname = {}) \
         OR EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass({regclass}) AND tgname = {})",
        Literal(&h.check),
        Literal(&h.trigger)
    )
}

/// Contract of NOT NULL off: `DROP NOT NULL`, metadata only (a brief lock, no scan).
pub(crate) fn contract_drop(model: &ModelSpec, column: &ColumnSpec) -> Vec<Statement> {
    vec![Statement::always(format!(
        "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL",
        table(model),
        Ident(column.name)
    ))]
}
