//! Not public API: the only items `#[derive(Evolve)]` expansions may name. No semver guarantees;
//! the facade pins this crate with an exact version so a mismatched pair fails to compile.

pub use crate::access::{Access, FromEvolvedRow, ModelSql, Select, model_sql};
pub use crate::column_type::ColumnType;
pub use crate::error::Error;
pub use crate::model::Evolve;
pub use crate::spec::{
    CheckSpec, ColumnSpec, Fill, ForeignKeySpec, IndexMethod, IndexSpec, ModelSpec, OnDelete,
};
pub use ::core::option::Option::{self, None, Some};
pub use ::core::result::Result::{self, Ok};
pub use ::std::string::String;
pub use ::std::vec::Vec;
pub use sqlx::postgres::PgRow;
pub use sqlx::{Error as SqlxError, PgExecutor, Row};

use crate::error::ErrorKind;

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
