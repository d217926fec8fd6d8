//! How an accessor call finds the phases of the database it runs on: through the pool it is
//! given, an explicit [`On`] handle, or, for a bare connection, the one database of the process
//! that knows the model.

use std::sync::Arc;

use sqlx::postgres::{PgArguments, PgConnection, PgQueryResult, PgRow};
use sqlx::query::Query;
use sqlx::{Connection, PgPool, Postgres};

use super::{Ran, Retrying};
use crate::registry::{DatabaseKey, PhaseRegistry};

/// Where an accessor call looks up the phases it builds its SQL for.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The registry of an evolution, given explicitly ([`On`]).
    Registry(Arc<PhaseRegistry>),
    /// The database a pool talks to.
    Database(DatabaseKey),
    /// Not known (a bare connection, or no executor at all): the one database of this process
    /// whose registry knows the model.
    Unknown,
}

/// An executor the generated accessors accept: a `&PgPool` (the phases of the pool's
/// database), a `&mut PgConnection` (also `&mut *transaction` and `&mut *pooled_connection`),
/// or [`On`], an executor tied to an evolution with [`Evolution::on`](crate::Evolution::on).
pub trait EvolvedExecutor<'e>: Sized {
    /// The executor the statement runs on.
    type Executor: RunStatement;

    /// Where the phases are looked up, and the executor.
    fn into_parts(self) -> (Scope, Self::Executor);
}

impl<'e, 'p> EvolvedExecutor<'e> for &'p PgPool {
    type Executor = &'p PgPool;

    fn into_parts(self) -> (Scope, &'p PgPool) {
        (Scope::Database(DatabaseKey::of_pool(self)), self)
    }
}

impl<'e> EvolvedExecutor<'e> for &'e mut PgConnection {
    type Executor = &'e mut PgConnection;

    fn into_parts(self) -> (Scope, &'e mut PgConnection) {
        (Scope::Unknown, self)
    }
}

/// An executor tied to one evolution, so accessors use that evolution's phases whatever the
/// executor is: made by [`Evolution::on`](crate::Evolution::on). Needed only for a bare
/// connection or transaction when this process evolves the same model on several databases.
#[derive(Debug)]
pub struct On<E> {
    registry: Arc<PhaseRegistry>,
    executor: E,
}

impl<E> On<E> {
    pub(crate) fn new(registry: Arc<PhaseRegistry>, executor: E) -> On<E> {
        On { registry, executor }
    }
}

impl<'e, E> EvolvedExecutor<'e> for On<E>
where
    E: RunStatement,
{
    type Executor = E;

    fn into_parts(self) -> (Scope, E) {
        (Scope::Registry(self.registry), self.executor)
    }
}

/// Runs one accessor statement on a pool or a connection. `pooled`: the application's
/// connections go through a transaction pooler ([`PhaseRegistry::transaction_pooled`]), so the
/// statement runs unprepared (sqlx's unnamed statement, never its named cache) and inside a
/// transaction, one of its own unless the connection is already in one: sqlx sends a
/// parameterized statement's `Parse` and its `Bind` in two round trips, and a transaction pooler
/// may run the second on another server session, where a `Bind` finds no statement or another
/// client's (measured behind PgBouncer 1.18: errors `26000`/`42P05`, and wrong rows).
pub trait RunStatement: Send {
    /// `query.execute(self)`.
    fn execute<'a>(
        self,
        query: Query<'a, Postgres, PgArguments>,
        pooled: bool,
    ) -> BoxFuture<'a, sqlx::Result<PgQueryResult>>
    where
        Self: 'a;

    /// `query.fetch_all(self)`.
    fn fetch_all<'a>(
        self,
        query: Query<'a, Postgres, PgArguments>,
        pooled: bool,
    ) -> BoxFuture<'a, sqlx::Result<Vec<PgRow>>>
    where
        Self: 'a;

    /// Runs a statement that a contract may rename a column under, on one connection (the
    /// pool's next, or this one), running it once more when a contract renamed a column it
    /// names meanwhile (the runtime's `access/retry.rs`).
    fn run_retrying<'a>(self, statement: Retrying) -> BoxFuture<'a, sqlx::Result<Ran>>
    where
        Self: 'a;
}

/// A boxed, sendable future (as sqlx's executors return).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl RunStatement for &PgPool {
    fn run_retrying<'a>(self, statement: Retrying) -> BoxFuture<'a, sqlx::Result<Ran>>
    where
        Self: 'a,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            statement.run(&mut conn).await
        })
    }

    fn execute<'a>(
        self,
        query: Query<'a, Postgres, PgArguments>,
        pooled: bool,
    ) -> BoxFuture<'a, sqlx::Result<PgQueryResult>>
    where
        Self: 'a,
    {
        Box::pin(async move {
            if !pooled {
                return query.execute(self).await;
            }
            let mut tx = self.begin().await?;
            let done = query.persistent(false).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done)
        })
    }

    fn fetch_all<'a>(
        self,
        query: Query<'a, Postgres, PgArguments>,
        pooled: bool,
    ) -> BoxFuture<'a, sqlx::Result<Vec<PgRow>>>
    where
        Self: 'a,
    {
        Box::pin(async move {
            if !pooled {
                return query.fetch_all(self).await;
            }
            let mut tx = self.begin().await?;
            let rows = query.persistent(false).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(rows)
        })
    }
}

impl RunStatement for &mut PgConnection {
    fn run_retrying<'a>(self, statement: Retrying) -> BoxFuture<'a, sqlx::Result<Ran>>
    where
        Self: 'a,
    {
        Box::pin(statement.run(self))
    }

    fn execute<'a>(
        self,
        query: Query<'a, Postgres, PgArguments>,
        pooled: bool,
    ) -> BoxFuture<'a, sqlx::Result<PgQueryResult>>
    where
        Self: 'a,
    {
        Box::pin(async move {
            if !pooled {
                return query.execute(self).await;
            }
            if self.is_in_transaction() {
                return query.persistent(false).execute(self).await;
            }
            let mut tx = self.begin().await?;
            let done = query.persistent(false).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done)
        })
    }

    fn fetch_all<'a>(
        self,
        query: Query<'a, Postgres, PgArguments>,
        pooled: bool,
    ) -> BoxFuture<'a, sqlx::Result<Vec<PgRow>>>
    where
        Self: 'a,
    {
        Box::pin(async move {
            if !pooled {
                return query.fetch_all(self).await;
            }
            if self.is_in_transaction() {
                return query.persistent(false).fetch_all(self).await;
            }
            let mut tx = self.begin().await?;
            let rows = query.persistent(false).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(rows)
        })
    }
}
