//! The SQL of a rename: a new column kept equal to the old one by a trigger, a view with the new
//! names for readers outside the application, then the old column dropped at contract.

use super::{Statement, table};
use crate::ident::{Ident, Qualified};
use crate::spec::{ColumnSpec, ModelSpec};
use crate::step::StepId;
use pgevolve_naming::object_name;

/// Names of the objects a rename creates.
#[derive(Debug, Clone)]
pub(crate) struct RenameHelpers {
    pub check: String,
    pub function: String,
    pub trigger: String,
    pub view: String,
}

impl RenameHelpers {
    pub(crate) fn new(model: &ModelSpec, column: &ColumnSpec, id: &StepId) -> RenameHelpers {
        let id = id.as_str();
        RenameHelpers {
            check: object_name("pgevolve_nn", model.table, column.name, id),
            function: object_name("pgevolve_sync", model.table, column.name, id),
            trigger: object_name("pgevolve_sync", model.table, column.name, id),
            view: object_name("pgevolve_view", model.table, column.name, id),
        }
    }
}

fn old_name(column: &ColumnSpec) -> &'static str {
    column.renamed_from.unwrap_or(column.name)
}

/// Expand: the new column (nullable until contract, with a `NOT VALID` check when the field is
/// not an `Option`), the sync trigger and the compatibility view, in one transaction. `later`:
/// the columns steps after this one in the plan add (they do not exist yet when the view is
/// created, so it does not list them).
pub(crate) fn expand(
    model: &ModelSpec,
    column: &ColumnSpec,
    h: &RenameHelpers,
    later: &[&str],
) -> Vec<Statement> {
    let t = table(model);
    let new = Ident(column.name);
    let old = Ident(old_name(column));
    let function = Qualified(model.schema, &h.function);
    let mut out = vec![
        Statement::always(format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {new} {}",
            column.sql_type
        )),
        // No session state (search_path, settings) decides anything: which column the writer
        // set is read off the row itself, so poolers and proxies cannot confuse it.
        Statement::always(format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgevolve$\n\
             BEGIN\n\
             \x20 -- Keep {old} and {new} equal for writers that set only one of them.\n\
             \x20 IF TG_OP = 'INSERT' THEN\n\
             \x20   IF NEW.{new} IS NULL THEN\n\
             \x20     NEW.{new} := NEW.{old};\n\
             \x20   ELSIF NEW.{old} IS NULL THEN\n\
             \x20     NEW.{old} := NEW.{new};\n\
             \x20   END IF;\n\
             \x20 ELSIF NEW.{new} IS DISTINCT FROM OLD.{new} THEN\n\
             \x20   NEW.{old} := NEW.{new};\n\
             \x20 ELSE\n\
             \x20   NEW.{new} := NEW.{old};\n\
             \x20 END IF;\n\
             \x20 RETURN NEW;\n\
             END\n\
             $pgevolve$"
        )),
    ];
    out.extend(super::create_trigger(
        &t,
        &h.trigger,
        "BEFORE INSERT OR UPDATE",
        &function,
    ));
    out.push(Statement::always(format!(
        "CREATE OR REPLACE VIEW {} AS SELECT {} FROM {t}",
        Qualified(model.schema, &h.view),
        view_columns(model, column, later).join(", ")
    )));
    if !column.nullable {
        out.push(Statement::unless(
            format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({new} IS NOT NULL) NOT VALID",
                Ident(&h.check)
            ),
            super::Exists::Constraint(h.check.clone()),
        ));
    }
    out
}

/// The view's columns: the model's columns under their new names, the renamed one read as
/// `COALESCE(new, old)` so it is right before the backfill ends, without the columns `later`
/// steps add.
fn view_columns(model: &ModelSpec, renamed: &ColumnSpec, later: &[&str]) -> Vec<String> {
    model
        .columns
        .iter()
        .filter(|c| {
            !later.contains(&c.name) && (c.renamed_from.is_none() || c.name == renamed.name)
        })
        .map(|c| {
            if c.name == renamed.name {
                format!(
                    "COALESCE({}, {}) AS {}",
                    Ident(c.name),
                    Ident(old_name(c)),
                    Ident(c.name)
                )
            } else {
                Ident(c.name).to_string()
            }
        })
        .collect()
}

/// Validate: the check (when NOT NULL) is proved; then no row may differ between the columns.
pub(crate) fn validate(
    model: &ModelSpec,
    column: &ColumnSpec,
    h: &RenameHelpers,
) -> Vec<Statement> {
    super::validate_not_null_check(model, column, &h.check)
}

/// A row whose old and new column differ (none may after the backfill).
pub(crate) fn differences(column: &ColumnSpec) -> String {
    format!(
        "{} IS DISTINCT FROM {}",
        Ident(column.name),
        Ident(old_name(column))
    )
}

/// Rows where the old and the new column differ (must be zero after the backfill).
pub(crate) fn count_differences(model: &ModelSpec, column: &ColumnSpec) -> String {
    super::verify::count_where(model, &differences(column))
}

/// Contract: NOT NULL through the validated check, then view, trigger and old column go.
pub(crate) fn contract(
    model: &ModelSpec,
    column: &ColumnSpec,
    h: &RenameHelpers,
) -> Vec<Statement> {
    let t = table(model);
    let mut out = Vec::new();
    if !column.nullable {
        out.extend(super::not_null_through_check(model, column.name, &h.check));
    }
    out.extend(drop_helpers(model, h));
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP COLUMN IF EXISTS {}",
        Ident(old_name(column))
    )));
    out
}

/// Contract with what the rename carries over (see `sql::carry`): the table locked and the
/// guard first, default, sequences, comment and grants moved and foreign keys to the old column
/// dropped, then [`contract`], then the unique constraints attached and the carried objects
/// given their final names. One transaction.
pub(crate) fn contract_carrying(
    model: &ModelSpec,
    column: &ColumnSpec,
    h: &RenameHelpers,
    carry: &super::carry::Carry,
) -> Vec<Statement> {
    carry.around(contract(model, column, h))
}

/// Abort: view, trigger, check and the new column go; the old column kept every write.
pub(crate) fn abort(model: &ModelSpec, column: &ColumnSpec, h: &RenameHelpers) -> Vec<Statement> {
    let t = table(model);
    let mut out = drop_helpers(model, h);
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
        Ident(&h.check)
    )));
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP COLUMN IF EXISTS {}",
        Ident(column.name)
    )));
    out
}

fn drop_helpers(model: &ModelSpec, h: &RenameHelpers) -> Vec<Statement> {
    let mut out = vec![Statement::always(format!(
        "DROP VIEW IF EXISTS {}",
        Qualified(model.schema, &h.view)
    ))];
    out.extend(super::drop_trigger(model, &h.trigger, &h.function));
    out
}
