//! What the live database has: read from the system catalogs, never assumed.

use sqlx::AssertSqlSafe;
use sqlx::{PgConnection, Row};

use crate::spec::ModelSpec;

pub(crate) mod dependents;
pub(crate) mod indexes;

/// A column as the catalog has it.
#[derive(Debug, Clone)]
pub(crate) struct LiveColumn {
    pub name: String,
    pub type_oid: i64,
    pub type_name: String,
    pub not_null: bool,
    /// `pg_attribute.attidentity`: `a` (`GENERATED ALWAYS AS IDENTITY`), `d` (`BY DEFAULT`), or
    /// empty.
    pub identity: String,
    /// The column default as PostgreSQL prints it (`nextval('t_id_seq'::regclass)` for a
    /// `serial`), if any.
    pub default: Option<String>,
}

impl LiveColumn {
    /// `GENERATED ALWAYS AS IDENTITY`: an insert that gives the column a value fails (`428C9`).
    pub fn is_identity_always(&self) -> bool {
        self.identity == "a"
    }

    /// Whether the database assigns a value when an insert leaves the column out: an identity
    /// column, or a default that draws from a sequence (`serial`, `bigserial`).
    pub fn database_assigns(&self) -> bool {
        matches!(self.identity.as_str(), "a" | "d")
            || self
                .default
                .as_deref()
                .is_some_and(|d| d.starts_with("nextval("))
    }
}

/// A table as the catalog has it.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveTable {
    pub exists: bool,
    pub columns: Vec<LiveColumn>,
    pub primary_key: Vec<String>,
}

impl LiveTable {
    pub fn column(&self, name: &str) -> Option<&LiveColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Reads the table of a model.
pub(crate) async fn read_table(
    conn: &mut PgConnection,
    model: &ModelSpec,
) -> sqlx::Result<LiveTable> {
    let oid: Option<i64> = sqlx::query_scalar(
        "SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
    )
    .bind(model.schema)
    .bind(model.table)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(oid) = oid else {
        return Ok(LiveTable::default());
    };
    let columns = sqlx::query(
        "SELECT a.attname::text AS name, a.atttypid::int8 AS type_oid, \
         format_type(a.atttypid, a.atttypmod) AS type_name, a.attnotnull AS not_null, \
         a.attidentity::text AS identity, pg_get_expr(d.adbin, d.adrelid) AS default \
         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| {
        Ok(LiveColumn {
            name: r.try_get("name")?,
            type_oid: r.try_get("type_oid")?,
            type_name: r.try_get("type_name")?,
            not_null: r.try_get("not_null")?,
            identity: r.try_get("identity")?,
            default: r.try_get("default")?,
        })
    })
    .collect::<sqlx::Result<_>>()?;
    let primary_key = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1::int8::oid AND i.indisprimary ORDER BY k.ord",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await?;
    Ok(LiveTable {
        exists: true,
        columns,
        primary_key,
    })
}

/// The type oid PostgreSQL resolves a type name to (`None`: no such type).
pub(crate) async fn type_oids(
    conn: &mut PgConnection,
    names: &[&str],
) -> sqlx::Result<Vec<Option<i64>>> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sqlx::query_scalar(
        "SELECT to_regtype(t)::oid::int8 FROM unnest($1::text[]) WITH ORDINALITY AS u(t, ord) ORDER BY ord",
    )
    .bind(names)
    .fetch_all(conn)
    .await
}

/// What depends on a column and would make `ALTER COLUMN ... TYPE` scan the table, rebuild an
/// index or fail even when the new type needs no rewrite: CHECK and foreign key constraints
/// (checked again), indexes with expressions or a predicate (rebuilt), views, rules, policies,
/// statistics, triggers on the column. Plain indexes, primary keys, unique constraints, NOT NULL
/// (a constraint of its own from PostgreSQL 18) and the default are kept as they are. Described as PostgreSQL describes them.
pub(crate) async fn in_place_blockers(
    conn: &mut PgConnection,
    model: &ModelSpec,
    column: &str,
) -> sqlx::Result<Vec<String>> {
    let table = crate::ident::Qualified(model.schema, model.table).to_string();
    sqlx::query_scalar(
        "SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d \
         WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1::regclass \
           AND d.refobjsubid = (SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2) \
           AND d.classid <> 'pg_attrdef'::regclass \
           AND NOT (d.classid = 'pg_class'::regclass AND EXISTS (SELECT FROM pg_index i \
                    WHERE i.indexrelid = d.objid AND i.indexprs IS NULL AND i.indpred IS NULL)) \
           AND NOT (d.classid = 'pg_constraint'::regclass AND EXISTS (SELECT FROM pg_constraint c \
                    WHERE c.oid = d.objid AND c.contype IN ('p', 'u', 'n'))) \
         ORDER BY 1",
    )
    .bind(table)
    .bind(column)
    .fetch_all(conn)
    .await
}

/// Whether `ADD COLUMN ... DEFAULT expr` would be metadata only (no table rewrite). Probed like
/// PostgreSQL decides it: on an empty temporary table, inside a transaction that is rolled back.
pub(crate) async fn default_is_metadata_only(
    conn: &mut PgConnection,
    sql_type: &str,
    expr: &str,
) -> sqlx::Result<std::result::Result<bool, String>> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let probe = async {
        sqlx::query("CREATE TEMPORARY TABLE pgevolve_default_probe (id int) ON COMMIT DROP")
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(&*format!(
            "ALTER TABLE pgevolve_default_probe ADD COLUMN probe {sql_type} DEFAULT {expr}"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query_scalar::<_, bool>(
            "SELECT atthasmissing FROM pg_attribute \
             WHERE attrelid = 'pgevolve_default_probe'::regclass AND attname = 'probe'",
        )
        .fetch_one(&mut *tx)
        .await
    }
    .await;
    tx.rollback().await?;
    match probe {
        Ok(v) => Ok(Ok(v)),
        Err(sqlx::Error::Database(e)) => Ok(Err(e.message().to_string())),
        Err(e) => Err(e),
    }
}

/// The prefixes of the triggers pgevolve creates (`sql::Helpers`, `sql::RenameHelpers`): they are
/// not the application's.
pub(crate) const HELPER_TRIGGER_PREFIXES: [&str; 3] =
    ["pgevolve_fill_", "pgevolve_explicit_", "pgevolve_sync_"];

/// A trigger of the application on a table, fired by `UPDATE`, as `pg_trigger` has it.
#[derive(Debug, Clone)]
pub(crate) struct LiveTrigger {
    pub name: String,
    /// `pg_trigger.tgtype`: bit 0 row, bit 1 before, bit 6 instead of.
    pub tgtype: i32,
    /// `pg_trigger.tgenabled`: `O` (origin and local), `R` (replica only), `A` (always), `D`.
    pub enabled: String,
    /// Has a `WHEN` condition.
    pub conditional: bool,
    /// The columns of `UPDATE OF`, empty for every update.
    pub columns: Vec<String>,
}

/// The `UPDATE` triggers of a model's table that are not pgevolve's own (internal triggers,
/// the ones foreign keys use, excluded), by name; and the session's `session_replication_role`.
pub(crate) async fn update_triggers(
    conn: &mut PgConnection,
    model: &ModelSpec,
) -> sqlx::Result<(Vec<LiveTrigger>, String)> {
    let role: String = sqlx::query_scalar("SELECT current_setting('session_replication_role')")
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query(
        "SELECT t.tgname::text AS name, t.tgtype::int4 AS tgtype, t.tgenabled::text AS enabled, \
                t.tgqual IS NOT NULL AS conditional, \
                ARRAY(SELECT a.attname::text FROM unnest(t.tgattr::int2[]) AS k(attnum) \
                        JOIN pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = k.attnum \
                       ORDER BY a.attnum) AS columns \
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = $1 AND c.relname = $2 AND NOT t.tgisinternal \
            AND t.tgtype::int4 & 16 <> 0 \
          ORDER BY t.tgname",
    )
    .bind(model.schema)
    .bind(model.table)
    .fetch_all(&mut *conn)
    .await?;
    let mut triggers = Vec::new();
    for r in rows {
        let trigger = LiveTrigger {
            name: r.try_get("name")?,
            tgtype: r.try_get("tgtype")?,
            enabled: r.try_get("enabled")?,
            conditional: r.try_get("conditional")?,
            columns: r.try_get("columns")?,
        };
        if !HELPER_TRIGGER_PREFIXES
            .iter()
            .any(|p| trigger.name.starts_with(p))
        {
            triggers.push(trigger);
        }
    }
    Ok((triggers, role))
}

/// Whether this session's role may set `session_replication_role` (what
/// `BackfillOptions::skip_user_triggers` needs): tried with `SET LOCAL` in a transaction that is
/// rolled back. `Err` carries PostgreSQL's message when it may not.
pub(crate) async fn may_set_replication_role(
    conn: &mut PgConnection,
) -> sqlx::Result<std::result::Result<(), String>> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let tried = sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await;
    tx.rollback().await?;
    match tried {
        Ok(_) => Ok(Ok(())),
        // 42501 insufficient_privilege; any other refusal is reported the same way.
        Err(sqlx::Error::Database(e)) => Ok(Err(e.message().to_string())),
        Err(e) => Err(e),
    }
}

/// An enum type as the catalog has it.
#[derive(Debug, Clone)]
pub(crate) struct LiveEnum {
    /// Whether the type of that name is an enum (`typtype = 'e'`).
    pub is_enum: bool,
    /// Its labels in sort order.
    pub labels: Vec<String>,
}

/// The type named `qualified` (`"schema"."name"`), if there is one.
pub(crate) async fn read_enum(
    conn: &mut PgConnection,
    qualified: &str,
) -> sqlx::Result<Option<LiveEnum>> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT t.typtype = 'e' AS is_enum, \
                ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) AS labels \
         FROM pg_type t WHERE t.oid = to_regtype($1)",
    )
    .bind(qualified)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(LiveEnum {
            is_enum: r.try_get("is_enum")?,
            labels: r.try_get("labels")?,
        })
    })
    .transpose()
}
