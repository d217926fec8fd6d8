//! The SQL of a column computed in Rust (`#[evolve(backfill_with = "f", inputs(..))]`, see
//! `kinds::computed_column`): its expand (the column, the marker, the mark trigger and the
//! reset trigger), the batch's read (keys, row version and inputs of the rows still without a
//! value) and write (the values, guarded by the row version, and the checkpoint), and its
//! validate and contract.
//!
//! A trigger cannot run Rust, so no trigger computes the value: a row an old build inserts
//! stays `NULL`, and a row whose inputs an old build changes is reset to `NULL` (unless a
//! build that knows the column wrote its value); the backfill walks the rows that are `NULL`.

use std::time::Duration;

use super::key_range::{self, Key};
use super::{
    Helpers, Statement, add_not_null_check, create_trigger, drop_fill_helpers,
    mark_function_statement, set_not_null, table,
};
use crate::ident::{Ident, Literal, Qualified};
use crate::spec::{ColumnSpec, ModelSpec};
use crate::step::StepId;

/// The alias of the `n`th input in the batch's read, which the generated adapter reads by name.
pub(crate) fn input_alias(n: usize) -> String {
    format!("__pgevolve_in{n}")
}

/// Expand: the column and the marker (nullable, metadata only), the mark trigger (as for a SQL
/// backfill) and the reset trigger. No `CHECK (col IS NOT NULL)` yet: old builds insert rows
/// without a value until every instance runs a build that knows the column; validate adds it.
pub(crate) fn expand(model: &ModelSpec, column: &ColumnSpec, helpers: &Helpers) -> Vec<Statement> {
    let t = table(model);
    let col = Ident(column.name);
    let marker = Ident(&helpers.marker);
    let function = Qualified(model.schema, &helpers.function);
    let mark_function = Qualified(model.schema, &helpers.mark_function);
    let inputs = column.computed.map(|c| c.inputs).unwrap_or_default();
    let row = |prefix: &str| {
        inputs
            .iter()
            .map(|i| format!("{prefix}.{}", Ident(i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = vec![
        Statement::always(format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {col} {}",
            column.sql_type
        )),
        Statement::always(format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {marker} bigint"
        )),
        mark_function_statement(&mark_function, &col, &marker),
        Statement::always(format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgevolve$\n\
             BEGIN\n\
             \x20 -- The value is computed in Rust by the backfill, which walks the rows where it is NULL.\n\
             \x20 IF TG_OP = 'INSERT' THEN\n\
             \x20   IF NEW.{col} IS NULL THEN\n\
             \x20     NEW.{marker} := NULL; -- an old build's row: the backfill computes it\n\
             \x20   ELSE\n\
             \x20     NEW.{marker} := 1;\n\
             \x20   END IF;\n\
             \x20 ELSIF NEW.{marker} = 1 THEN\n\
             \x20   NULL; -- set by a writer that knows the column: never replaced\n\
             \x20 ELSIF NEW.{col} IS DISTINCT FROM OLD.{col} THEN\n\
             \x20   NULL; -- written explicitly (the backfill)\n\
             \x20 ELSIF ROW({new}) IS DISTINCT FROM ROW({old}) THEN\n\
             \x20   -- an old build changed an input: the value is stale, the backfill computes it again\n\
             \x20   NEW.{col} := NULL;\n\
             \x20   NEW.{marker} := NULL;\n\
             \x20 END IF;\n\
             \x20 RETURN NEW;\n\
             END\n\
             $pgevolve$",
            new = row("NEW"),
            old = row("OLD"),
        )),
    ];
    out.extend(create_trigger(
        &t,
        &helpers.mark_trigger,
        &format!("BEFORE UPDATE OF {col}"),
        &mark_function,
    ));
    out.extend(create_trigger(
        &t,
        &helpers.trigger,
        "BEFORE INSERT OR UPDATE",
        &function,
    ));
    out
}

/// Validate: the `CHECK (col IS NOT NULL) NOT VALID` (from now on a write without a value is
/// refused), then its validation (SHARE UPDATE EXCLUSIVE: writes go on). The engine drains the
/// rows without a value before each.
pub(crate) fn validate(
    model: &ModelSpec,
    column: &ColumnSpec,
    helpers: &Helpers,
) -> Vec<Statement> {
    vec![
        add_not_null_check(model, column.name, &helpers.check),
        Statement::always(format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            table(model),
            Ident(&helpers.check)
        )),
    ]
}

/// Contract: `SET NOT NULL` through the validated check, then the helpers go.
pub(crate) fn contract(
    model: &ModelSpec,
    column: &ColumnSpec,
    helpers: &Helpers,
) -> Vec<Statement> {
    let mut out = set_not_null(model, column, &helpers.check);
    out.extend(drop_fill_helpers(model, column, helpers));
    out
}

/// Abort: the helpers and the column go.
pub(crate) fn abort(model: &ModelSpec, column: &ColumnSpec, helpers: &Helpers) -> Vec<Statement> {
    let mut out = drop_fill_helpers(model, column, helpers);
    out.push(Statement::always(format!(
        "ALTER TABLE {} DROP COLUMN IF EXISTS {}",
        table(model),
        Ident(column.name)
    )));
    out
}

/// The batch's read: up to `limit` rows above `cursor` (`None`: from the first key) and up to
/// `upper` (the highest key when the walk started: rows inserted later are the next walk's)
/// whose column is still `NULL`, in key order, with their keys as text (`__pgevolve_k0..`), their row
/// version (`__pgevolve_xmin`, which any later write of the row changes) and their inputs
/// (`__pgevolve_in0..`). A walk of the primary key index; no lock taken.
pub(crate) fn read(
    model: &ModelSpec,
    column: &ColumnSpec,
    cursor: Option<&[String]>,
    upper: &[String],
    limit: u32,
) -> String {
    let key = Key::of(model);
    read_with(
        model,
        column,
        cursor.map(|c| key.literals(c)),
        key.literals(upper),
        limit.to_string(),
    )
}

/// [`read`] as plans show it: `$1..$k` the cursor, `$k+1..$2k` the walk's bound, `$2k+1` the
/// batch size.
pub(crate) fn read_shown(model: &ModelSpec, column: &ColumnSpec) -> String {
    let key = Key::of(model);
    let k = key.len();
    read_with(
        model,
        column,
        Some(key.placeholders(1)),
        key.placeholders(k + 1),
        format!("${}", 2 * k + 1),
    )
}

fn read_with(
    model: &ModelSpec,
    column: &ColumnSpec,
    cursor: Option<String>,
    upper: String,
    limit: String,
) -> String {
    let key = Key::of(model);
    let mut select = vec![
        key.select_text(),
        "xmin::text AS __pgevolve_xmin".to_string(),
    ];
    let inputs = column.computed.map(|c| c.inputs).unwrap_or_default();
    select.extend(
        inputs
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} AS {}", Ident(c), input_alias(i))),
    );
    let above = match cursor {
        Some(cursor) => format!("{} AND ", key.above("", &cursor)),
        None => String::new(),
    };
    format!(
        "SELECT {} FROM {} WHERE {above}{} AND {} IS NULL ORDER BY {} LIMIT {limit}",
        select.join(", "),
        table(model),
        key.at_most("", &upper),
        Ident(column.name),
        key.columns(""),
    )
}

/// The settings of the write's transaction: how long it may wait for a row lock and run, and
/// with `skip_user_triggers`, `session_replication_role = replica` for this transaction only
/// (the write sets the marker itself, as the skipped mark trigger would). Then, in the same
/// simple query, the WAL position before the write (`backfill::wal_start`), for the WAL
/// budget.
pub(crate) fn write_settings(
    lock_timeout: Duration,
    batch_timeout: Duration,
    skip_user_triggers: bool,
) -> String {
    format!(
        "SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{}ms'; {}{}; {}",
        lock_timeout.max(batch_timeout).as_millis(),
        batch_timeout.as_millis(),
        super::NO_JIT.trim_end_matches(';'),
        if skip_user_triggers {
            "; SET LOCAL session_replication_role = replica"
        } else {
            ""
        },
        super::backfill::wal_start(),
    )
}

/// The batch's write, one statement: binds `$1..$k` the keys (text arrays), `$k+1` the row
/// versions read (text array), `$k+2` the values computed (an array of the column's type),
/// `$k+3` the checkpoint (the batch's last key, text array). A value is written only where the
/// column is still `NULL` and the row is the version that was read: a row an old build changed
/// meanwhile keeps `NULL` and is computed again from its new inputs later; one a new build
/// wrote keeps its value. The marker becomes minus the transaction id (the mark trigger then
/// leaves it, as for a SQL backfill). The step's checkpoint and count move in the same
/// statement. Returns the rows written.
pub(crate) fn write(
    model: &ModelSpec,
    column: &ColumnSpec,
    helpers: &Helpers,
    steps_table: &str,
    step: &StepId,
) -> String {
    let pk: Vec<&ColumnSpec> = model.primary_key().collect();
    let k = pk.len();
    let alias = Ident(model.table);
    let col = Ident(column.name);
    let marker = Ident(&helpers.marker);
    let mut arrays: Vec<String> = (1..=k).map(|i| format!("${i}::text[]")).collect();
    arrays.push(format!("${}::text[]", k + 1));
    arrays.push(format!("${}::{}[]", k + 2, column.sql_type));
    let mut names = Key::of(model).aliases();
    names.push("__pgevolve_xmin".into());
    names.push("__pgevolve_value".into());
    let mut guard: Vec<String> = pk
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{alias}.{} = v.{}::{}",
                Ident(c.name),
                key_range::alias(i),
                c.sql_type
            )
        })
        .collect();
    guard.push(format!("{alias}.xmin = v.__pgevolve_xmin::xid"));
    guard.push(format!("{alias}.{col} IS NULL"));
    format!(
        "WITH v AS (\n\
         \x20 SELECT * FROM unnest({arrays}) AS v({names})\n\
         ), filled AS (\n\
         \x20 UPDATE {t} AS {alias}\n\
         \x20 SET {col} = v.__pgevolve_value,\n\
         \x20     {marker} = CASE WHEN {alias}.{marker} = 1 THEN 1 ELSE -txid_current() END\n\
         \x20 FROM v\n\
         \x20 WHERE {guard}\n\
         \x20 RETURNING 1\n\
         ), checkpoint AS (\n\
         \x20 UPDATE {steps_table} SET checkpoint = ${checkpoint}::text[],\n\
         \x20   rows_done = rows_done + (SELECT count(*) FROM filled), updated_at = now()\n\
         \x20 WHERE id = {id}\n\
         )\n\
         SELECT (SELECT count(*) FROM filled) AS filled",
        arrays = arrays.join(", "),
        names = names.join(", "),
        t = table(model),
        guard = guard.join("\n\x20   AND "),
        checkpoint = k + 3,
        id = Literal(step.as_str()),
    )
}

/// Where a walk ends: the checkpoint goes back to the start, so the next walk (or a process
/// that resumes) begins at the first key.
pub(crate) fn end_walk(steps_table: &str, step: &StepId) -> String {
    format!(
        "UPDATE {steps_table} SET checkpoint = NULL, updated_at = now() WHERE id = {}",
        Literal(step.as_str())
    )
}

/// The rows still without a value (a scan; ACCESS SHARE only).
pub(crate) fn count_missing(model: &ModelSpec, column: &ColumnSpec) -> String {
    super::count_nulls(model, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ComputeFn, Computed};
    use crate::step::StepKind;

    fn adapter(
        _: &[sqlx::postgres::PgRow],
        q: crate::__private::ComputeQuery,
    ) -> Result<crate::__private::ComputeQuery, sqlx::Error> {
        Ok(q)
    }

    static COLUMNS: [ColumnSpec; 4] = [
        ColumnSpec {
            name: "id",
            sql_type: "bigint",
            primary_key: true,
            ..ColumnSpec::DEFAULT
        },
        ColumnSpec {
            name: "Email",
            sql_type: "text",
            ..ColumnSpec::DEFAULT
        },
        ColumnSpec {
            name: "name",
            sql_type: "text",
            ..ColumnSpec::DEFAULT
        },
        ColumnSpec {
            name: "key",
            sql_type: "text",
            computed: Some(Computed {
                function: "crate::fill::key",
                inputs: &["Email", "name"],
                compute: adapter as ComputeFn,
            }),
            ..ColumnSpec::DEFAULT
        },
    ];

    const MODEL: ModelSpec = ModelSpec {
        table: "people",
        columns: &COLUMNS,
        ..ModelSpec::DEFAULT
    };

    #[test]
    fn the_reset_trigger_compares_the_quoted_inputs_and_no_check_comes_before_validate() {
        let id = StepId::for_step(&MODEL, &StepKind::AddComputedColumn(&COLUMNS[3]));
        let h = Helpers::new(&MODEL, &COLUMNS[3], &id);
        let sql: Vec<String> = expand(&MODEL, &COLUMNS[3], &h)
            .into_iter()
            .map(|s| s.sql)
            .collect();
        assert!(
            sql.iter().any(|s| s.contains(
                "ROW(NEW.\"Email\", NEW.\"name\") IS DISTINCT FROM ROW(OLD.\"Email\", OLD.\"name\")"
            )),
            "{sql:#?}"
        );
        assert!(!sql.iter().any(|s| s.contains("CHECK")), "{sql:#?}");
        let validate = validate(&MODEL, &COLUMNS[3], &h);
        assert!(
            validate[0]
                .sql
                .contains("CHECK (\"key\" IS NOT NULL) NOT VALID")
        );
    }

    #[test]
    fn a_batch_reads_only_rows_without_a_value_and_writes_only_the_version_it_read() {
        let id = StepId::for_step(&MODEL, &StepKind::AddComputedColumn(&COLUMNS[3]));
        let h = Helpers::new(&MODEL, &COLUMNS[3], &id);
        let read = read(
            &MODEL,
            &COLUMNS[3],
            Some(&["10".into()]),
            &["99".into()],
            50,
        );
        assert!(read.contains("(\"id\") > ('10'::bigint)"), "{read}");
        assert!(read.contains("(\"id\") <= ('99'::bigint)"), "{read}");
        assert!(
            read.contains("\"key\" IS NULL ORDER BY \"id\" LIMIT 50"),
            "{read}"
        );
        assert!(read.contains("\"Email\" AS __pgevolve_in0, \"name\" AS __pgevolve_in1"));
        let write = write(&MODEL, &COLUMNS[3], &h, "\"pgevolve\".\"steps\"", &id);
        for guard in [
            "\"people\".xmin = v.__pgevolve_xmin::xid",
            "\"people\".\"key\" IS NULL",
            "unnest($1::text[], $2::text[], $3::text[])",
            "checkpoint = $4::text[]",
        ] {
            assert!(write.contains(guard), "{guard} in {write}");
        }
    }
}
