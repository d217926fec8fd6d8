//! Indexes and constraints as the live catalog has them, and probes that let PostgreSQL itself
//! say how it would write a planned index or CHECK, so the two can be compared exactly.

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::LiveTable;
use crate::ident::{Ident, Qualified};
use crate::spec::ModelSpec;

/// A relation found under an index's planned name.
#[derive(Debug, Clone)]
pub(crate) struct LiveIndex {
    /// An index (`relkind` `i`) of the model's table; otherwise the name is taken by something
    /// else (a table, a view, an index of another table).
    pub on_table: bool,
    /// `pg_index.indisvalid`.
    pub valid: bool,
    /// A `CREATE INDEX` is building it right now (`pg_stat_progress_create_index`), possibly in
    /// a session whose client has gone away.
    pub building: bool,
    /// The comparable part of `pg_get_indexdef` (see [`index_key`]).
    pub key: String,
    /// `pg_get_indexdef`, for messages.
    pub definition: String,
}

/// Reads the relation named `name` in `model`'s schema.
pub(crate) async fn read_index(
    conn: &mut PgConnection,
    model: &ModelSpec,
    name: &str,
) -> sqlx::Result<Option<LiveIndex>> {
    let row = sqlx::query(
        "SELECT c.relkind = 'i' AND i.indrelid = to_regclass($3) AS on_table, \
                COALESCE(i.indisvalid, false) AS valid, \
                EXISTS (SELECT 1 FROM pg_stat_progress_create_index p \
                         WHERE p.index_relid = c.oid AND p.datname = current_database()) AS building, \
                CASE WHEN c.relkind = 'i' THEN pg_get_indexdef(c.oid) END AS definition \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_index i ON i.indexrelid = c.oid \
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(model.schema)
    .bind(name)
    .bind(Qualified(model.schema, model.table).to_string())
    .fetch_optional(conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let definition: String = r
        .try_get::<Option<String>, _>("definition")?
        .unwrap_or_default();
    Ok(Some(LiveIndex {
        on_table: r.try_get::<Option<bool>, _>("on_table")?.unwrap_or(false),
        valid: r.try_get("valid")?,
        building: r.try_get("building")?,
        key: index_key(&definition),
        definition,
    }))
}

/// The valid indexes of the model's table other than `except`, as (name, key): to point out an
/// existing index with the planned definition under another name.
pub(crate) async fn equivalent_index(
    conn: &mut PgConnection,
    model: &ModelSpec,
    key: &str,
    except: &str,
) -> sqlx::Result<Option<String>> {
    let rows = sqlx::query(
        "SELECT c.relname::text AS name, pg_get_indexdef(c.oid) AS definition \
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = to_regclass($1) AND i.indisvalid AND c.relname <> $2",
    )
    .bind(Qualified(model.schema, model.table).to_string())
    .bind(except)
    .fetch_all(conn)
    .await?;
    for r in rows {
        if index_key(&r.try_get::<String, _>("definition")?) == key {
            return Ok(Some(r.try_get("name")?));
        }
    }
    Ok(None)
}

/// `UNIQUE ` (or nothing) and what follows ` USING ` in an index definition: everything that
/// makes two indexes equivalent, without their names and tables.
pub(crate) fn index_key(definition: &str) -> String {
    let unique = if definition.starts_with("CREATE UNIQUE") {
        "UNIQUE "
    } else {
        ""
    };
    match definition.split_once(" USING ") {
        Some((_, tail)) => format!("{unique}USING {tail}"),
        None => definition.to_string(),
    }
}

/// A constraint of the model's table.
#[derive(Debug, Clone)]
pub(crate) struct LiveConstraint {
    pub name: String,
    /// `pg_constraint.contype`: `c`, `f`, `p`, `u`, `x`, `t`.
    pub kind: String,
    /// `pg_get_constraintdef` without a trailing ` NOT VALID`.
    pub definition: String,
    pub validated: bool,
    /// `confdeltype` of a foreign key: `a`, `r`, `c`, `n`, `d`.
    pub on_delete: Option<String>,
}

const CONSTRAINT_COLUMNS: &str = "k.conname::text AS name, k.contype::text AS kind, \
                                  pg_get_constraintdef(k.oid) AS definition, k.convalidated AS validated, \
                                  NULLIF(k.confdeltype, ' ')::text AS on_delete";

fn constraint(r: Option<sqlx::postgres::PgRow>) -> sqlx::Result<Option<LiveConstraint>> {
    let Some(r) = r else { return Ok(None) };
    let definition: String = r.try_get("definition")?;
    Ok(Some(LiveConstraint {
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        definition: definition
            .strip_suffix(" NOT VALID")
            .unwrap_or(&definition)
            .to_string(),
        validated: r.try_get("validated")?,
        on_delete: r.try_get("on_delete")?,
    }))
}

/// The constraint named `name` on the model's table.
pub(crate) async fn constraint_named(
    conn: &mut PgConnection,
    model: &ModelSpec,
    name: &str,
) -> sqlx::Result<Option<LiveConstraint>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONSTRAINT_COLUMNS} FROM pg_constraint k WHERE k.conrelid = to_regclass($1) AND k.conname = $2"
    )))
    .bind(Qualified(model.schema, model.table).to_string())
    .bind(name)
    .fetch_optional(conn)
    .await?;
    constraint(row)
}

/// A unique or primary key constraint on exactly `column` of the model's table.
pub(crate) async fn unique_constraint(
    conn: &mut PgConnection,
    model: &ModelSpec,
    column: &str,
) -> sqlx::Result<Option<LiveConstraint>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONSTRAINT_COLUMNS} FROM pg_constraint k \
         WHERE k.conrelid = to_regclass($1) AND k.contype IN ('u', 'p') \
           AND k.conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = k.conrelid AND attname = $2)] \
         ORDER BY k.contype = 'u' DESC LIMIT 1"
    )))
    .bind(Qualified(model.schema, model.table).to_string())
    .bind(column)
    .fetch_optional(conn)
    .await?;
    constraint(row)
}

/// A foreign key from exactly `column` to exactly `referenced(ref_column)`.
pub(crate) async fn foreign_key(
    conn: &mut PgConnection,
    model: &ModelSpec,
    column: &str,
    referenced: &str,
    ref_column: &str,
) -> sqlx::Result<Option<LiveConstraint>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONSTRAINT_COLUMNS} FROM pg_constraint k \
         WHERE k.conrelid = to_regclass($1) AND k.contype = 'f' \
           AND k.conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = k.conrelid AND attname = $2)] \
           AND k.confrelid = to_regclass($3) \
           AND k.confkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = k.confrelid AND attname = $4)] \
         LIMIT 1"
    )))
    .bind(Qualified(model.schema, model.table).to_string())
    .bind(column)
    .bind(referenced)
    .bind(ref_column)
    .fetch_optional(conn)
    .await?;
    constraint(row)
}

/// What a foreign key needs on the referenced side, as the catalog has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Referenced {
    /// The referenced table does not exist (yet: it may be created by another model).
    NoTable,
    /// The table exists but has no such column.
    NoColumn,
    /// The column is not covered by a primary key, unique constraint or plain unique index.
    NotUnique,
    /// Ready to be referenced.
    Ok,
}

/// Whether `referenced(ref_column)` can be the target of a foreign key.
pub(crate) async fn referenced(
    conn: &mut PgConnection,
    referenced: &str,
    ref_column: &str,
) -> sqlx::Result<Referenced> {
    let row = sqlx::query(
        "SELECT to_regclass($1) IS NOT NULL, \
                EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 \
                         AND attnum > 0 AND NOT attisdropped), \
                EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique \
                         AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = 1 \
                         AND i.indkey[0] = (SELECT attnum FROM pg_attribute \
                                             WHERE attrelid = to_regclass($1) AND attname = $2))",
    )
    .bind(referenced)
    .bind(ref_column)
    .fetch_one(conn)
    .await?;
    Ok(match (r_get(&row, 0), r_get(&row, 1), r_get(&row, 2)) {
        (false, _, _) => Referenced::NoTable,
        (true, false, _) => Referenced::NoColumn,
        (true, true, false) => Referenced::NotUnique,
        (true, true, true) => Referenced::Ok,
    })
}

fn r_get(row: &sqlx::postgres::PgRow, i: usize) -> bool {
    row.get::<Option<bool>, _>(i).unwrap_or(false)
}

/// What a probe builds on an empty copy of the table.
pub(crate) enum Probe<'a> {
    /// An index, `UNIQUE` or not, with everything after `ON <table>` (see
    /// `sql::index::IndexDef::body`): the result is its [`index_key`].
    Index { unique: bool, body: &'a str },
    /// A CHECK expression: the result is its `pg_get_constraintdef` (without ` NOT VALID`).
    Check(&'a str),
}

/// Builds the index or CHECK on an empty temporary copy of the model's table (named like the
/// table, with the columns the model adds), inside a transaction that is rolled back, and
/// returns how PostgreSQL writes it back, or why it rejects it. Nothing is changed.
pub(crate) async fn probe(
    conn: &mut PgConnection,
    model: &ModelSpec,
    live: &LiveTable,
    what: Probe<'_>,
) -> sqlx::Result<std::result::Result<String, String>> {
    let mut tx = conn.begin().await?;
    let temp = Qualified("pg_temp", model.table).to_string();
    let result = async {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TEMPORARY TABLE {} (LIKE {}) ON COMMIT DROP",
            Ident(model.table),
            Qualified(model.schema, model.table)
        )))
        .execute(&mut *tx)
        .await?;
        for column in model
            .columns
            .iter()
            .filter(|c| live.column(c.name).is_none())
        {
            sqlx::query(AssertSqlSafe(format!(
                "ALTER TABLE {temp} ADD COLUMN {} {}",
                Ident(column.name),
                column.sql_type
            )))
            .execute(&mut *tx)
            .await?;
        }
        match what {
            Probe::Index { unique, body } => {
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE {}INDEX pgevolve_probe ON {temp} {body}",
                    if unique { "UNIQUE " } else { "" },
                )))
                .execute(&mut *tx)
                .await?;
                let definition: String = sqlx::query_scalar(
                    "SELECT pg_get_indexdef(to_regclass('pg_temp.pgevolve_probe'))",
                )
                .fetch_one(&mut *tx)
                .await?;
                Ok(index_key(&definition))
            }
            Probe::Check(expr) => {
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER TABLE {temp} ADD CONSTRAINT pgevolve_probe CHECK ({expr}) NOT VALID"
                )))
                .execute(&mut *tx)
                .await?;
                let definition: String = sqlx::query_scalar(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
                     WHERE conrelid = to_regclass($1) AND conname = 'pgevolve_probe'",
                )
                .bind(&temp)
                .fetch_one(&mut *tx)
                .await?;
                Ok(definition
                    .strip_suffix(" NOT VALID")
                    .unwrap_or(&definition)
                    .to_string())
            }
        }
    }
    .await;
    tx.rollback().await?;
    match result {
        Ok(key) => Ok(Ok(key)),
        Err(sqlx::Error::Database(e)) => Ok(Err(e.message().to_string())),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::index_key;

    #[test]
    fn keys_ignore_names_and_tables() {
        assert_eq!(
            index_key("CREATE UNIQUE INDEX a ON public.users USING btree (email) WHERE (x > 1)"),
            index_key(
                "CREATE UNIQUE INDEX pgevolve_probe ON pg_temp_3.users USING btree (email) WHERE (x > 1)"
            )
        );
        assert_ne!(
            index_key("CREATE UNIQUE INDEX a ON public.users USING btree (email)"),
            index_key("CREATE INDEX a ON public.users USING btree (email)")
        );
    }
}
