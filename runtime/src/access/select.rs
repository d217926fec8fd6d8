//! `T::select()`: a query over a model with a hand-written predicate, typed binds, and the
//! model's phase-correct columns.

use std::marker::PhantomData;

use sqlx::postgres::PgArguments;
use sqlx::{Arguments, AssertSqlSafe, Encode, Postgres, Type};

use super::{Accessor, EvolvedExecutor, FromEvolvedRow, ModelSql, model_sql, model_sql_in};
use crate::error::Result;
use crate::model::Evolve;
use crate::spec::ModelSpec;

/// A `SELECT` of a model's rows. In `filter` and `order_by`, `{field}` stands for the SQL that
/// reads that field in the current phase (e.g. `COALESCE("full_name", "name")` mid-rename), so
/// hand-written predicates stay right across phases:
///
/// ```no_run
/// # async fn demo<T: pgevolve_runtime::Evolve + pgevolve_runtime::FromEvolvedRow>(pool: &sqlx::PgPool) -> pgevolve_runtime::Result<()> {
/// let rows: Vec<T> = pgevolve_runtime::Select::<T>::new()
///     .filter("{email} = $1")
///     .bind("ada@example.com")
///     .order_by("{id}")
///     .limit(10)
///     .fetch_all(pool)
///     .await?;
/// # Ok(()) }
/// ```
pub struct Select<T> {
    filter: Option<String>,
    order_by: Option<String>,
    limit: Option<i64>,
    args: PgArguments,
    bind_error: Option<String>,
    model: PhantomData<fn() -> T>,
}

impl<T: Evolve + FromEvolvedRow> Default for Select<T> {
    fn default() -> Self {
        Select {
            filter: None,
            order_by: None,
            limit: None,
            args: PgArguments::default(),
            bind_error: None,
            model: PhantomData,
        }
    }
}

impl<T: Evolve + FromEvolvedRow> Select<T> {
    /// Every row.
    pub fn new() -> Self {
        Self::default()
    }

    /// `WHERE` predicate; `$1`, `$2`, ... are the values given to [`Select::bind`], in order.
    pub fn filter(mut self, predicate: &str) -> Self {
        self.filter = Some(predicate.to_string());
        self
    }

    /// The next bind value.
    pub fn bind<V>(mut self, value: V) -> Self
    where
        V: for<'q> Encode<'q, Postgres> + Type<Postgres>,
    {
        if let Err(e) = self.args.add(value) {
            self.bind_error.get_or_insert(e.to_string());
        }
        self
    }

    /// `ORDER BY`.
    pub fn order_by(mut self, order: &str) -> Self {
        self.order_by = Some(order.to_string());
        self
    }

    /// `LIMIT`.
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The statement as it would run now.
    pub fn sql(&self) -> Result<String> {
        Ok(self.accessor().text(T::model(), &*model_sql(T::model())?))
    }

    fn accessor(&self) -> Accessor {
        Accessor::Select {
            filter: self.filter.clone(),
            order_by: self.order_by.clone(),
            limit: self.limit,
        }
    }

    /// Runs the query.
    pub async fn fetch_all<'e, E: EvolvedExecutor<'e>>(self, executor: E) -> Result<Vec<T>> {
        let (scope, executor) = executor.into_parts();
        let access = model_sql_in(T::model(), &scope)?;
        let accessor = self.accessor();
        let sql = accessor.text(T::model(), &access);
        if let Some(e) = self.bind_error {
            return Err(sqlx::Error::Encode(e.into()).into());
        }
        let rows = access
            .fetch_all(
                accessor,
                sqlx::query_with(AssertSqlSafe(sql), self.args),
                executor,
            )
            .await?;
        Ok(rows
            .iter()
            .map(T::from_evolved_row)
            .collect::<std::result::Result<_, _>>()?)
    }
}

/// A `SELECT` of every row with these clauses; `{field}` in `filter` and `order_by` reads the
/// field as `sql` does.
pub(super) fn text(
    model: &ModelSpec,
    sql: &ModelSql,
    filter: &Option<String>,
    order_by: &Option<String>,
    limit: Option<i64>,
) -> String {
    let expand = |text: &str| -> String {
        let mut out = text.to_string();
        for (c, read) in model.columns.iter().zip(&sql.reads) {
            out = out.replace(&format!("{{{}}}", c.field), &format!("({read})"));
        }
        out
    };
    let mut text = sql.select_all.clone();
    if let Some(f) = filter {
        text.push_str(&format!(" WHERE {}", expand(f)));
    }
    if let Some(o) = order_by {
        text.push_str(&format!(" ORDER BY {}", expand(o)));
    }
    if let Some(l) = limit {
        text.push_str(&format!(" LIMIT {l}"));
    }
    text
}
