//! The SQL of every phase of every step kind. Pure functions of the spec: plans, snapshots and
//! the executor all use these, so what `plan()` shows is exactly what runs.

pub(crate) mod backfill;
pub(crate) mod constraint;
pub(crate) mod index;
pub(crate) mod rename;

pub(crate) use rename::RenameHelpers;

use crate::ident::{Ident, Literal, Qualified, object_name};
use crate::spec::{ColumnSpec, Fill, ModelSpec};
use crate::step::StepId;

/// One statement, optionally skipped when the live catalog shows its effect is already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL text, identifiers quoted.
    pub sql: String,
    /// Skip the statement when this object exists (idempotent re-runs after a crash).
    pub unless: Option<Exists>,
}

/// A catalog object whose presence makes a statement unnecessary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exists {
    /// A constraint of that name on the step's table.
    Constraint(String),
}

impl Statement {
    pub(crate) fn always(sql: String) -> Statement {
        Statement { sql, unless: None }
    }
}

/// Names of the helper objects a filled-column step creates.
#[derive(Debug, Clone)]
pub(crate) struct Helpers {
    pub check: String,
    pub function: String,
    pub trigger: String,
}

impl Helpers {
    pub(crate) fn new(model: &ModelSpec, column: &ColumnSpec, id: &StepId) -> Helpers {
        let id = id.as_str();
        Helpers {
            check: object_name("pgevolve_nn", model.table, column.name, id),
            function: object_name("pgevolve_fill", model.table, column.name, id),
            trigger: object_name("pgevolve_fill", model.table, column.name, id),
        }
    }
}

pub(crate) fn table(model: &ModelSpec) -> Qualified<'_> {
    Qualified(model.schema, model.table)
}

fn column_definition(column: &ColumnSpec, with_constraints: bool) -> String {
    let mut def = format!("{} {}", Ident(column.name), column.sql_type);
    if with_constraints {
        if let Fill::Default(expr) = column.fill {
            def.push_str(&format!(" DEFAULT {expr}"));
        }
        if !column.nullable {
            def.push_str(" NOT NULL");
        }
    }
    def
}

/// `CREATE TABLE` with every column and the primary key.
pub(crate) fn create_table(model: &ModelSpec) -> Vec<Statement> {
    let mut lines: Vec<String> = model
        .columns
        .iter()
        .map(|c| format!("  {}", column_definition(c, true)))
        .collect();
    let pk: Vec<String> = model
        .primary_key()
        .map(|c| Ident(c.name).to_string())
        .collect();
    if !pk.is_empty() {
        lines.push(format!("  PRIMARY KEY ({})", pk.join(", ")));
    }
    // Unique, foreign key and CHECK constraints, and indexes: the table is new and empty, so
    // they are created with it, valid at once, in the same transaction.
    lines.extend(
        constraint::table_constraints(model)
            .into_iter()
            .map(|c| format!("  {c}")),
    );
    let mut out = Vec::new();
    if model.schema != "public" {
        out.push(Statement::always(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            Ident(model.schema)
        )));
    }
    out.push(Statement::always(format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{}\n)",
        table(model),
        lines.join(",\n")
    )));
    out.extend(index::with_new_table(model));
    out
}

/// `ADD COLUMN` for a nullable column: metadata only.
pub(crate) fn add_nullable_column(model: &ModelSpec, column: &ColumnSpec) -> Vec<Statement> {
    vec![Statement::always(format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}",
        table(model),
        column_definition(column, false)
    ))]
}

/// Expand of a filled column: the column (nullable; a non-volatile default is metadata only), a
/// `CHECK (col IS NOT NULL) NOT VALID` that new writes must already satisfy, and for a backfill a
/// trigger that computes the value for writers that do not set it.
pub(crate) fn expand_filled_column(
    model: &ModelSpec,
    column: &ColumnSpec,
    helpers: &Helpers,
) -> Vec<Statement> {
    let t = table(model);
    let col = Ident(column.name);
    let mut out = Vec::new();
    let default = match column.fill {
        Fill::Default(expr) => format!(" DEFAULT {expr}"),
        _ => String::new(),
    };
    out.push(Statement::always(format!(
        "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {col} {}{default}",
        column.sql_type
    )));
    if let Fill::Backfill(expr) = column.fill {
        let function = Qualified(model.schema, &helpers.function);
        // `SELECT NEW.*` exposes the row under the table's own name, so the expression reads
        // exactly as it does in the backfill's UPDATE.
        let compute = format!(
            "SELECT ({expr}) INTO NEW.{col} FROM (SELECT NEW.*) AS {};",
            Ident(model.table)
        );
        out.push(Statement::always(format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgevolve$\n\
             BEGIN\n\
             \x20 -- Fill the column for writers that do not know it (binaries still on the old struct).\n\
             \x20 IF TG_OP = 'INSERT' THEN\n\
             \x20   IF NEW.{col} IS NULL THEN\n\
             \x20     {compute}\n\
             \x20   END IF;\n\
             \x20 ELSIF NEW.{col} IS NOT DISTINCT FROM OLD.{col} THEN\n\
             \x20   {compute}\n\
             \x20 END IF;\n\
             \x20 RETURN NEW;\n\
             END\n\
             $pgevolve$"
        )));
        out.push(Statement::always(format!(
            "CREATE OR REPLACE TRIGGER {} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {function}()",
            Ident(&helpers.trigger)
        )));
    }
    out.push(Statement {
        sql: format!(
            "ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({col} IS NOT NULL) NOT VALID",
            Ident(&helpers.check)
        ),
        unless: Some(Exists::Constraint(helpers.check.clone())),
    });
    out
}

/// Validate: the helper check is proved for every row (SHARE UPDATE EXCLUSIVE: writes go on).
pub(crate) fn validate_filled_column(model: &ModelSpec, helpers: &Helpers) -> Vec<Statement> {
    vec![Statement::always(format!(
        "ALTER TABLE {} VALIDATE CONSTRAINT {}",
        table(model),
        Ident(&helpers.check)
    ))]
}

/// The query that confirms, after validation, that no NULL remains.
pub(crate) fn count_nulls(model: &ModelSpec, column: &ColumnSpec) -> String {
    format!(
        "SELECT count(*) FROM {} WHERE {} IS NULL",
        table(model),
        Ident(column.name)
    )
}

/// Contract: `SET NOT NULL` (no scan: the validated check proves it), then the helpers go.
pub(crate) fn contract_filled_column(
    model: &ModelSpec,
    column: &ColumnSpec,
    helpers: &Helpers,
) -> Vec<Statement> {
    let mut out = require_validated(model, &helpers.check);
    out.push(Statement::always(format!(
        "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
        table(model),
        Ident(column.name)
    )));
    out.extend(drop_fill_helpers(model, column, helpers));
    out
}

/// The check, and for a backfill the trigger and its function.
fn drop_fill_helpers(model: &ModelSpec, column: &ColumnSpec, helpers: &Helpers) -> Vec<Statement> {
    let t = table(model);
    let mut out = vec![Statement::always(format!(
        "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
        Ident(&helpers.check)
    ))];
    if let Fill::Backfill(_) = column.fill {
        out.push(Statement::always(format!(
            "DROP TRIGGER IF EXISTS {} ON {t}",
            Ident(&helpers.trigger)
        )));
        out.push(Statement::always(format!(
            "DROP FUNCTION IF EXISTS {}()",
            Qualified(model.schema, &helpers.function)
        )));
    }
    out
}

/// Abort of a filled column: helpers and the column go; the table is as before expand.
pub(crate) fn abort_filled_column(
    model: &ModelSpec,
    column: &ColumnSpec,
    helpers: &Helpers,
) -> Vec<Statement> {
    let mut out = drop_fill_helpers(model, column, helpers);
    out.push(Statement::always(format!(
        "ALTER TABLE {} DROP COLUMN IF EXISTS {}",
        table(model),
        Ident(column.name)
    )));
    out
}

/// Before a `SET NOT NULL`, in its transaction: the table's lock first (the one `SET NOT NULL`
/// takes anyway, under the same lock_timeout), then proof that the helper check is still
/// validated. Without a validated check, `SET NOT NULL` scans the whole table under ACCESS
/// EXCLUSIVE; with the lock held, nobody can drop or replace the check between the proof and the
/// `SET NOT NULL`. A missing or unvalidated check fails the transaction, which changes nothing.
pub(crate) fn require_validated(model: &ModelSpec, check: &str) -> Vec<Statement> {
    let t = table(model);
    let message = format!(
        "check {check} on {t} is not validated (dropped, or re-added NOT VALID, since validate): \
         SET NOT NULL would scan the table under ACCESS EXCLUSIVE, so contract refuses. Abort the \
         step, or re-add the check NOT VALID and VALIDATE it, then contract again"
    );
    vec![
        Statement::always(format!("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE")),
        Statement::always(format!(
            "DO $pgevolve$ BEGIN\n\
             \x20 IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = {}::regclass \
             AND conname = {} AND contype = 'c' AND convalidated) THEN\n\
             \x20   RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE = {};\n\
             \x20 END IF;\n\
             END $pgevolve$",
            Literal(&t.to_string()),
            Literal(check),
            Literal(&message)
        )),
    ]
}

/// For a session about to run a statement that may last minutes (VALIDATE, a count, a
/// concurrent index build): the server checks every second that the client is still there
/// (`client_connection_check_interval`, PostgreSQL 14 and later), so a statement whose process
/// was killed stops within a second instead of running on with its locks, and the next leader
/// does not time out behind it. `is_local`: for this transaction only.
pub(crate) fn watch_client(is_local: bool) -> String {
    format!(
        "SELECT set_config('client_connection_check_interval', '1000', {is_local}) \
         WHERE current_setting('server_version_num')::int >= 140000"
    )
}

/// A literal for state-store SQL that runs in the same transaction as a step's DDL.
pub(crate) fn lit(s: &str) -> String {
    Literal(s).to_string()
}
