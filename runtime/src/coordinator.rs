//! Phase propagation between instances: heartbeats, phases from the state store into the
//! registry, acknowledgements. See [`Coordinator`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval_at};
use tracing::{debug, info, warn};

use crate::error::{ErrorKind, Result};
use crate::registry::{PhaseRegistry, registry_for};
use crate::state::{Instances, instances};
use crate::step::{Phase, StepId};

/// An instance whose last heartbeat is older than this is considered gone by [`wait_for_acks`]
/// (10 s: ten missed heartbeats at the default interval).
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`wait_for_acks`] looks at the acknowledgements.
const ACK_POLL: Duration = Duration::from_millis(100);
/// How long acquiring a coordinator connection may take before the round is skipped.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// `statement_timeout` of the coordinator's connections, so a stuck statement cannot stall it.
const STATEMENT_TIMEOUT: &str = "5s";
/// How often stale instances are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long a stop waits for its connections to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an acknowledgement waiting for older accessor calls to end is tried again.
const DRAIN_RETRY: Duration = Duration::from_millis(20);

/// Tunables of a [`Coordinator`].
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// How often the instance refreshes its heartbeat. Default 1 s; keep it well below the
    /// heartbeat timeout the leader uses (default [`DEFAULT_HEARTBEAT_TIMEOUT`], 10 s).
    pub heartbeat_interval: Duration,
    /// How often the phases are read even without a notification (notifications are lost while
    /// the listening connection is down). Default 1 s.
    pub poll_interval: Duration,
    /// Instances without a heartbeat for this long are deleted with their acknowledgements by
    /// any running coordinator (a crashed instance leaves its row behind). Default 1 h.
    pub prune_after: Duration,
    /// Where phases are published. `None` (default): the registry of the pool's database in
    /// this process ([`registry_for`]), which the generated accessors read. Tests running
    /// several coordinators in one process give each a registry of its own.
    pub registry: Option<Arc<PhaseRegistry>>,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            heartbeat_interval: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            prune_after: Duration::from_secs(3_600),
            registry: None,
        }
    }
}

impl CoordinatorOptions {
    /// Publishes phases to `registry` instead of the one of the pool's database.
    pub fn registry(mut self, registry: Arc<PhaseRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }
}

/// Phase propagation between instances: every running instance learns a step's new phase within
/// about a second, publishes it to the generated accessors through its [`PhaseRegistry`], and
/// acknowledges it in the state store, so the leader can tell when no instance still uses the
/// old shape.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool, steps: Vec<pgevolve_runtime::StepId>) -> pgevolve_runtime::Result<()> {
/// use std::time::Duration;
/// // Internal: the engine drives this; it is reachable only through the hidden surface.
/// use pgevolve_runtime::__private::{Coordinator, CoordinatorOptions, wait_for_acks};
/// use pgevolve_runtime::{Phase, DEFAULT_HEARTBEAT_TIMEOUT};
///
/// // Every instance, at boot: phases go to the registry of the pool's database.
/// let coordinator =
///     Coordinator::start(&pool, "pgevolve", "web-1", steps.clone(), CoordinatorOptions::default())
///         .await;
///
/// // The leader, once the transaction recording `retire` (with `Coordinator::notify_sql`)
/// // has committed, before contract:
/// let outcome = wait_for_acks(
///     &pool, "pgevolve", &steps[0], Phase::Retire,
///     DEFAULT_HEARTBEAT_TIMEOUT, Duration::from_secs(300),
/// )
/// .await?;
///
/// // When the process stops serving:
/// coordinator.stop().await;
/// # Ok(()) }
/// ```
///
/// # How it works
///
/// Each instance runs a background task that
///
/// 1. registers the instance in `<state schema>.instances` and refreshes its heartbeat every
///    [`CoordinatorOptions::heartbeat_interval`] (1 s);
/// 2. `LISTEN`s on the state schema's channel ([`Coordinator::channel`]); on a notification,
///    after its listening connection came back, and every [`CoordinatorOptions::poll_interval`]
///    (1 s, in case a notification is lost), it reads the phases of its build's steps from
///    `<state schema>.steps` into the registry;
/// 3. once the registry holds a phase, records the acknowledgement (instance, step, phase) in
///    `<state schema>.acks`.
///
/// The leader changes a phase and sends [`Coordinator::notify_sql`] in the same transaction
/// (`NOTIFY` is delivered at commit, so no instance reads the phase before it is visible), then
/// calls [`wait_for_acks`] before a phase that needs every instance to have moved on (e.g.
/// contract after retire). Instances whose heartbeat is older than the timeout (10 s) are
/// considered gone and not waited for; they are listed in the [`WaitOutcome`].
///
/// The coordinator uses two connections of its own, outside the application's pool: one for
/// `LISTEN`, one for heartbeats and reads. A saturated application pool therefore cannot delay
/// heartbeats until a live instance looks dead. Both carry `statement_timeout = 5s` and the
/// `application_name` `pgevolve coordinator <instance id>`.
///
/// # What an acknowledgement means
///
/// An instance acknowledges phase P of a step once its registry holds P and no accessor call of
/// the process still runs SQL built for an earlier generation of the registry
/// ([`PhaseRegistry::drained`]; only calls marked with [`PhaseRegistry::enter`] are seen): from
/// then on, everything the accessors run uses P's shape. An instance registers before it first
/// reads the phases, so a leader that does not see an instance yet is sure that instance reads
/// a phase committed before the leader looked.
///
/// Binaries built without a coordinator never register, so they cannot be waited for: the
/// acknowledgements protect instances that run one.
///
/// # Stopping
///
/// Stop it with [`Coordinator::stop`] when the process stops serving: the instance is removed
/// from the state store, so a leader does not wait for it. Dropping it does the same in the
/// background (as long as the tokio runtime runs). A process that dies without either leaves
/// its row until its heartbeat expires.
#[derive(Debug)]
pub struct Coordinator {
    instance_id: String,
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    task: Option<JoinHandle<()>>,
    /// Counts the rounds (a notification or a poll) the background task has finished.
    rounds: watch::Receiver<u64>,
}

impl Coordinator {
    /// Starts coordinating this instance, identified by `instance_id` (unique among running
    /// instances), whose build knows `steps`.
    ///
    /// Before returning, it registers the instance and loads the phases into the registry (a
    /// step with no row in the state store is [`Phase::Pending`]), so accessors have phases as
    /// soon as this returns. Nothing here fails: when the database is unreachable (this then
    /// returns after at most 5 s, with an empty registry) or the state tables do not exist yet
    /// (see [`Coordinator::bootstrap_sql`]), the background task keeps retrying every second,
    /// logging through `tracing`.
    ///
    /// Only connection options are taken from `pool`; the coordinator opens two connections of
    /// its own (see [`Coordinator`]). Must run inside a tokio runtime.
    pub async fn start(
        pool: &PgPool,
        state_schema: &str,
        instance_id: impl Into<String>,
        steps: Vec<StepId>,
        options: CoordinatorOptions,
    ) -> Coordinator {
        let instance_id = instance_id.into();
        let connect = (*pool.connect_options())
            .clone()
            .application_name(&format!("pgevolve coordinator {instance_id}"))
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        // One connection for LISTEN, one for everything else.
        let own = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(connect);
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(
            own.clone(),
            instances::channel(state_schema),
            wake.clone(),
            options.poll_interval,
        ));
        let mut worker = Worker {
            pool: own,
            store: Instances::new(state_schema),
            instance: instance_id.clone(),
            step_names: steps.iter().map(|s| s.as_str().to_string()).collect(),
            steps,
            registry: options
                .registry
                .clone()
                .unwrap_or_else(|| registry_for(pool)),
            options,
            registered: false,
            acked: HashMap::new(),
            draining: false,
            last_prune: None,
            trouble: HashMap::new(),
            rounds: watch::channel(0).0,
        };
        let rounds = worker.rounds.subscribe();
        // Registers first, then reads the phases and acknowledges them.
        worker.refresh().await;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(worker.run(stopped, wake.clone(), listener));
        Coordinator {
            instance_id,
            stop,
            wake,
            task: Some(task),
            rounds,
        }
    }

    /// Changes after every round of the background task: on a notification on the channel
    /// (an operator's request sends one), after a reconnection, and every poll interval. The
    /// evolution's request handler (`evolver/requests.rs`) looks for requests then, so a
    /// request reaches an instance as fast as a phase change does.
    pub(crate) fn rounds(&self) -> watch::Receiver<u64> {
        self.rounds.clone()
    }

    /// The id this instance registered with.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Reads the phases again now, without waiting for a notification or the next poll.
    pub fn refresh(&self) {
        self.wake.notify_one();
    }

    /// Ends the background task and removes the instance and its acknowledgements from the
    /// state store. Waits until done (a few seconds at most when the database is unreachable).
    /// The registry keeps the last phases it had.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// The `LISTEN`/`NOTIFY` channel of a state schema: `pgevolve_<schema>` (or `pgevolve_`
    /// and a hash of the schema when that exceeds PostgreSQL's 63-byte identifier limit).
    pub fn channel(state_schema: &str) -> String {
        instances::channel(state_schema)
    }

    /// `SELECT pg_notify(...)` telling every coordinator that `step` reached `phase`. Run it in
    /// the transaction that records the phase: the notification is delivered at commit, and
    /// not at all on rollback. Coordinators read the phase from the state store; the payload
    /// (`<step id> <phase>`) is for people watching the channel.
    pub fn notify_sql(state_schema: &str, step: &StepId, phase: Phase) -> String {
        format!(
            "SELECT pg_notify({}, {})",
            crate::sql::lit(&instances::channel(state_schema)),
            crate::sql::lit(&format!("{step} {phase}"))
        )
    }

    /// Sends the notification of [`Coordinator::notify_sql`] on `conn` (in its transaction, if
    /// one is open).
    pub async fn notify(
        conn: &mut PgConnection,
        state_schema: &str,
        step: &StepId,
        phase: Phase,
    ) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(instances::channel(state_schema))
            .bind(format!("{step} {phase}"))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The statements creating the state schema and the tables `instances` and `acks` when
    /// missing. Run them once, under the leader lock (concurrent `CREATE TABLE IF NOT EXISTS`
    /// may fail), e.g. with the other state-store tables. `steps` is not among them.
    pub fn bootstrap_sql(state_schema: &str) -> Vec<String> {
        Instances::new(state_schema).bootstrap_sql()
    }

    /// Runs [`Coordinator::bootstrap_sql`] in one transaction on `conn`.
    pub async fn bootstrap(conn: &mut PgConnection, state_schema: &str) -> sqlx::Result<()> {
        let mut tx = conn.begin().await?;
        for sql in Coordinator::bootstrap_sql(state_schema) {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        tx.commit().await
    }
}

/// What a background task needs, and what it remembers between rounds.
struct Worker {
    pool: PgPool,
    store: Instances,
    instance: String,
    steps: Vec<StepId>,
    step_names: Vec<String>,
    registry: Arc<PhaseRegistry>,
    options: CoordinatorOptions,
    /// The instance row exists (as of the last heartbeat).
    registered: bool,
    /// What this instance has recorded as acknowledged.
    acked: HashMap<StepId, Phase>,
    /// Acknowledgements wait for accessor calls still running SQL of an older generation.
    draining: bool,
    last_prune: Option<Instant>,
    /// The last error of each operation, so a lasting failure is logged once, not every second.
    trouble: HashMap<&'static str, String>,
    /// Bumped after every refresh (see [`Coordinator::rounds`]).
    rounds: watch::Sender<u64>,
}

impl Worker {
    async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        wake: Arc<Notify>,
        listener: JoinHandle<()>,
    ) {
        let now = tokio::time::Instant::now();
        let mut heartbeat = interval_at(
            now + self.options.heartbeat_interval,
            self.options.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut poll = interval_at(now + self.options.poll_interval, self.options.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // Every branch's work runs after the select, so no statement is ever cancelled
            // half-way; a stop waits for the current round.
            tokio::select! {
                biased;
                // A send, or the sender dropped with the Coordinator.
                _ = stop.changed() => break,
                _ = heartbeat.tick() => {
                    self.heartbeat().await;
                }
                _ = wake.notified() => {
                    self.refresh().await;
                    poll.reset();
                    self.rounds.send_modify(|n| *n += 1);
                }
                _ = poll.tick() => {
                    self.refresh().await;
                    self.rounds.send_modify(|n| *n += 1);
                }
                _ = tokio::time::sleep(DRAIN_RETRY), if self.draining => self.ack().await,
            }
        }
        listener.abort();
        self.deregister().await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.pool.close()).await;
    }

    /// Registers the instance or refreshes its heartbeat; prunes stale instances now and then.
    /// Returns whether the database answered (a missing state table counts as an answer).
    async fn heartbeat(&mut self) -> bool {
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                self.failed("heartbeat", &e);
                return false;
            }
        };
        match self
            .store
            .heartbeat(&mut conn, &self.instance, &self.step_names)
            .await
        {
            Ok(created) => {
                self.recovered("heartbeat");
                if created {
                    if self.registered {
                        info!(instance = %self.instance, "instance row was missing (pruned or deleted); registered again");
                    } else {
                        info!(instance = %self.instance, steps = self.steps.len(), "instance registered");
                    }
                    // Whatever was acknowledged went with the row.
                    self.acked.clear();
                }
                self.registered = true;
            }
            Err(e) => {
                let answered = e.as_database_error().is_some();
                self.failed("heartbeat", &e);
                return answered;
            }
        }
        if self.last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            match self.store.prune(&mut conn, self.options.prune_after).await {
                Ok(0) => self.recovered("pruning stale instances"),
                Ok(pruned) => {
                    self.recovered("pruning stale instances");
                    info!(
                        pruned,
                        "removed instances without a heartbeat for {:?}", self.options.prune_after
                    );
                }
                Err(e) => self.failed("pruning stale instances", &e),
            }
        }
        true
    }

    /// Reads the phases into the registry, then acknowledges what the registry holds.
    async fn refresh(&mut self) {
        // Register before reading: a leader that does not see this instance yet knows it will
        // read a phase committed before the leader looked. When the database does not answer,
        // reading would not either; the next round tries again.
        if !self.registered && !self.heartbeat().await {
            return;
        }
        if !self.steps.is_empty() {
            let registry = self.registry.clone();
            for attempt in 0..3 {
                let before = registry.generation();
                let phases = match self.load().await {
                    Ok(p) => p,
                    Err(e) => return self.failed("reading phases", &e),
                };
                self.recovered("reading phases");
                // Someone (the leader's own evolver) set a phase while this read ran: read
                // again, so a read older than that change cannot undo it.
                if registry.generation() != before && attempt < 2 {
                    continue;
                }
                for (step, phase) in phases {
                    if registry.get(&step) != Some(phase) {
                        debug!(instance = %self.instance, %step, %phase, "phase changed");
                        registry.set(&step, phase);
                    }
                }
                break;
            }
        }
        self.ack().await;
    }

    /// The recorded phase of each step of this build: [`Phase::Pending`] without a row (or
    /// without a state store yet). Steps whose phase this build cannot parse are left out.
    async fn load(&mut self) -> sqlx::Result<Vec<(StepId, Phase)>> {
        let mut conn = self.pool.acquire().await?;
        let rows = match self.store.phases(&mut conn, &self.step_names).await {
            Ok(rows) => rows,
            Err(e) if instances::is_missing_table(&e) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut phases = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            match rows.iter().find(|(id, _)| id == step.as_str()) {
                None => phases.push((step.clone(), Phase::Pending)),
                Some((_, text)) => match Phase::parse(text) {
                    Some(phase) => phases.push((step.clone(), phase)),
                    None => {
                        let message =
                            format!("step {step} has phase {text:?}, unknown to this build");
                        if self.trouble.get("phase") != Some(&message) {
                            warn!(instance = %self.instance, "{message}; keeping the last known phase");
                            self.trouble.insert("phase", message);
                        }
                    }
                },
            }
        }
        Ok(phases)
    }

    /// Records the phases the registry holds that were not acknowledged yet, once no accessor
    /// call of this process still runs SQL built before them ([`PhaseRegistry::drained`]).
    async fn ack(&mut self) {
        self.draining = false;
        if !self.registered {
            return;
        }
        let registry = self.registry.clone();
        let generation = registry.generation();
        let due: Vec<(StepId, Phase)> = self
            .steps
            .iter()
            .filter_map(|s| registry.get(s).map(|p| (s.clone(), p)))
            .filter(|(s, p)| self.acked.get(s) != Some(p))
            .collect();
        if due.is_empty() {
            return;
        }
        // Only look: a long accessor call must not hold up heartbeats. Tried again shortly.
        if tokio::time::timeout(Duration::ZERO, registry.drained(generation))
            .await
            .is_err()
        {
            self.draining = true;
            return;
        }
        let result = async {
            let mut conn = self.pool.acquire().await?;
            self.store.ack(&mut conn, &self.instance, &due).await
        }
        .await;
        match result {
            Ok(()) => {
                self.recovered("acknowledging");
                for (step, phase) in due {
                    debug!(instance = %self.instance, %step, %phase, "acknowledged");
                    self.acked.insert(step, phase);
                }
            }
            Err(e) => self.failed("acknowledging", &e),
        }
    }

    async fn deregister(&mut self) {
        let result = async {
            let mut conn = self.pool.acquire().await?;
            self.store.deregister(&mut conn, &self.instance).await
        }
        .await;
        match result {
            Ok(()) => info!(instance = %self.instance, "instance deregistered"),
            Err(e) => {
                debug!(instance = %self.instance, error = %e, "could not deregister; the row expires with its heartbeat")
            }
        }
    }

    /// Logs a failure once per distinct error; a missing state table is expected before the
    /// leader creates the state store and only logged at debug level.
    fn failed(&mut self, what: &'static str, e: &sqlx::Error) {
        let message = e.to_string();
        if instances::is_missing_table(e) {
            debug!(instance = %self.instance, "{what}: the state tables do not exist yet; retrying");
        } else if self.trouble.get(what) != Some(&message) {
            warn!(instance = %self.instance, error = %message, "{what} failed; retrying every second");
        }
        self.trouble.insert(what, message);
    }

    fn recovered(&mut self, what: &'static str) {
        if self.trouble.remove(what).is_some() {
            debug!(instance = %self.instance, "{what} works again");
        }
    }
}

/// Listens for phase notifications and wakes the worker on each, and after every (re)connection
/// (notifications sent while the connection was down are lost). Ends when the pool is closed.
async fn listen(pool: PgPool, channel: String, wake: Arc<Notify>, retry: Duration) {
    let mut last_error: Option<String> = None;
    loop {
        let subscribed = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            sqlx::Result::Ok(listener)
        }
        .await;
        match subscribed {
            Ok(mut listener) => {
                if last_error.take().is_some() {
                    info!(%channel, "listening for phase changes again");
                }
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => {
                            debug!(%channel, payload = n.payload(), "phase change notified");
                            wake.notify_one();
                        }
                        // The connection was lost and is back (listening again): catch up.
                        Ok(None) => {
                            debug!(%channel, "listening connection re-established");
                            wake.notify_one();
                        }
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(e) => {
                            warn!(%channel, error = %e, "listening for phase changes failed; polling meanwhile");
                            last_error = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                let message = e.to_string();
                if last_error.as_ref() != Some(&message) {
                    warn!(%channel, error = %message, "cannot listen for phase changes; polling meanwhile");
                }
                last_error = Some(message);
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// An instance as [`wait_for_acks`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceAck {
    /// The instance id.
    pub id: String,
    /// Time since its last heartbeat, by the database's clock.
    pub heartbeat_age: Duration,
    /// Whether its build knows the step (old builds never acknowledge it).
    pub knows_step: bool,
    /// The latest phase of the step it acknowledged.
    pub acknowledged: Option<Phase>,
}

impl std::fmt::Display for InstanceAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (heartbeat {:.1} s ago, ",
            self.id,
            self.heartbeat_age.as_secs_f64()
        )?;
        match self.acknowledged {
            Some(p) => write!(f, "at phase {p}")?,
            None => f.write_str("acknowledged nothing")?,
        }
        if !self.knows_step {
            f.write_str(", runs a build that does not know this step")?;
        }
        f.write_str(")")
    }
}

/// What [`wait_for_acks`] found once every live instance had acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitOutcome {
    /// Instances that acknowledged the phase (or a later one).
    pub acknowledged: Vec<InstanceAck>,
    /// Instances that had not, but whose heartbeat is older than the timeout: considered gone
    /// and not waited for.
    pub expired: Vec<InstanceAck>,
    /// How long the wait took.
    pub waited: Duration,
}

/// Waits until every instance with a fresh heartbeat (newer than `heartbeat_timeout`, by the
/// database's clock; default [`DEFAULT_HEARTBEAT_TIMEOUT`]) has acknowledged `phase`, or a
/// later one, of `step`. Instances that stop heartbeating are ignored once their heartbeat is
/// older than the timeout, and listed in [`WaitOutcome::expired`]. An instance that registers
/// during the wait is waited for too.
///
/// Call it after the transaction recording `phase` has committed. Needs the tables of
/// [`Coordinator::bootstrap_sql`]; reads them every 100 ms on a connection of `pool`.
///
/// # Errors
///
/// [`ErrorKind::NotReady`] when instances with a fresh heartbeat have not acknowledged after
/// `deadline`, naming each with its heartbeat age, the phase it is at, and whether its build
/// knows the step; [`ErrorKind::Database`] when the state store cannot be read.
pub async fn wait_for_acks(
    pool: &PgPool,
    state_schema: &str,
    step: &StepId,
    phase: Phase,
    heartbeat_timeout: Duration,
    deadline: Duration,
) -> Result<WaitOutcome> {
    let store = Instances::new(state_schema);
    let started = Instant::now();
    let mut announced = false;
    loop {
        let rows = {
            let mut conn = pool.acquire().await?;
            store.ack_states(&mut conn, step, heartbeat_timeout).await?
        };
        let mut outcome = WaitOutcome {
            acknowledged: Vec::new(),
            expired: Vec::new(),
            waited: started.elapsed(),
        };
        let mut pending = Vec::new();
        for row in rows {
            let latest = row.acked.iter().copied().max();
            let done = row.acked.iter().any(|p| *p >= phase);
            let instance = InstanceAck {
                id: row.id,
                heartbeat_age: row.heartbeat_age,
                knows_step: row.knows_step,
                acknowledged: latest,
            };
            if done {
                outcome.acknowledged.push(instance);
            } else if row.fresh {
                pending.push(instance);
            } else {
                outcome.expired.push(instance);
            }
        }
        if pending.is_empty() {
            if !outcome.expired.is_empty() {
                warn!(
                    %step, %phase,
                    expired = %list(&outcome.expired),
                    "not waiting for instances whose heartbeat expired"
                );
            }
            debug!(%step, %phase, instances = outcome.acknowledged.len(), waited = ?outcome.waited, "every live instance acknowledged");
            return Ok(outcome);
        }
        if started.elapsed() >= deadline {
            let mut conn = pool.acquire().await?;
            let (recorded, table) = store.step_context(&mut conn, step).await?;
            return Err(ErrorKind::NotReady {
                step: step.to_string(),
                table: table.unwrap_or_else(|| "(unknown)".into()),
                phase: recorded.unwrap_or_else(|| Phase::Pending.to_string()),
                message: format!(
                    "waited {:.1} s for every live instance to acknowledge phase {phase}; not acknowledged by {}. \
                     A running instance acknowledges within about a second unless its build does not know this \
                     step (deploy the new build everywhere) or it cannot reach the database; an instance that \
                     stops heartbeating is no longer waited for after {:.1} s",
                    deadline.as_secs_f64(),
                    list(&pending),
                    heartbeat_timeout.as_secs_f64(),
                ),
            }
            .into());
        }
        if !announced {
            info!(%step, %phase, waiting_for = %list(&pending), "waiting for instances to acknowledge");
            announced = true;
        }
        tokio::time::sleep(ACK_POLL.min(deadline.saturating_sub(started.elapsed()))).await;
    }
}

fn list(instances: &[InstanceAck]) -> String {
    instances
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
