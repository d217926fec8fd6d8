//! The SQL of a column type change (`type_from = "..."`): a new column of the new type kept in
//! step with the old one by a trigger (both ways), backfilled, validated, then given the old
//! column's name at contract once the old column is dropped.
//!
//! `using` computes the new value from the old one, `down` the old value from the new one; each
//! names the column by its own name and sees only that value (see [`up_of`], [`down_of`]).

use super::{Exists, Statement, table};
use crate::ident::{Ident, Qualified};
use crate::spec::{ColumnSpec, ModelSpec, TypeChange};
use crate::step::StepId;
use pgevolve_naming::object_name;

/// Where an accessor's write value stands in [`FieldAccess::values`](crate::kinds::FieldAccess).
pub(crate) const PARAM: &str = "{param}";

/// Names of the objects a type change creates.
#[derive(Debug, Clone)]
pub(crate) struct TypeHelpers {
    /// The new column, of the new type, until contract gives it the old name.
    pub shadow: String,
    pub check: String,
    pub function: String,
    pub trigger: String,
}

impl TypeHelpers {
    pub(crate) fn new(model: &ModelSpec, column: &ColumnSpec, id: &StepId) -> TypeHelpers {
        let id = id.as_str();
        TypeHelpers {
            shadow: shadow_name(column),
            check: object_name("pgevolve_nn", model.table, column.name, id),
            function: object_name("pgevolve_types", model.table, column.name, id),
            trigger: object_name("pgevolve_types", model.table, column.name, id),
        }
    }
}

/// The new column's name: `pgevolve_new_<column>_<hash>`, from the column and the change alone
/// (accessors name it without knowing the step), unique per change and within the 63 bytes.
pub(crate) fn shadow_name(column: &ColumnSpec) -> String {
    let tc = change(column);
    let hash = format!(
        "{:016x}",
        crate::step::fnv1a(&[
            "type change",
            column.name,
            tc.from,
            column.sql_type,
            tc.using.unwrap_or_default(),
            tc.down.unwrap_or_default(),
        ])
    );
    object_name("pgevolve", "new", column.name, &hash)
}

fn change(column: &ColumnSpec) -> TypeChange {
    column.type_change.unwrap_or(TypeChange::DEFAULT)
}

/// `expr` evaluated with the column's name standing for `value` only.
fn over(expr: &str, column: &ColumnSpec, model: &ModelSpec, value: &str) -> String {
    format!(
        "(SELECT ({expr}) FROM (SELECT {value} AS {}) AS {})",
        Ident(column.name),
        Ident(model.table)
    )
}

/// The new value from `value` (of the old type): `using`, or a cast.
pub(crate) fn up_of(model: &ModelSpec, column: &ColumnSpec, value: &str) -> String {
    let inner = match change(column).using {
        Some(using) => over(using, column, model, value),
        None => value.to_string(),
    };
    format!("CAST({inner} AS {})", column.sql_type)
}

/// The old value from `value` (of the new type): `down`, or a cast.
pub(crate) fn down_of(model: &ModelSpec, column: &ColumnSpec, value: &str) -> String {
    let tc = change(column);
    let inner = match tc.down {
        Some(down) => over(down, column, model, value),
        None => value.to_string(),
    };
    format!("CAST({inner} AS {})", tc.from)
}

/// What an accessor of the new build writes into the old column for its value (`PARAM`).
pub(crate) fn down_param(model: &ModelSpec, column: &ColumnSpec) -> String {
    down_of(
        model,
        column,
        &format!("CAST({PARAM} AS {})", column.sql_type),
    )
}

/// Expand, one transaction: the new column (nullable until contract, with a `NOT VALID` check
/// when the field is not an `Option`) and the trigger that keeps both columns in step.
pub(crate) fn expand(model: &ModelSpec, column: &ColumnSpec, h: &TypeHelpers) -> Vec<Statement> {
    let t = table(model);
    let old = Ident(column.name);
    let new = Ident(&h.shadow);
    let function = Qualified(model.schema, &h.function);
    let up = up_of(model, column, &format!("NEW.{old}"));
    let down = down_of(model, column, &format!("NEW.{new}"));
    let mut out = vec![
        Statement::always(format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {new} {}",
            column.sql_type
        )),
        // Which column a writer set is read off the row (no session state decides anything).
        // A BEFORE trigger changes only the row being written: no second UPDATE, no recursion.
        // The backfill writes the new column as `using` computes it, which changes nothing back.
        Statement::always(format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgevolve$\n\
             BEGIN\n\
             \x20 -- Keep {old} ({from}) and {new} ({to}) in step for writers that set one of them.\n\
             \x20 IF TG_OP = 'INSERT' THEN\n\
             \x20   -- Old builds never name the new column: a value there is the new build's.\n\
             \x20   IF NEW.{new} IS NULL THEN\n\
             \x20     NEW.{new} := {up};\n\
             \x20   ELSE\n\
             \x20     NEW.{old} := {down};\n\
             \x20   END IF;\n\
             \x20 ELSIF NEW.{new} IS DISTINCT FROM OLD.{new} THEN\n\
             \x20   IF NEW.{old} IS NOT DISTINCT FROM OLD.{old} AND NEW.{new} IS DISTINCT FROM {up} THEN\n\
             \x20     NEW.{old} := {down};\n\
             \x20   END IF;\n\
             \x20 -- A row the backfill has not reached yet gets its value when written for any reason\n\
             \x20 -- (a NOT VALID check applies to every row written).\n\
             \x20 ELSIF NEW.{old} IS DISTINCT FROM OLD.{old} OR (NEW.{new} IS NULL AND NEW.{old} IS NOT NULL) THEN\n\
             \x20   NEW.{new} := {up};\n\
             \x20 END IF;\n\
             \x20 RETURN NEW;\n\
             END\n\
             $pgevolve$",
            from = change(column).from,
            to = column.sql_type,
        )),
    ];
    out.extend(super::create_trigger(
        &t,
        &h.trigger,
        "BEFORE INSERT OR UPDATE",
        &function,
    ));
    if !column.nullable {
        out.push(Statement::unless(
            format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({new} IS NOT NULL) NOT VALID",
                Ident(&h.check)
            ),
            Exists::Constraint(h.check.clone()),
        ));
    }
    out
}

/// The expression the backfill fills the new column with, over the row.
pub(crate) fn fill_expr(model: &ModelSpec, column: &ColumnSpec) -> String {
    up_of(model, column, &Ident(column.name).to_string())
}

/// Rows whose new column is NULL (proved none by the validated check).
pub(crate) fn count_nulls(model: &ModelSpec, column: &ColumnSpec) -> String {
    super::count_nulls_in(model, &shadow_name(column))
}

/// Validate: the check (when NOT NULL) is proved; the data check is [`count_differences`].
pub(crate) fn validate(model: &ModelSpec, column: &ColumnSpec, h: &TypeHelpers) -> Vec<Statement> {
    super::validate_not_null_check(model, column, &h.check)
}

/// Rows whose two columns disagree both ways: the new value is not `using` of the old one (a
/// row the old build or the backfill wrote) and the old value is not `down` of the new one (a
/// row the new build wrote). Must be zero.
pub(crate) fn count_differences(model: &ModelSpec, column: &ColumnSpec) -> String {
    super::verify::count_where(model, &differences(model, column))
}

/// A row counted by [`count_differences`].
pub(crate) fn differences(model: &ModelSpec, column: &ColumnSpec) -> String {
    let old = Ident(column.name).to_string();
    let new = Ident(&shadow_name(column)).to_string();
    format!(
        "{new} IS DISTINCT FROM {} AND {old} IS DISTINCT FROM {}",
        up_of(model, column, &old),
        down_of(model, column, &new),
    )
}

/// Contract, between what the carry does before and after the drop: NOT NULL through the
/// validated check, trigger dropped, old column dropped, new column renamed to the old name.
pub(crate) fn contract(model: &ModelSpec, column: &ColumnSpec, h: &TypeHelpers) -> Vec<Statement> {
    let t = table(model);
    let new = Ident(&h.shadow);
    let mut out = Vec::new();
    if !column.nullable {
        out.extend(super::not_null_through_check(model, &h.shadow, &h.check));
    }
    out.extend(super::drop_trigger(model, &h.trigger, &h.function).to_vec());
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP COLUMN {}",
        Ident(column.name)
    )));
    out.push(Statement::always(format!(
        "ALTER TABLE {t} RENAME COLUMN {new} TO {}",
        Ident(column.name)
    )));
    if !column.nullable {
        out.extend(not_null_named_after(model.schema, model.table, column.name));
    }
    out
}

/// From PostgreSQL 18, NOT NULL is a constraint with a name, which `SET NOT NULL` made from the
/// new column's name (`<table>_pgevolve_new_..._not_null`, or a widened key's shadow's): given
/// the name PostgreSQL gives the column's own (`<table>_<column>_not_null`), free since the old
/// column went. Nothing before 18 (no such row), nor when the name would be over the limit.
/// Shared with `key_widening` (the key table and every referencing table).
pub(crate) fn not_null_named_after(schema: &str, table: &str, column: &str) -> Option<Statement> {
    let name = pgevolve_naming::plain_name(table, &[column], "not_null");
    if name.len() > pgevolve_naming::MAX_IDENTIFIER_BYTES {
        return None;
    }
    let t = super::lit(&crate::ident::Qualified(schema, table).to_string());
    Some(Statement::always(format!(
        "DO $pgevolve$\n\
         DECLARE current name;\n\
         BEGIN\n\
         \x20 SELECT conname INTO current FROM pg_catalog.pg_constraint WHERE conrelid = {t}::regclass AND contype = 'n'\n\
         \x20   AND conkey = ARRAY[(SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = {t}::regclass AND attname = {col})];\n\
         \x20 IF current IS NOT NULL AND current <> {name} THEN\n\
         \x20   EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', {t}, current, {name});\n\
         \x20 END IF;\n\
         END\n\
         $pgevolve$",
        col = super::lit(column),
        name = super::lit(&name),
    )))
}

/// Contract with what is carried over (see `sql::carry`), in one transaction.
pub(crate) fn contract_carrying(
    model: &ModelSpec,
    column: &ColumnSpec,
    h: &TypeHelpers,
    carry: &super::carry::Carry,
) -> Vec<Statement> {
    carry.around(contract(model, column, h))
}

/// Abort: trigger, check and the new column go; the old column kept every write.
pub(crate) fn abort(model: &ModelSpec, h: &TypeHelpers) -> Vec<Statement> {
    let t = table(model);
    let mut out = super::drop_trigger(model, &h.trigger, &h.function).to_vec();
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
        Ident(&h.check)
    )));
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP COLUMN IF EXISTS {}",
        Ident(&h.shadow)
    )));
    out
}

/// A query that fails, without touching any table, when `using` or `down` does not compute a
/// value of the other type (unknown function, no such cast): run at boot before any DDL.
pub(crate) fn probe(model: &ModelSpec, column: &ColumnSpec) -> String {
    let tc = change(column);
    format!(
        "SELECT {}, {}",
        up_of(model, column, &format!("CAST(NULL AS {})", tc.from)),
        down_of(model, column, &format!("CAST(NULL AS {})", column.sql_type)),
    )
}

/// Which columns a contract renamed: `$1` the table, `$2` the names the accessors used before
/// contract, `$3` the names the contract gave them, `$4` their types. Gives `renamed`, the
/// positions (from 1) of those whose old name is gone and whose new name has the new type.
/// Read from the catalog tables: within a transaction that began before the contract,
/// `REPEATABLE READ` shows the catalog of its snapshot, and then nothing counts as renamed.
pub(crate) fn renamed_by_contract() -> &'static str {
    "SELECT coalesce(array_agg(r.position ORDER BY r.position) FILTER (WHERE \
         NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::regclass \
                     AND a.attname = r.before AND NOT a.attisdropped) \
         AND EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::regclass \
                     AND a.attname = r.after AND a.atttypid = r.type::regtype AND NOT a.attisdropped)), \
         '{}') AS renamed \
     FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS r(before, after, type, position)"
}

/// A change PostgreSQL makes in the catalog only (see `kinds::change_type_in_place`).
pub(crate) fn alter_in_place(model: &ModelSpec, column: &ColumnSpec) -> Vec<Statement> {
    vec![Statement::always(format!(
        "ALTER TABLE {} ALTER COLUMN {} TYPE {}",
        table(model),
        Ident(column.name),
        column.sql_type
    ))]
}

#[cfg(test)]
mod tests {
    use super::*;

    static QTY: ColumnSpec = ColumnSpec {
        field: "qty",
        name: "qty",
        sql_type: "bigint",
        type_change: Some(TypeChange {
            from: "integer",
            ..TypeChange::DEFAULT
        }),
        ..ColumnSpec::DEFAULT
    };
    static CODE: ColumnSpec = ColumnSpec {
        field: "code",
        name: "code",
        sql_type: "integer",
        type_change: Some(TypeChange {
            from: "text",
            using: Some("trim(code)::integer"),
            down: Some("lpad(code::text, 3, '0')"),
        }),
        ..ColumnSpec::DEFAULT
    };
    const MODEL: ModelSpec = ModelSpec {
        table: "items",
        ..ModelSpec::DEFAULT
    };

    #[test]
    fn casts_without_expressions_and_the_expressions_over_the_value_alone() {
        assert_eq!(up_of(&MODEL, &QTY, "\"qty\""), "CAST(\"qty\" AS bigint)");
        assert_eq!(
            down_of(&MODEL, &QTY, "NEW.\"x\""),
            "CAST(NEW.\"x\" AS integer)"
        );
        assert_eq!(
            up_of(&MODEL, &CODE, "NEW.\"code\""),
            "CAST((SELECT (trim(code)::integer) FROM (SELECT NEW.\"code\" AS \"code\") AS \"items\") AS integer)"
        );
        assert_eq!(
            down_param(&MODEL, &CODE),
            "CAST((SELECT (lpad(code::text, 3, '0')) FROM (SELECT CAST({param} AS integer) AS \"code\") AS \"items\") AS text)"
        );
    }
}
