//! The phases this process knows of each database it evolves, read by the generated accessors
//! on every call.
//!
//! Phases belong to a database: one process may serve several databases (a database per
//! tenant) whose evolutions are in different phases. Each database has one [`PhaseRegistry`] in
//! this process ([`for_database`]), shared by every evolution and coordinator on it; an accessor
//! finds it through the pool it is given, through an explicit [`Evolution::on`] handle, or, for a
//! bare connection, as the only database of the process whose registry knows the model.
//!
//! [`Evolution::on`]: crate::Evolution::on

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::access::ModelSql;
use crate::step::{Phase, StepId};

/// The SQL of one model with the generation it was built for, by [`SqlKey`].
type SqlCache = HashMap<SqlKey, (u64, Arc<ModelSql>)>;

/// A model in the SQL cache: schema, table, struct name, and the address of its static spec.
/// Two builds of one model in one process (an old and a new `User` of the same table, as a
/// rehearsal runs them) share the first three but are different specs with different SQL.
pub(crate) type SqlKey = (&'static str, &'static str, &'static str, usize);

/// Step phases as this process knows them for one database, with a generation that changes on
/// every update so accessors can cache the SQL they build from them.
#[derive(Debug, Default)]
pub struct PhaseRegistry {
    phases: RwLock<HashMap<StepId, Phase>>,
    generation: AtomicU64,
    /// Accessor calls under way, by the generation whose SQL they run.
    in_flight: Arc<Mutex<BTreeMap<u64, usize>>>,
    /// Each model's accessor SQL, built for one generation.
    sql: Mutex<SqlCache>,
    /// Evolutions of this process alive on this database ([`Live`] guards).
    live: Arc<std::sync::atomic::AtomicUsize>,
    /// The application's pool to this database goes through a transaction pooler (an evolution
    /// booted with [`Evolver::direct`](crate::Evolver::direct)): accessors run each statement
    /// unprepared, in a transaction.
    transaction_pooled: std::sync::atomic::AtomicBool,
}

/// Held by an evolution while it is alive: a call that does not say its database looks only
/// at databases with a live evolution (a test process leaves the registries of databases it
/// has finished with behind).
#[derive(Debug)]
pub(crate) struct Live(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accessor call under way with the SQL of one generation; ends when dropped.
#[derive(Debug)]
pub struct InFlight {
    in_flight: Arc<Mutex<BTreeMap<u64, usize>>>,
    generation: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_flight.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.generation);
            }
        }
    }
}

impl PhaseRegistry {
    /// Whether the application's pool to this database goes through a transaction pooler, as
    /// the last evolution booted on it declared ([`Evolver::direct`](crate::Evolver::direct)).
    /// The accessors then run each statement unprepared, in a transaction of its own unless
    /// called inside one: behind a transaction pooler, a statement prepared in one round trip
    /// and executed in the next may meet another client's statement on another session.
    pub fn transaction_pooled(&self) -> bool {
        self.transaction_pooled
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_transaction_pooled(&self, pooled: bool) {
        self.transaction_pooled
            .store(pooled, std::sync::atomic::Ordering::Release);
    }

    /// The phase of a step, if an evolution of its model was booted here.
    pub fn get(&self, step: &StepId) -> Option<Phase> {
        self.phases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(step)
            .copied()
    }

    /// Records a step's phase; bumps the generation when it changed.
    pub fn set(&self, step: &StepId, phase: Phase) {
        let mut phases = self.phases.write().unwrap_or_else(|p| p.into_inner());
        if phases.insert(step.clone(), phase) != Some(phase) {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Marks an evolution of this database as alive until the guard is dropped.
    pub(crate) fn live(&self) -> Live {
        self.live.fetch_add(1, Ordering::AcqRel);
        Live(self.live.clone())
    }

    fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire) > 0
    }

    /// Changes whenever a phase changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks an accessor call that runs SQL built at `generation`.
    pub fn enter(&self, generation: u64) -> InFlight {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(generation)
            .or_insert(0) += 1;
        InFlight {
            in_flight: self.in_flight.clone(),
            generation,
        }
    }

    /// The model's SQL for `generation`, built by `build` when the cache has none for it.
    pub(crate) fn sql(
        &self,
        key: SqlKey,
        generation: u64,
        build: impl FnOnce() -> ModelSql,
    ) -> Arc<ModelSql> {
        let mut cache = self.sql.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, sql)) = cache.get(&key)
            && *g == generation
        {
            return sql.clone();
        }
        let sql = Arc::new(build());
        cache.insert(key, (generation, sql.clone()));
        sql
    }

    /// Waits until no accessor call runs SQL older than `generation`: after a phase change,
    /// nothing in this process still writes the shape the phase retired.
    pub async fn drained(&self, generation: u64) {
        loop {
            let busy = {
                let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                in_flight.range(..generation).next().is_some()
            };
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Which database a pool or an evolution talks to: server (host and port, or socket) and
/// database name, from the connection options. The state schema is not part of it: a process
/// evolves a model once per database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DatabaseKey {
    server: String,
    database: String,
}

impl DatabaseKey {
    /// The database of these connection options.
    pub fn of(options: &PgConnectOptions) -> DatabaseKey {
        let server = match options.get_socket() {
            Some(socket) => format!("{}:{}", socket.display(), options.get_port()),
            None => format!("{}:{}", options.get_host(), options.get_port()),
        };
        let database = options
            .get_database()
            .unwrap_or(options.get_username())
            .to_string();
        DatabaseKey { server, database }
    }

    /// The database of a pool.
    pub fn of_pool(pool: &PgPool) -> DatabaseKey {
        DatabaseKey::of(&pool.connect_options())
    }
}

impl fmt::Display for DatabaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database {:?} on {}", self.database, self.server)
    }
}

/// Every database this process has a registry for.
static DATABASES: LazyLock<Mutex<HashMap<DatabaseKey, Arc<PhaseRegistry>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The registry of a database in this process, created empty on first use. Registries live as
/// long as the process: an evolution dropped after it finished leaves its phases for the
/// accessors, as the last thing this process learnt of that database.
pub fn for_database(key: &DatabaseKey) -> Arc<PhaseRegistry> {
    DATABASES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_default()
        .clone()
}

/// The registry of the database a pool talks to.
pub fn registry_for(pool: &PgPool) -> Arc<PhaseRegistry> {
    for_database(&DatabaseKey::of_pool(pool))
}

/// The registry of the database a pool talks to, if an evolution or coordinator made one.
pub(crate) fn existing(key: &DatabaseKey) -> Option<Arc<PhaseRegistry>> {
    DATABASES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .cloned()
}

/// The databases whose registry knows `step`, with their registries: those with a live
/// evolution when there are any, else all of them (the phases last seen on each).
pub(crate) fn knowing(step: &StepId) -> Vec<(DatabaseKey, Arc<PhaseRegistry>)> {
    let all: Vec<(DatabaseKey, Arc<PhaseRegistry>)> = DATABASES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, r)| r.get(step).is_some())
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    if all.iter().any(|(_, r)| r.is_live()) {
        all.into_iter().filter(|(_, r)| r.is_live()).collect()
    } else {
        all
    }
}
