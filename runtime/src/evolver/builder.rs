//! The builder: [`Evolver`] gathers the models and options, plans once, and boots.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use super::{DIRECT_POOL_SIZE, Engine, Evolution};
use crate::clock::{Clock, default_clock};
use crate::coordinator::DEFAULT_HEARTBEAT_TIMEOUT;
use crate::error::Result;
use crate::executor::Executor;
use crate::model::Evolve;
use crate::options::{BackfillOptions, DdlOptions};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::spec::ModelSpec;
use crate::state::StateStore;
use crate::step::advisory_key;
use crate::window::DeployWindow;
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
    pub(super) pool: PgPool,
    pub(super) models: Vec<ModelSpec>,
    /// The plan of each model, built once when the model is added and handed to everything
    /// that needs it (resolution, the walk, fast boot, removed indexes).
    pub(super) plans: Vec<Plan>,
    pub(super) ddl: DdlOptions,
    pub(super) backfill: BackfillOptions,
    pub(super) state_schema: String,
    pub(super) auto_contract: bool,
    pub(super) window: DeployWindow,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) heartbeat_timeout: Duration,
    pub(super) ack_deadline: Duration,
    /// [`Evolver::direct`]: the runtime's own connections when the pool goes through a
    /// transaction pooler.
    pub(super) direct: Option<PgConnectOptions>,
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
    /// with [`ErrorKind::TransactionPooler`](crate::ErrorKind::TransactionPooler).
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

    /// Declares a table the application no longer uses, to drop: `"legacy_audit"`, or
    /// `"schema.legacy_audit"`. Removing a model never drops its table (a model removed by
    /// mistake must not cost the data); this does, at contract only: nothing happens at expand,
    /// contract waits until every live instance acknowledged (so no build that still reads or
    /// writes the table runs) and for the deploy window, then runs `DROP TABLE` without
    /// `CASCADE` in one short transaction under `lock_timeout`. A view or another table's foreign
    /// key that depends on the table, and a model of this evolver that still maps it, are drift
    /// at boot. A table that does not exist (any more) is a step already done.
    pub fn dropped_table(mut self, table: &'static str) -> Evolver {
        let (schema, table) = table.split_once('.').unwrap_or(("public", table));
        let model = crate::kinds::dropped_table_model(schema, table);
        self.plans.push(Plan::for_model(&model));
        self.models.push(model);
        self
    }

    /// Sets the `lock_timeout` of every statement that takes a lock queries need (default 100 ms; see [`DdlOptions`](crate::DdlOptions)).
    pub fn lock_timeout(mut self, timeout: Duration) -> Evolver {
        self.ddl.lock_timeout = timeout;
        self
    }

    /// Sets how old a lock holder's transaction must be for DDL to wait for it to end instead
    /// of asking for the lock behind it (default 1 s; see [`DdlOptions::long_holder`](crate::DdlOptions::long_holder)).
    pub fn long_holder(mut self, threshold: Duration) -> Evolver {
        self.ddl.long_holder = threshold;
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
    /// own triggers every batch fires ([`PlannedStep::batch_triggers`](crate::PlannedStep::batch_triggers)), read from the live
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
                    step.estimate = crate::estimate::backfill(
                        &mut *conn,
                        model.schema,
                        model.table,
                        &self.state_schema,
                        self.backfill.duty_cycle,
                    )
                    .await?;
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
    /// trip): it registers the instance in `<state schema>.instances`, as the coordinator's
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
    /// because a later build's contract waits only for the instances it can see: an instance
    /// serving this build must be visible
    /// from the moment it serves, and a leader that could not see it yet has committed its
    /// phase change before the check read, which then fails.
    ///
    /// # Errors
    ///
    /// Errors before any DDL when the database does not match the models
    /// ([`ErrorKind::Drift`](crate::ErrorKind::Drift)); with [`ErrorKind::LockTimeout`](crate::ErrorKind::LockTimeout) naming the blocking session when a
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
        let inner = Arc::new(Engine {
            executor: Executor {
                pool: self.pool.clone(),
                options: self.ddl.clone(),
            },
            store: StateStore::new(&self.state_schema),
            instance: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            progress: Progress::default(),
            stop: std::sync::atomic::AtomicBool::new(false),
            coordinator: std::sync::OnceLock::new(),
            _live: registry.live(),
            pooler_checked: tokio::sync::OnceCell::new(),
            app_pool,
            lease: crate::lease::Lease::new(
                advisory_key(&self.state_schema),
                &StateStore::new(&self.state_schema),
            ),
            registry,
            evolver: self,
        });
        if let Some(evolution) = inner.fast_boot().await? {
            return Ok(evolution);
        }
        Engine::boot_slow(&inner).await
    }
}
