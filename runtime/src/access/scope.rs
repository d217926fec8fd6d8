//! How an accessor call finds the phases of the database it runs on: through the pool it is
//! given, an explicit [`On`] handle, or, for a bare connection, the one database of the process
//! that knows the model.

use std::sync::Arc;

use sqlx::postgres::{PgConnection, PgExecutor};
use sqlx::{PgPool, Postgres};

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
    /// The sqlx executor the statement runs on.
    type Executor: PgExecutor<'e>;

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
    E: sqlx::Executor<'e, Database = Postgres>,
{
    type Executor = E;

    fn into_parts(self) -> (Scope, E) {
        (Scope::Registry(self.registry), self.executor)
    }
}
