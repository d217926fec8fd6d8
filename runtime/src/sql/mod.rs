//! The SQL of every phase of every step kind. Pure functions of the spec: plans, snapshots and
//! the executor all use these, so what `plan()` shows is exactly what runs.

pub(crate) mod backfill;
pub(crate) mod carry;
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
///
/// A backfilled column gets, besides the `CHECK (col IS NOT NULL) NOT VALID` helper:
/// - the **marker column** (`pgevolve_set_...`, nullable `bigint`): `1` when a writer that knows
///   the column set the row's value, `NULL` or a negative number when the value was computed
///   (by the fill trigger, or by the backfill pass, which writes minus its transaction id);
/// - the **mark trigger** (`pgevolve_explicit_...`, `BEFORE UPDATE OF col`): PostgreSQL fires it
///   only for statements whose `SET` list names the column, so it marks exactly the rows of
///   writers that know the column, from the statement itself and never from session state;
/// - the **fill trigger** (`pgevolve_fill_...`, `BEFORE INSERT OR UPDATE`): computes the
///   expression for rows the marker does not protect.
///
/// Triggers of one event fire in name order: `pgevolve_explicit_...` sorts before
/// `pgevolve_fill_...` whatever the table and column, so the mark is set before the fill
/// trigger reads it.
#[derive(Debug, Clone)]
pub(crate) struct Helpers {
    pub check: String,
    pub function: String,
    pub trigger: String,
    /// The marker column (backfilled columns only).
    pub marker: String,
    /// The mark trigger's function.
    pub mark_function: String,
    /// The mark trigger.
    pub mark_trigger: String,
}

impl Helpers {
    pub(crate) fn new(model: &ModelSpec, column: &ColumnSpec, id: &StepId) -> Helpers {
        let id = id.as_str();
        Helpers {
            check: object_name("pgevolve_nn", model.table, column.name, id),
            function: object_name("pgevolve_fill", model.table, column.name, id),
            trigger: object_name("pgevolve_fill", model.table, column.name, id),
            marker: object_name("pgevolve_set", model.table, column.name, id),
            mark_function: object_name("pgevolve_explicit", model.table, column.name, id),
            mark_trigger: object_name("pgevolve_explicit", model.table, column.name, id),
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
/// `CHECK (col IS NOT NULL) NOT VALID` that new writes must already satisfy, and for a backfill
/// the marker column, the mark trigger and the fill trigger (see [`Helpers`]), which compute the
/// value for rows written by code that does not know the column, and only for those.
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
        let marker = Ident(&helpers.marker);
        let function = Qualified(model.schema, &helpers.function);
        let mark_function = Qualified(model.schema, &helpers.mark_function);
        out.push(Statement::always(format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {marker} bigint"
        )));
        // No session state (search_path, settings) decides anything: whether the writer knows
        // the column is a property of its statement (`UPDATE OF` fires only when the SET list
        // names the column), so poolers and proxies cannot confuse it.
        out.push(Statement::always(format!(
            "CREATE OR REPLACE FUNCTION {mark_function}() RETURNS trigger LANGUAGE plpgsql AS $pgevolve$\n\
             BEGIN\n\
             \x20 -- Fires only for statements that name {col}: the writer knows the column. The\n\
             \x20 -- backfill pass names it too, and is told apart by the marker it writes, minus\n\
             \x20 -- its own transaction id (no other transaction can produce that value).\n\
             \x20 IF NEW.{marker} IS NULL OR NEW.{marker} >= 0 OR NEW.{marker} <> -txid_current() THEN\n\
             \x20   NEW.{marker} := 1;\n\
             \x20 END IF;\n\
             \x20 RETURN NEW;\n\
             END\n\
             $pgevolve$"
        )));
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
             \x20   ELSE\n\
             \x20     NEW.{marker} := 1;\n\
             \x20   END IF;\n\
             \x20 ELSIF NEW.{marker} = 1 THEN\n\
             \x20   NULL; -- set by a writer that knows the column: never replaced\n\
             \x20 ELSIF NEW.{col} IS DISTINCT FROM OLD.{col} THEN\n\
             \x20   NULL; -- written explicitly (the backfill pass)\n\
             \x20 ELSE\n\
             \x20   {compute}\n\
             \x20 END IF;\n\
             \x20 RETURN NEW;\n\
             END\n\
             $pgevolve$"
        )));
        out.push(Statement::always(format!(
            "CREATE OR REPLACE TRIGGER {} BEFORE UPDATE OF {col} ON {t} FOR EACH ROW EXECUTE FUNCTION {mark_function}()",
            Ident(&helpers.mark_trigger)
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

/// The check, and for a backfill both triggers, their functions and the marker column (no
/// accessor of any build names the marker, so it goes without waiting for anyone).
fn drop_fill_helpers(model: &ModelSpec, column: &ColumnSpec, helpers: &Helpers) -> Vec<Statement> {
    let t = table(model);
    let mut out = vec![Statement::always(format!(
        "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
        Ident(&helpers.check)
    ))];
    if let Fill::Backfill(_) = column.fill {
        for (trigger, function) in [
            (&helpers.trigger, &helpers.function),
            (&helpers.mark_trigger, &helpers.mark_function),
        ] {
            out.push(Statement::always(format!(
                "DROP TRIGGER IF EXISTS {} ON {t}",
                Ident(trigger)
            )));
            out.push(Statement::always(format!(
                "DROP FUNCTION IF EXISTS {}()",
                Qualified(model.schema, function)
            )));
        }
        out.push(Statement::always(format!(
            "ALTER TABLE {t} DROP COLUMN IF EXISTS {}",
            Ident(&helpers.marker)
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

#[cfg(test)]
mod tests {
    use super::*;

    static PLAN: ColumnSpec = ColumnSpec {
        field: "plan",
        name: "plan",
        sql_type: "text",
        fill: Fill::Backfill("'free'"),
        ..ColumnSpec::DEFAULT
    };

    /// Triggers of one event fire in name order (PostgreSQL compares names bytewise, as `str`
    /// does): the mark trigger must run before the fill trigger that reads its mark, whatever
    /// the table and column are called, including names cut to the 63-byte limit.
    #[test]
    fn the_mark_trigger_fires_before_the_fill_trigger() {
        let long = "z".repeat(80);
        for table in ["a", "accounts", "zzzz", long.as_str()] {
            for column in ["a", "plan", "~~~", long.as_str()] {
                let model = ModelSpec {
                    table: Box::leak(table.to_string().into_boxed_str()),
                    ..ModelSpec::DEFAULT
                };
                let column = ColumnSpec {
                    name: Box::leak(column.to_string().into_boxed_str()),
                    ..PLAN
                };
                let id = StepId::for_step(&model, &crate::step::StepKind::AddFilledColumn(&PLAN));
                let h = Helpers::new(&model, &column, &id);
                assert!(
                    h.mark_trigger < h.trigger,
                    "{} must sort before {}",
                    h.mark_trigger,
                    h.trigger
                );
                for name in [&h.mark_trigger, &h.trigger, &h.marker, &h.check] {
                    assert!(name.len() <= 63, "{name}");
                }
                assert_ne!(h.marker, column.name);
            }
        }
    }

    #[test]
    fn a_backfill_expands_with_a_marker_and_a_mark_trigger_on_the_column() {
        let model = ModelSpec {
            table: "accounts",
            ..ModelSpec::DEFAULT
        };
        let id = StepId::for_step(&model, &crate::step::StepKind::AddFilledColumn(&PLAN));
        let h = Helpers::new(&model, &PLAN, &id);
        let sql: Vec<String> = expand_filled_column(&model, &PLAN, &h)
            .into_iter()
            .map(|s| s.sql)
            .collect();
        let marker = format!("ADD COLUMN IF NOT EXISTS \"{}\" bigint", h.marker);
        assert!(sql.iter().any(|s| s.contains(&marker)), "{sql:#?}");
        let mark = format!("\"{}\" BEFORE UPDATE OF \"plan\" ON", h.mark_trigger);
        assert!(sql.iter().any(|s| s.contains(&mark)), "{sql:#?}");
        // Contract and abort drop the marker and both triggers.
        for drops in [
            contract_filled_column(&model, &PLAN, &h),
            abort_filled_column(&model, &PLAN, &h),
        ] {
            let drops: Vec<&str> = drops.iter().map(|s| s.sql.as_str()).collect();
            for name in [
                &h.marker,
                &h.mark_trigger,
                &h.mark_function,
                &h.trigger,
                &h.check,
            ] {
                assert!(
                    drops.iter().any(|s| s.contains(name.as_str())),
                    "{name} in {drops:#?}"
                );
            }
        }
    }
}
