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
        "SELECT attname::text, atttypid::int8, format_type(atttypid, atttypmod), attnotnull \
         FROM pg_attribute WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| LiveColumn {
        name: r.get(0),
        type_oid: r.get(1),
        type_name: r.get(2),
        not_null: r.get(3),
    })
    .collect();
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
