//! The entry point at boot: [`Evolver`] checks every model against the live database, runs the
//! expand phases, and hands back an [`Evolution`] whose background task backfills and validates.

use sqlx::AssertSqlSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tracing::{info, warn};

mod carry;
mod fast_boot;
mod phases;
use phases::Walked;

use crate::access::On;
use crate::clock::{Clock, default_clock};
use crate::coordinator::{Coordinator, CoordinatorOptions, DEFAULT_HEARTBEAT_TIMEOUT};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Executor, Target};
use crate::model::Evolve;
use crate::options::{BackfillOptions, DdlOptions};
use crate::plan::{Plan, PlannedStep};
use crate::registry::PhaseRegistry;
use crate::resolve::{Resolved, resolve_model};
use crate::spec::ModelSpec;
use crate::state::{StateStore, StepStatus};
use crate::step::{Phase, StepId, StepKind, advisory_key, boot_key};
use crate::window::DeployWindow;

/// How often a waiting instance looks again (leader lock, the leader's progress).
const POLL: Duration = Duration::from_millis(100);

/// Connections of the runtime's own pool over [`Evolver::direct`]'s options.
const DIRECT_POOL_SIZE: u32 = 5;

/// The oldest PostgreSQL pgevolve runs on (13.0), as `server_version_num`.
const MIN_SERVER_VERSION: i32 = 130_000;

/// Builds and boots an evolution of one or more models.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> pgevolve_runtime::Result<()> {
/// # #[derive(Debug)] struct User;
/// # impl pgevolve_runtime::Evolve for User {
/// #     const MODEL: pgevolve_runtime::ModelSpec = pgevolve_runtime::ModelSpec::DEFAULT;
/// #     fn model() -> &'static pgevolve_runtime::ModelSpec { static M: pgevolve_runtime::ModelSpec = pgevolve_runtime::ModelSpec::DEFAULT; &M }
/// # }
/// let evolution = pgevolve_runtime::Evolver::new(pool)
///     .model::<User>()
///     .boot()
///     .await?; // expand is done; backfill and validate run in the background
/// evolution.wait().await?; // backfilled and validated
/// evolution.contract().await?; // SET NOT NULL, helpers dropped
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Evolver {
    pool: PgPool,
    models: Vec<ModelSpec>,
    /// The plan of each model, built once when the model is added and handed to everything
    /// that needs it (resolution, the walk, fast boot, removed indexes).
    plans: Vec<Plan>,
    ddl: DdlOptions,
    backfill: BackfillOptions,
    state_schema: String,
    auto_contract: bool,
    window: DeployWindow,
    clock: Arc<dyn Clock>,
    heartbeat_timeout: Duration,
    ack_deadline: Duration,
    /// [`Evolver::direct`]: the runtime's own connections when the pool goes through a
    /// transaction pooler.
    direct: Option<PgConnectOptions>,
}

impl Evolver {
    /// An evolver over this pool, with default options.
    pub fn new(pool: PgPool) -> Evolver {
        Evolver {
            pool,
            models: Vec::new(),
            plans: Vec::new(),
            ddl: DdlOptions::default(),
            backfill: BackfillOptions::default(),
            state_schema: "pgevolve".into(),
            auto_contract: false,
            window: DeployWindow::default(),
            clock: default_clock(),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            ack_deadline: Duration::from_secs(600),
            direct: None,
        }
    }

    /// Says that the pool given to [`Evolver::new`] goes through a transaction pooler
    /// (PgBouncer with `pool_mode = transaction`, RDS Proxy, ...), and gives the runtime
    /// `options` that reach the same database directly (the server's own host and port, or a
    /// session pooler) for its own work.
    ///
    /// Everything the runtime does then runs on a small pool of its own over `options` (at
    /// most 5 connections, opened when needed) and on dedicated connections with them: the
    /// leader and boot locks (session advisory locks), `LISTEN`, concurrent index builds in
    /// autocommit, the expand DDL, the backfill, the state store. The application's pool is
    /// used only to name the database whose phases the accessors read, and the accessors
    /// called with it (or with one of its connections) run each statement unprepared, in a
    /// transaction of its own unless called inside one, since a transaction pooler keeps no
    /// prepared statement between two transactions (see the README, "Poolers").
    ///
    /// Without it, a boot whose pool goes through a transaction pooler fails before any DDL
    /// with [`ErrorKind::TransactionPooler`].
    pub fn direct(mut self, options: PgConnectOptions) -> Evolver {
        self.direct = Some(options);
        self
    }

    /// Adds a model (a struct deriving `Evolve`).
    pub fn model<T: Evolve>(mut self) -> Evolver {
        self.models.push(T::MODEL);
        self.plans.push(Plan::for_model(&T::MODEL));
        self
    }

    /// Sets the `lock_timeout` of every statement that takes a lock queries need (default 2 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Evolver {
        self.ddl.lock_timeout = timeout;
        self
    }

    /// Replaces every DDL option.
    pub fn ddl_options(mut self, options: DdlOptions) -> Evolver {
        self.ddl = options;
        self
    }

    /// Replaces every backfill option.
    pub fn backfill_options(mut self, options: BackfillOptions) -> Evolver {
        self.backfill = options;
        self
    }

    /// Contract automatically once a step is validated, instead of waiting for
    /// [`Evolution::contract`]. Off by default: contract is destructive for old binaries that
    /// still write without the new column.
    pub fn auto_contract(mut self, on: bool) -> Evolver {
        self.auto_contract = on;
        self
    }

    /// When destructive phases (retire, contract) may run. Default: Monday to Thursday, UTC.
    /// Outside it, [`Evolution::contract`] says when it opens and changes nothing;
    /// [`Evolution::contract_overriding_window`] is the recorded emergency exit.
    pub fn deploy_window(mut self, window: DeployWindow) -> Evolver {
        self.window = window;
        self
    }

    /// The clock the deploy window is read with (default: [`default_clock`]; tests inject a
    /// [`PinnedClock`](crate::PinnedClock) or their own).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Evolver {
        self.clock = clock;
        self
    }

    /// How long an instance may miss heartbeats before contract stops waiting for its
    /// acknowledgement (default 10 s), and how long contract waits for live instances to
    /// acknowledge before giving up (default 10 min).
    pub fn acknowledgements(mut self, heartbeat_timeout: Duration, deadline: Duration) -> Evolver {
        self.heartbeat_timeout = heartbeat_timeout;
        self.ack_deadline = deadline;
        self
    }

    /// The schema of the state store (default `pgevolve`).
    pub fn state_schema(mut self, schema: &str) -> Evolver {
        self.state_schema = schema.to_string();
        self
    }

    /// The plans of every model, without looking at the database.
    pub fn plans(&self) -> Vec<Plan> {
        self.plans.clone()
    }

    /// The plans of every model, built once (see [`Evolver::plans`]).
    pub(crate) fn planned(&self) -> &[Plan] {
        &self.plans
    }

    /// The plans of every model as this evolver runs them against its database: every backfill
    /// batch with the evolver's options (timeouts, state schema,
    /// [`BackfillOptions::skip_user_triggers`]), and under each backfill phase the application's
    /// own triggers every batch fires ([`PlannedStep::batch_triggers`]), read from the live
    /// catalog. Reads only; the state store need not exist. A table that does not exist yet has
    /// no trigger.
    pub async fn plans_for_database(&self) -> Result<Vec<Plan>> {
        let shown = self.shown();
        // Catalog reads with bind parameters: on a direct connection when the pool is pooled.
        let (mut direct, mut pooled);
        let conn: &mut PgConnection = match &self.direct {
            Some(options) => {
                direct = PgConnection::connect_with(options).await?;
                &mut direct
            }
            None => {
                pooled = self.pool.acquire().await?;
                &mut pooled
            }
        };
        let mut plans = Vec::new();
        for model in &self.models {
            let mut plan = Plan::shown(model, &shown);
            for step in &mut plan.steps {
                if let Some(fill) = step.fill() {
                    step.batch_triggers = Some(
                        crate::plan::read_batch_triggers(
                            &mut *conn,
                            model,
                            &[fill],
                            self.backfill.skip_user_triggers,
                        )
                        .await?,
                    );
                }
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    /// What plans show of this evolver's options.
    fn shown(&self) -> crate::plan::Shown {
        crate::plan::Shown {
            steps_table: StateStore::new(&self.state_schema).table("steps"),
            lock_timeout: self.ddl.lock_timeout,
            batch_timeout: self.backfill.batch_timeout,
            skip_user_triggers: self.backfill.skip_user_triggers,
        }
    }

    /// Checks every model against the database, runs what must happen before the new code
    /// serves (create tables, add columns, install fill triggers), and returns while backfill and
    /// validation go on in the background.
    ///
    /// Only one instance per database leads (a session advisory lock, polled, never waited on);
    /// others wait until the leader's expand is visible and then serve, taking over the
    /// background work from its checkpoint if the leader goes away. Booting again is idempotent.
    ///
    /// # The fast path
    ///
    /// Once every step of every model is terminal (at its last phase, or aborted), the leader
    /// records the build as verified: a key of the build (every model's declaration, the
    /// runtime's and the state store's versions) and a fingerprint of the catalog of the
    /// models' tables (columns, indexes, constraints, triggers) and of the steps' recorded
    /// phases, in `<state schema>.verified_builds`. It does so when the leader's background
    /// work ends with nothing left to run (after a slow boot, or an `auto_contract`), and at
    /// the end of [`Evolution::contract`], [`Evolution::contract_step`] and
    /// [`Evolution::abort`] when nothing is left then; always under the leader lock, and only
    /// after the checks a boot runs (drift, phases, indexes to drop) accepted that state.
    ///
    /// Every boot first sends one message on a pooled connection (simple protocol, one round
    /// trip): it registers the instance in `<state schema>.instances`, as the [`Coordinator`]'s
    /// heartbeat does, then compares the recorded fingerprint with a fresh one. When they are
    /// equal, boot fills the phase registry from the same answer, starts the coordinator in
    /// the background and returns an evolution whose background work is already finished
    /// ([`Evolution::booted_fast`]): no leader lock, no DDL, no state-store bootstrap.
    /// Otherwise (another build, a column or index changed by hand, a phase changed, an older
    /// state store) the registration is withdrawn and boot is the slow path described above,
    /// unchanged: it repairs what it finds, registers when ready to serve, and records the
    /// build again once nothing is left to do.
    ///
    /// The registration is part of that one message, and committed before the check reads,
    /// because a later build's contract waits only for the instances it can see (see
    /// [`wait_for_acks`](crate::wait_for_acks)): an instance serving this build must be visible
    /// from the moment it serves, and a leader that could not see it yet has committed its
    /// phase change before the check read, which then fails.
    ///
    /// # Errors
    ///
    /// Errors before any DDL when the database does not match the models
    /// ([`ErrorKind::Drift`]); with [`ErrorKind::LockTimeout`] naming the blocking session when a
    /// lock cannot be had within the retries, in which case that phase left nothing behind.
    pub async fn boot(mut self) -> Result<Evolution> {
        // The accessors find the phases by the application's pool; the runtime works on its own.
        let registry = crate::registry::registry_for(&self.pool);
        // Never reset: an evolver without `direct` booting later in this process (by the fast
        // path, which does not check) does not make the pooled pool direct.
        if self.direct.is_some() {
            registry.set_transaction_pooled(true);
        }
        let app_pool = self.pool.clone();
        if let Some(direct) = &self.direct {
            self.pool = PgPoolOptions::new()
                .max_connections(DIRECT_POOL_SIZE)
                .min_connections(0)
                .connect_lazy_with(direct.clone());
        }
        let inner = Arc::new(Inner {
            executor: Executor {
                pool: self.pool.clone(),
                options: self.ddl.clone(),
            },
            store: StateStore::new(&self.state_schema),
            instance: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            progress: Arc::new(Mutex::new(Vec::new())),
            stop: std::sync::atomic::AtomicBool::new(false),
            coordinator: std::sync::OnceLock::new(),
            window_override: Mutex::new(None),
            _live: registry.live(),
            pooler_checked: tokio::sync::OnceCell::new(),
            app_pool,
            lease: crate::lease::Lease::new(
                advisory_key(&self.state_schema),
                StateStore::new(&self.state_schema).table("steps"),
            ),
            registry,
            evolver: self,
        });
        if let Some(evolution) = inner.fast_boot().await? {
            return Ok(evolution);
        }
        Inner::boot_slow(&inner).await
    }
}

impl Inner {
    /// Boot without the fast path: leader lock, drift check, expand, coordinator, background.
    async fn boot_slow(inner: &Arc<Inner>) -> Result<Evolution> {
        // First the pooler check (in `leader_connection`): the privilege check runs prepared
        // statements on the pool, which behind a transaction pooler fail at random with
        // "prepared statement ... does not exist" instead of the error that says what to do.
        let mut lock = inner.leader_connection().await?;
        // Before anything else: every instance may lead, and resolving needs some of the rights.
        inner.check_privileges_before_resolve().await?;
        // Expand under the boot lock, held for seconds: a boot never waits for the background
        // work (backfills, index builds, a deploy window) another instance or build leads.
        let resolved = loop {
            if try_lock(&mut lock, boot_key(&inner.store.schema)).await? {
                // On error the connection is dropped, which ends its session and the lock.
                let resolved = inner.expand().await?;
                unlock(&mut lock, boot_key(&inner.store.schema)).await?;
                break resolved;
            }
            if let Some(resolved) = inner.expanded_by_leader().await? {
                // This instance may lead the background work and the contract later: it needs
                // the same rights.
                inner.check_privileges(&resolved, true).await?;
                inner.check_trigger_skip(&resolved).await?;
                break resolved;
            }
            tokio::time::sleep(POLL).await;
        };
        // The leader lock is for the background work only: with it, this instance walks the
        // steps; without it, it follows, and takes over from the checkpoint when it is free.
        let leading = try_lock(&mut lock, inner.lock_key()).await?;
        inner.init_progress(&resolved).await?;
        let steps = inner
            .evolver
            .planned()
            .iter()
            .flat_map(|p| &p.steps)
            .map(|s| s.id.clone())
            .collect();
        let coordinator = Coordinator::start(
            &inner.evolver.pool,
            &inner.store.schema,
            inner.instance.clone(),
            steps,
            CoordinatorOptions::default().registry(inner.registry.clone()),
        )
        .await;
        let _ = inner.coordinator.set(coordinator);
        let (tx, rx) = watch::channel(None);
        let task_inner = inner.clone();
        tokio::spawn(async move {
            let result = task_inner
                .drive(leading.then_some(lock))
                .await
                .map_err(Arc::new);
            if let Err(e) = &result {
                warn!(error = %e, "background work of the evolution failed");
            }
            let _ = tx.send(Some(result));
        });
        Ok(Evolution {
            inner: inner.clone(),
            done: rx,
            fast: false,
        })
    }
}

/// A booted evolution: progress, waiting, and the gated contract phase.
#[derive(Debug, Clone)]
pub struct Evolution {
    inner: Arc<Inner>,
    done: watch::Receiver<Option<std::result::Result<(), Arc<Error>>>>,
    /// Booted by the fast path.
    fast: bool,
}

/// Progress of one step, as this instance sees it.
#[derive(Debug, Clone)]
pub struct StepProgress {
    /// The step.
    pub step: StepId,
    /// `schema.table`.
    pub table: String,
    /// What the step does.
    pub description: String,
    /// The last phase the step completed.
    pub phase: Phase,
    /// Rows filled by the backfill so far.
    pub rows_done: i64,
    /// The table's estimated rows when the backfill started (0 when unknown).
    pub rows_estimated: i64,
    /// Rows per second of this instance's backfill run.
    pub rows_per_second: f64,
}

impl Evolution {
    /// Progress of every step of the evolved models.
    pub fn progress(&self) -> Vec<StepProgress> {
        self.inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the background work (backfill, validate, and contract with `auto_contract`) has finished.
    pub fn is_finished(&self) -> bool {
        self.done.borrow().is_some()
    }

    /// Waits for the background work to finish, and returns its outcome.
    pub async fn wait(&self) -> Result<()> {
        let mut rx = self.done.clone();
        let outcome = rx
            .wait_for(|d| d.is_some())
            .await
            .map_err(|_| ErrorKind::Background(Arc::new(Error::from(sqlx::Error::PoolClosed))))?
            .clone();
        match outcome {
            Some(Err(e)) => Err(ErrorKind::Background(e).into()),
            _ => Ok(()),
        }
    }

    /// Runs the contract phase of every validated step: `SET NOT NULL` (no scan), then the helper
    /// constraint and fill trigger are dropped. Waits for the background work first. Do this once
    /// no running binary writes rows without the new column.
    pub async fn contract(&self) -> Result<()> {
        self.wait().await?;
        let lock = self.inner.lead().await?;
        for step in self.inner.background_steps() {
            if step.kind.phases().contains(&Phase::Contract) {
                self.inner.advance_to(&step, Phase::Contract).await?;
            }
        }
        self.inner.drop_removed_indexes().await?;
        self.inner.record_verified_if_done().await;
        lock.close().await?;
        Ok(())
    }

    /// Moves the reads of every validated rename to the new column (the switch phase). Every
    /// instance's accessors follow within a second; writes still go to both columns, so this is
    /// still reversible with [`Evolution::abort`].
    pub async fn switch(&self) -> Result<()> {
        self.wait().await?;
        let lock = self.inner.lead().await?;
        for step in self.inner.background_steps() {
            if step.kind.phases().contains(&Phase::Switch) {
                self.inner.advance_to(&step, Phase::Switch).await?;
            }
        }
        lock.close().await?;
        Ok(())
    }

    /// The switch phase of one step (see [`Evolution::switch`]).
    pub async fn switch_step(&self, id: &StepId) -> Result<()> {
        let step = self.inner.step(id)?;
        let lock = self.inner.lead().await?;
        self.inner.advance_to(&step, Phase::Switch).await?;
        lock.close().await?;
        Ok(())
    }

    /// [`Evolution::contract`] outside the deploy window, for emergencies. The override and its
    /// reason are recorded in the journal for every step it lets through.
    pub async fn contract_overriding_window(&self, reason: &str) -> Result<()> {
        *self
            .inner
            .window_override
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        let result = self.contract().await;
        *self
            .inner
            .window_override
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        result
    }

    /// Runs the contract phase of one step (see [`Evolution::contract`]).
    pub async fn contract_step(&self, id: &StepId) -> Result<()> {
        let step = self.inner.step(id)?;
        let lock = self.inner.lead().await?;
        self.inner.advance_to(&step, Phase::Contract).await?;
        self.inner.record_verified_if_done().await;
        lock.close().await?;
        Ok(())
    }

    /// Undoes a step that has not been contracted: its helpers and new columns are dropped and
    /// the table is back to what it was, with every write made in the meantime kept in the old
    /// shape. The step is recorded as aborted and is not run again for this declaration.
    ///
    /// The background work of this evolution stops first (a backfill after its current batch,
    /// with its checkpoint kept); boot again to carry on with the other steps.
    ///
    /// When another instance leads the background work, this does not wait for its walk: the
    /// abort is recorded at once (every instance's accessors go back to the old shape, and
    /// this waits until every live instance has acknowledged it), and the leader, which looks
    /// for aborts before every backfill batch and phase, drops what the step added; this
    /// returns once it has.
    pub async fn abort(&self, id: &StepId) -> Result<()> {
        let step = self.inner.step(id)?;
        self.inner
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        self.wait().await?;
        let mut lock = self.inner.leader_connection().await?;
        if !try_lock(&mut lock, self.inner.lock_key()).await? {
            // Another instance leads: do not wait for its whole walk.
            drop(lock);
            return self.inner.request_abort(&step).await;
        }
        self.inner.abort(&step).await?;
        self.inner.record_verified_if_done().await;
        lock.close().await?;
        Ok(())
    }

    /// The recorded status of every step in the state store: phase, progress, and who did what
    /// when (from the journal).
    pub async fn status(&self) -> Result<Vec<StepStatus>> {
        let mut conn = self.inner.evolver.pool.acquire().await?;
        let mut steps = self.inner.store.steps().all(&mut conn).await?;
        let journal = self.inner.store.journal().all(&mut conn).await?;
        for step in &mut steps {
            step.history = journal
                .iter()
                .filter(|e| e.step.as_deref() == Some(step.id.as_str()))
                .cloned()
                .collect();
        }
        Ok(steps)
    }

    /// The static plans of the evolved models.
    pub fn plans(&self) -> Vec<Plan> {
        self.inner.evolver.plans()
    }

    /// The plans as this evolution runs them, with the user triggers each backfill batch fires
    /// (see [`Evolver::plans_for_database`]).
    pub async fn plans_for_database(&self) -> Result<Vec<Plan>> {
        self.inner.evolver.plans_for_database().await
    }

    /// Ties an executor (a connection, a transaction, a pool) to this evolution, so the
    /// accessors called with it read and write this evolution's database in its phases:
    /// `User::find(&id, evolution.on(&mut *tx))`. A pool alone already says which database it
    /// is for; a bare connection needs this only when the process evolves the same model on
    /// several databases (see [`ErrorKind::AmbiguousDatabase`]).
    pub fn on<E>(&self, executor: E) -> On<E> {
        On::new(self.inner.registry.clone(), executor)
    }

    /// The id this instance registered with in the state store (`<state schema>.instances`).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance
    }

    /// Whether [`Evolver::boot`] took its fast path: every step was terminal and nothing in the
    /// catalog of the models' tables or in the steps' recorded phases had changed since the
    /// build was recorded as verified, so boot cost one statement and ran no DDL. The
    /// evolution's background work is then finished from the start.
    pub fn booted_fast(&self) -> bool {
        self.fast
    }
}

#[derive(Debug)]
struct Inner {
    evolver: Evolver,
    executor: Executor,
    store: StateStore,
    instance: String,
    progress: Arc<Mutex<Vec<StepProgress>>>,
    /// Asks the background task to stop between batches (an abort needs the leader lock).
    stop: std::sync::atomic::AtomicBool,
    /// Phase propagation from and to the other instances; started at the end of boot.
    coordinator: std::sync::OnceLock<Coordinator>,
    /// A contract override's reason, while an overriding contract runs.
    window_override: Mutex<Option<String>>,
    /// The phases of this database in this process, which the accessors read.
    registry: Arc<PhaseRegistry>,
    /// Marks the database as evolved by a live evolution while this is alive.
    _live: crate::registry::Live,
    /// The leader lock's session while this instance walks the background work.
    lease: crate::lease::Lease,
    /// Set once the pool was found not to be behind a transaction pooler (or
    /// [`Evolver::direct`] was given).
    pooler_checked: tokio::sync::OnceCell<()>,
    /// The pool given to [`Evolver::new`] (the same as `evolver.pool` without
    /// [`Evolver::direct`]).
    app_pool: PgPool,
}

impl Inner {
    fn lock_key(&self) -> i64 {
        advisory_key(&self.store.schema)
    }

    /// A connection outside the pool, so the session-level lock lives exactly as long as it.
    /// The first call checks that the pool keeps its sessions (no transaction pooler in between,
    /// see `pooler`), unless [`Evolver::direct`] was given; every lock and DDL comes after one.
    async fn leader_connection(&self) -> Result<PgConnection> {
        self.pooler_checked
            .get_or_try_init(|| async {
                if self.evolver.direct.is_some() {
                    return self.check_same_database().await;
                }
                match crate::pooler::shares_sessions(&self.evolver.pool.connect_options()).await? {
                    None => Ok(()),
                    Some(evidence) => Err(Error::from(ErrorKind::TransactionPooler { evidence })),
                }
            })
            .await?;
        Ok(PgConnection::connect_with(&self.evolver.pool.connect_options()).await?)
    }

    /// With [`Evolver::direct`]: the direct connections reach the database the application's
    /// pool does (same database name on a server started at the same instant), else
    /// [`ErrorKind::DirectElsewhere`]. A simple query on the pooled side, which any pooler
    /// passes.
    async fn check_same_database(&self) -> Result<()> {
        const WHERE: &str = "SELECT current_database() || ' on the server started at ' \
                             || pg_postmaster_start_time()::text";
        let pooled: String = {
            use sqlx::Row;
            let row = sqlx::raw_sql(WHERE).fetch_one(&self.app_pool).await?;
            row.try_get(0)?
        };
        let direct: String = {
            use sqlx::Row;
            let row = sqlx::raw_sql(WHERE).fetch_one(&self.evolver.pool).await?;
            row.try_get(0)?
        };
        if pooled == direct {
            Ok(())
        } else {
            Err(ErrorKind::DirectElsewhere { pooled, direct }.into())
        }
    }

    /// Resolves every model; drift is an error here, before anything is changed.
    /// Also says whether the state store is current (then boot need not bootstrap it).
    async fn resolve_all(&self) -> Result<(Vec<Resolved>, bool)> {
        let mut conn = self.evolver.pool.acquire().await?;
        let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
            .fetch_one(&mut *conn)
            .await?;
        if version < MIN_SERVER_VERSION {
            return Err(ErrorKind::UnsupportedServer { version }.into());
        }
        let shape = self.store.exists(&mut conn).await?;
        let recorded = if shape.exists {
            self.store.steps().rows(&mut conn).await?
        } else {
            Default::default()
        };
        let mut problems = Vec::new();
        let mut all = Vec::new();
        for plan in self.evolver.planned() {
            all.extend(resolve_model(&mut conn, &recorded, plan, &mut problems).await?);
        }
        if problems.is_empty() {
            Ok((all, shape.current))
        } else {
            Err(ErrorKind::Drift(problems).into())
        }
    }

    /// The leader's boot work: drift check, state store, then every expand phase. Returns the
    /// steps with the phase each has completed now.
    async fn expand(&self) -> Result<Vec<Resolved>> {
        let (resolved, state_current) = self.resolve_all().await?;
        self.check_privileges(&resolved, state_current).await?;
        self.check_trigger_skip(&resolved).await?;
        if !state_current {
            let mut conn = self.evolver.pool.acquire().await?;
            self.store.bootstrap(&mut conn).await?;
        }
        let mut created: Vec<(&str, &str)> = Vec::new();
        for r in &resolved {
            let model = &r.step.model;
            if r.table_missing {
                if !created.contains(&(model.schema, model.table)) {
                    self.create_table(model, &resolved).await?;
                    created.push((model.schema, model.table));
                }
                continue;
            }
            if r.next_phase() == Some(Phase::Expand) && r.step.kind.expands_at_boot() {
                self.run_phase(&r.step, Phase::Expand, false).await?;
            }
            // An abort interrupted after it was recorded is finished by the background work,
            // once every live instance has acknowledged it (`finish_interrupted_aborts`), never
            // here: an instance may still use the shape the abort drops.
            if r.expand_incomplete {
                self.complete_expand(&r.step).await?;
            }
        }
        let resolved: Vec<Resolved> = resolved
            .into_iter()
            .map(|mut r| {
                r.done = if r.table_missing {
                    r.step.kind.last_phase()
                } else if r.step.kind.expands_at_boot() {
                    r.done.max(Phase::Expand)
                } else {
                    // Built in the background (a concurrent index): not done at boot.
                    r.done
                };
                r
            })
            .collect();
        // Steps the catalog already satisfied get a row too: the store is what other instances
        // (and their accessors) read.
        let mut missing: Vec<String> = Vec::new();
        for r in &resolved {
            if r.step.room().judged_on_catalog() {
                // An index or constraint dropped by hand since its phase was recorded is built
                // or added again.
                if r.recorded != Some(r.done) {
                    missing.push(self.store.steps().record_phase_sql(&r.step, r.done));
                }
                // Phases whose DDL committed without their record (a process that died or lost
                // its connection in between): journaled now, once, like any phase done.
                if let Some(recorded) = r.recorded {
                    for phase in r.step.kind.phases() {
                        if recorded < *phase && *phase <= r.done {
                            missing.push(self.store.journal().insert_sql(
                                Some(r.step.id.as_str()),
                                &format!("{phase} done"),
                                &format!(
                                    "found done on the catalog at boot, not recorded by the instance that ran it: {}",
                                    r.step.describe()
                                ),
                                &self.instance,
                            ));
                        }
                    }
                }
            } else if r.recorded.is_none() {
                missing.push(self.store.steps().record_if_missing_sql(&r.step, r.done));
            }
        }
        if !missing.is_empty() {
            let mut conn = self.evolver.pool.acquire().await?;
            let mut tx = conn.begin().await?;
            for sql in missing {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Ok(resolved)
    }

    /// Every privilege the plan needs, checked before the models are resolved (see
    /// [`crate::privileges::check_before_resolve`]): resolving itself reads the state store
    /// and the tables. Nothing is changed.
    async fn check_privileges_before_resolve(&self) -> Result<()> {
        let steps: Vec<PlannedStep> = self
            .evolver
            .plans()
            .into_iter()
            .flat_map(|p| p.steps)
            .collect();
        let mut conn = self.evolver.pool.acquire().await?;
        let (role, missing) =
            crate::privileges::check_before_resolve(&mut conn, &self.store.schema, &steps).await?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(ErrorKind::PrivilegesMissing { role, missing }.into())
    }

    /// Every privilege the plan needs on the state schema, the models' tables and the tables
    /// their foreign keys reference (see [`crate::privileges`]). Checked before any DDL, so a
    /// refused boot changes nothing.
    async fn check_privileges(&self, resolved: &[Resolved], state_current: bool) -> Result<()> {
        let mut conn = self.evolver.pool.acquire().await?;
        let needs = crate::privileges::Needs {
            state_schema: &self.store.schema,
            state_current,
            steps: resolved.iter().map(Into::into).collect(),
        };
        let (role, missing) = crate::privileges::check(&mut conn, &needs).await?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(ErrorKind::PrivilegesMissing { role, missing }.into())
    }

    /// With [`BackfillOptions::skip_user_triggers`] and a backfill still to run, whether this
    /// role may set `session_replication_role` (tried in a transaction that is rolled back).
    /// Checked before any DDL, so a refused boot changes nothing.
    async fn check_trigger_skip(&self, resolved: &[Resolved]) -> Result<()> {
        if !self.evolver.backfill.skip_user_triggers {
            return Ok(());
        }
        let mut tables: Vec<String> = resolved
            .iter()
            .filter(|r| {
                !r.table_missing
                    && r.step.kind.phases().contains(&Phase::Backfill)
                    && r.done < Phase::Backfill
            })
            .map(|r| r.step.model.qualified_name())
            .collect();
        tables.sort();
        tables.dedup();
        if tables.is_empty() {
            return Ok(());
        }
        let mut conn = self.evolver.pool.acquire().await?;
        let Err(reason) = crate::catalog::may_set_replication_role(&mut conn).await? else {
            return Ok(());
        };
        let (role, version): (String, i32) =
            sqlx::query_as("SELECT current_user::text, current_setting('server_version_num')::int")
                .fetch_one(&mut *conn)
                .await?;
        let remedy = if version >= 150_000 {
            format!(
                "Grant it as a superuser: GRANT SET ON PARAMETER session_replication_role TO {}; \
                 or turn BackfillOptions::skip_user_triggers off (the batches then fire the table's triggers)",
                crate::ident::Ident(&role)
            )
        } else {
            "Before PostgreSQL 15 only a superuser may set it: run the evolution as a superuser, \
             or turn BackfillOptions::skip_user_triggers off (the batches then fire the table's triggers)"
                .to_string()
        };
        Err(ErrorKind::TriggerSkipDenied {
            role,
            tables: tables.join(", "),
            reason,
            remedy,
        }
        .into())
    }

    /// Runs an expanded step's expand statements again (each is idempotent) to create the
    /// helpers an earlier pgevolve's expand did not, keeping the recorded phase.
    async fn complete_expand(&self, step: &PlannedStep) -> Result<()> {
        let record = [self.store.journal().insert_sql(
            Some(step.id.as_str()),
            "expand completed",
            &format!("helpers added: {}", step.describe()),
            &self.instance,
        )];
        self.executor
            .run(
                target(step, Phase::Expand),
                step.statements(Phase::Expand),
                &record,
                false,
            )
            .await?;
        info!(step = %step.id, table = %step.model.qualified_name(), "expand completed with the helpers this version adds");
        Ok(())
    }

    /// Creates a missing table; every column step of the model is complete with it.
    async fn create_table(&self, model: &ModelSpec, resolved: &[Resolved]) -> Result<()> {
        let steps: Vec<&PlannedStep> = resolved
            .iter()
            .filter(|r| r.step.model.table == model.table && r.step.model.schema == model.schema)
            .map(|r| &r.step)
            .collect();
        let Some(create) = steps
            .iter()
            .find(|s| matches!(s.kind, StepKind::CreateTable))
        else {
            return Ok(());
        };
        let mut record: Vec<String> = steps
            .iter()
            .map(|s| self.store.steps().record_phase_sql(s, s.kind.last_phase()))
            .collect();
        record.push(self.store.journal().insert_sql(
            Some(create.id.as_str()),
            "expand done",
            &format!("created table {}", model.qualified_name()),
            &self.instance,
        ));
        self.executor
            .run(
                target(create, Phase::Expand),
                create.statements(Phase::Expand),
                &record,
                false,
            )
            .await?;
        info!(table = %model.qualified_name(), "created table");
        Ok(())
    }

    /// Runs one phase's statements and records it, in one transaction. The backfill phase's
    /// statement is the batch the engine runs itself, so only its completion is recorded here.
    async fn run_phase(&self, step: &PlannedStep, phase: Phase, long_running: bool) -> Result<()> {
        // Other runners (the backfill engine, validations, concurrent builds) ran the phase's
        // statements themselves; it is only recorded here.
        let statements: &[crate::sql::Statement] = match step.room().runner(phase) {
            crate::kinds::Runner::Statements => step.statements(phase),
            _ => &[],
        };
        self.run_phase_with(step, phase, statements, long_running)
            .await
    }

    /// Runs `statements` as the phase and records it, in one transaction (see [`Self::run_phase`]).
    async fn run_phase_with(
        &self,
        step: &PlannedStep,
        phase: Phase,
        statements: &[crate::sql::Statement],
        long_running: bool,
    ) -> Result<()> {
        let record = [
            self.store.steps().record_phase_sql(step, phase),
            self.store.journal().insert_sql(
                Some(step.id.as_str()),
                &format!("{phase} done"),
                &step.describe(),
                &self.instance,
            ),
            Coordinator::notify_sql(&self.store.schema, &step.id, phase),
        ];
        self.executor
            .run(target(step, phase), statements, &record, long_running)
            .await?;
        info!(step = %step.id, %phase, table = %step.model.qualified_name(), "{}: {phase} done", step.describe());
        self.set_phase(&step.id, phase);
        Ok(())
    }

    /// A follower's check: has the leader's expand made this build's shape available?
    async fn expanded_by_leader(&self) -> Result<Option<Vec<Resolved>>> {
        let resolved = match self.resolve_all().await {
            Ok((r, _)) => r,
            // A table or column the leader has not created yet looks like drift; wait for it.
            Err(e) if matches!(e.kind(), ErrorKind::Drift(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let expanded = resolved.iter().all(|r| {
            !r.table_missing && (r.done >= Phase::Expand || !r.step.kind.expands_at_boot())
        });
        Ok(expanded.then_some(resolved))
    }

    /// Steps with work after boot, in plan order.
    fn background_steps(&self) -> Vec<PlannedStep> {
        self.evolver
            .planned()
            .iter()
            .flat_map(|p| &p.steps)
            .filter(|s| s.kind.has_background_work())
            .cloned()
            .collect()
    }

    async fn recorded_phase(&self, conn: &mut PgConnection, step: &PlannedStep) -> Result<Phase> {
        Ok(self
            .store
            .steps()
            .get(conn, &step.id)
            .await?
            .map(|r| r.phase)
            .unwrap_or(Phase::Pending))
    }

    async fn init_progress(&self, resolved: &[Resolved]) -> Result<()> {
        let backfills = resolved
            .iter()
            .any(|r| r.step.kind.phases().contains(&Phase::Backfill) && r.done < Phase::Validate);
        let mut rows = Default::default();
        if backfills {
            let mut conn = self.evolver.pool.acquire().await?;
            rows = self.store.steps().rows(&mut conn).await?;
        }
        let mut all = Vec::new();
        for r in resolved {
            self.registry.set(&r.step.id, r.done);
            let row = rows.get(&r.step.id);
            all.push(StepProgress {
                table: r.step.model.qualified_name(),
                description: r.step.describe(),
                phase: r.done,
                rows_done: row.as_ref().map(|r| r.rows_done).unwrap_or(0),
                rows_estimated: row.as_ref().and_then(|r| r.rows_estimated).unwrap_or(0),
                rows_per_second: 0.0,
                step: r.step.id.clone(),
            });
        }
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = all;
        Ok(())
    }

    /// Records a phase in this instance's view: progress, and the registry accessors read.
    fn set_phase(&self, id: &StepId, phase: Phase) {
        self.registry.set(id, phase);
        let mut all = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = all.iter_mut().find(|p| &p.step == id) {
            p.phase = phase;
        }
    }

    /// The background work: with the leader lock, walk every filled step to validated (and
    /// contracted with `auto_contract`). Without it, poll: the leader may finish, or go away and
    /// leave the lock (and the work, from its checkpoint) to this instance.
    async fn drive(&self, mut lock: Option<PgConnection>) -> Result<()> {
        let goal = if self.evolver.auto_contract {
            Phase::Contract
        } else {
            Phase::Validate
        };
        // A follower polls on one connection of its own, opened once.
        let mut candidate: Option<PgConnection> = None;
        loop {
            if let Some(conn) = lock.take() {
                self.lease.hold(conn).await;
                let result = self.walk(goal).await;
                if let Err(e) = &result
                    && let ErrorKind::LeadershipLost { .. } = e.kind()
                {
                    // Another instance leads now: follow it, as after a boot without the lock.
                    warn!(error = %e, "leader lock lost; following the instance that holds it");
                    self.journal_leadership_lost(e).await;
                    continue;
                }
                let conn = self.lease.release().await;
                if let Ok(Walked::WaitingForWindow(wait)) = result {
                    // Waiting for the deploy window holds nothing: another build's background
                    // work may run meanwhile, and this instance takes the lock back after.
                    if let Some(conn) = conn {
                        let _ = conn.close().await;
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
                if result.is_ok() && !self.stop.load(std::sync::atomic::Ordering::Acquire) {
                    // Still under the leader lock: the next boot may take the fast path.
                    self.record_verified_if_done().await;
                }
                // Closing the session releases the leader lock for the next boot or contract.
                if let Some(conn) = conn {
                    let _ = conn.close().await;
                }
                return result.map(|_| ());
            }
            if self.stop.load(std::sync::atomic::Ordering::Acquire) {
                // Stopped (an abort of this instance's): nothing to follow any more.
                return Ok(());
            }
            let mut conn = self.evolver.pool.acquire().await?;
            let recorded = self.store.steps().rows(&mut conn).await?;
            drop(conn);
            let mut finished = true;
            for step in self.background_steps() {
                let phase = recorded
                    .get(&step.id)
                    .map(|r| r.phase)
                    .unwrap_or(Phase::Pending);
                self.set_phase(&step.id, phase);
                finished &= phase >= goal.min(step.kind.last_phase());
            }
            if finished {
                return Ok(());
            }
            let mut poller = match candidate.take() {
                Some(c) => c,
                None => self.leader_connection().await?,
            };
            if try_lock(&mut poller, self.lock_key()).await? {
                info!("took over the leader lock; resuming background work from the checkpoint");
                lock = Some(poller);
                continue;
            }
            candidate = Some(poller);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn target(step: &PlannedStep, phase: Phase) -> Target<'_> {
    Target {
        step: step.id.as_str(),
        phase,
        schema: step.model.schema,
        table: step.model.table,
    }
}

impl Inner {
    /// Journals that this instance lost the leader lock (best effort: the database may be the
    /// reason it was lost).
    async fn journal_leadership_lost(&self, error: &Error) {
        let sql = self.store.journal().insert_sql(
            None,
            "leader lock lost",
            &error.to_string(),
            &self.instance,
        );
        if let Ok(mut conn) = self.evolver.pool.acquire().await {
            let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await;
        }
    }
}

/// Releases a session advisory lock taken with [`try_lock`].
async fn unlock(conn: &mut PgConnection, key: i64) -> Result<()> {
    sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .fetch_one(conn)
        .await?;
    Ok(())
}

/// `pg_try_advisory_lock`: never waits, so a booting instance cannot queue behind the leader.
async fn try_lock(conn: &mut PgConnection, key: i64) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await?)
}
