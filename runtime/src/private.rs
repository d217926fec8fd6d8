//! Not public API: the items `#[derive(Evolve)]` expansions name, and the internals this
//! workspace's own tests and benchmarks reach into (the accessors' SQL per phase, the phase
//! registry, the coordinator). No semver guarantees; the facade pins this crate with an exact
//! version so a mismatched pair fails to compile.

pub use crate::access::{
    Access, Accessor, EvolvedExecutor, FromEvolvedRow, ModelSql, Select, model_sql, model_sql_in,
};
pub use crate::column_type::ColumnType;
pub use crate::coordinator::{
    Coordinator, CoordinatorOptions, InstanceAck, WaitOutcome, wait_for_acks,
};
pub use crate::error::Error;
pub use crate::model::Evolve;
pub use crate::registry::{DatabaseKey, InFlight, PhaseRegistry, registry_for};
pub use crate::spec::{
    CheckSpec, ColumnSpec, ComputeFn, Computed, EnumSpec, Fill, ForeignKeySpec, IndexMethod,
    IndexSpec, ModelSpec, OnDelete, SetNotNull, TypeChange,
};
pub use crate::state::{Action, PauseRow, RequestRow, Requests};
pub use ::core::option::Option::{self, None, Some};
pub use ::core::result::Result::{self, Ok};
pub use ::std::string::String;
pub use ::std::vec::Vec;
pub use sqlx::postgres::PgRow;
pub use sqlx::{Error as SqlxError, PgExecutor, Row};

use crate::error::ErrorKind;

/// The session advisory lock the instance leading the background work holds (the `pgevolve`
/// CLI finds the leader's session with it in `pg_locks`).
pub fn leader_lock_key(state_schema: &str) -> i64 {
    crate::step::advisory_key(state_schema)
}

/// `None` when connections with `options` keep their session; otherwise what showed that a
/// transaction pooler shares sessions between clients (the check `Evolver::boot` makes).
pub async fn shares_sessions(
    options: &sqlx::postgres::PgConnectOptions,
) -> sqlx::Result<Option<String>> {
    crate::pooler::shares_sessions(options).await
}

/// A query over SQL the runtime generated (identifiers quoted, values bound).
pub fn query(
    sql: &str,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
}

/// `insert_many` refuses, before anything runs, a slice that needs too many bind parameters.
pub fn check_insert_many(sql: &ModelSql, rows: usize) -> Result<(), Error> {
    let max = sql.rows_per_insert();
    if rows > max {
        return Err(ErrorKind::TooManyRows { rows, max }.into());
    }
    Ok(())
}

/// The read expression of the field named `field`.
pub fn read_expr(model: &'static ModelSpec, field: &str) -> Result<Option<String>, Error> {
    let sql = model_sql(model)?;
    Ok(model
        .columns
        .iter()
        .position(|c| c.field == field)
        .map(|i| sql.reads[i].clone()))
}

/// The write of a batch of a backfill computed in Rust, which the generated adapter binds
/// the values to.
pub type ComputeQuery = sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// In a generated adapter: the `n`th input of a row the computed backfill read (read by its
/// name, `__pgevolve_in<n>`).
pub fn read_input<T: ReadField>(row: &PgRow, n: usize) -> Result<T, sqlx::Error> {
    use sqlx::Column;
    let name = crate::sql::computed::input_alias(n);
    let index = sqlx::Row::try_column(row, name.as_str())?.ordinal();
    T::read_from(row, index)
}

/// In a generated adapter: the computed values, bound as one array.
pub fn bind_values<T>(query: ComputeQuery, values: Vec<T>) -> ComputeQuery
where
    Vec<T>: for<'e> sqlx::Encode<'e, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'static,
{
    query.bind(values)
}

/// A field value the accessors can bind: anything sqlx can encode for PostgreSQL.
#[diagnostic::on_unimplemented(
    message = "pgevolve's accessors cannot send `{Self}` to PostgreSQL",
    label = "the accessors bind this field with sqlx",
    note = "use a supported type, or implement `sqlx::Type<Postgres>` and `sqlx::Encode<'_, Postgres>` for it"
)]
pub trait BindField {
    /// Adds the value to the query's arguments.
    fn bind_to<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;
}

#[diagnostic::do_not_recommend]
impl<T> BindField for T
where
    T: for<'e> sqlx::Encode<'e, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    fn bind_to<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query.bind(self)
    }
}

/// A field value the accessors can read back: anything sqlx can decode from PostgreSQL.
#[diagnostic::on_unimplemented(
    message = "pgevolve's accessors cannot read `{Self}` from PostgreSQL",
    label = "the accessors decode this field with sqlx",
    note = "use a supported type, or implement `sqlx::Type<Postgres>` and `sqlx::Decode<'_, Postgres>` for it"
)]
pub trait ReadField: Sized {
    /// Reads column `index` of `row`.
    fn read_from(row: &PgRow, index: usize) -> Result<Self, sqlx::Error>;

    /// Reads column `index` of `row` without sqlx's check of the column's type against the
    /// field's: for an enum read as text while it renames a label (see [`as_text`]).
    fn read_unchecked(row: &PgRow, index: usize) -> Result<Self, sqlx::Error> {
        Self::read_from(row, index)
    }
}

#[diagnostic::do_not_recommend]
impl<T> ReadField for T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    fn read_from(row: &PgRow, index: usize) -> Result<Self, sqlx::Error> {
        sqlx::Row::try_get(row, index)
    }

    fn read_unchecked(row: &PgRow, index: usize) -> Result<Self, sqlx::Error> {
        sqlx::Row::try_get_unchecked(row, index)
    }
}

/// In a generated accessor, with a field type's `ColumnType::ENUM`: whether the accessors send
/// and read its values as text. True for an enum that renames a label, whose new label the
/// type lacks until the contract (a parameter typed as the enum is checked against the type's
/// labels before any SQL around it runs): the accessors' SQL maps the labels and casts (see
/// `access::ModelSql`), the value is bound with [`bind_label`] and read with
/// [`ReadField::read_unchecked`].
pub const fn as_text(spec: Option<&'static crate::spec::EnumSpec>) -> bool {
    match spec {
        Some(spec) => !spec.renamed.is_empty(),
        None => false,
    }
}

/// In a generated accessor: binds an enum's label (`ColumnType::enum_label`) as text, or NULL.
pub fn bind_label<'q>(
    label: Option<&'static str>,
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query.bind(label)
}
