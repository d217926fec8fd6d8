//! The executor path for statements that cannot run in a transaction block: `CREATE [UNIQUE]
//! INDEX CONCURRENTLY` and `DROP INDEX CONCURRENTLY`.
//!
//! # Timeouts
//!
//! These statements run on a dedicated connection (not from the pool, so their settings never
//! reach application queries and an hours-long build holds no pool slot), in autocommit, with
//! **`lock_timeout = 0` and `statement_timeout = 0`**:
//!
//! - The only table lock they take is SHARE UPDATE EXCLUSIVE, which conflicts with neither reads
//!   (ACCESS SHARE) nor writes (ROW EXCLUSIVE): while they wait for it, or hold it, the
//!   application's queries neither queue behind them nor wait. The `lock_timeout` that protects
//!   the application elsewhere has nothing to protect here.
//! - A concurrent build waits, by design, for every transaction that could still see the table
//!   without the index (writers that started before it, then every snapshot older than its own).
//!   PostgreSQL implements those waits as lock waits, so any `lock_timeout` would abort a healthy
//!   build midway and leave an INVALID index behind; a `statement_timeout` would do the same to a
//!   long one.
//!
//! Statements that take a lock the application needs keep the executor's policy (short
//! transaction, `lock_timeout`, retries with backoff): `ADD CONSTRAINT ... UNIQUE USING INDEX`,
//! and the `DROP CONSTRAINT` of an abort. What the build is waiting for (phase, the pid of an
//! old transaction it waits on) is logged every 10 seconds, and its tuple counts feed
//! [`Evolution::progress`](crate::Evolution::progress).
//!
//! # Failures
//!
//! A build that fails (duplicate keys, `pg_cancel_backend`, a lost connection) leaves an
//! INVALID index. It is dropped `CONCURRENTLY` right away, and the error says so; should that
//! fail too, the next build drops it first. A build found running in another session (its
//! process died, PostgreSQL has not noticed yet because the statement never talks to the
//! client) is waited for rather than duplicated: when it ends, a valid index is adopted, an
//! INVALID one dropped and built again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};
use tracing::{Instrument, info, info_span, warn};

use crate::catalog::indexes::{self, LiveIndex};
use crate::error::{ErrorKind, Result};
use crate::executor::{Executor, Target, is_retryable};
use crate::options::DdlOptions;
use crate::plan::{Plan, PlannedStep};
use crate::progress::Progress;
use crate::spec::ModelSpec;
use crate::sql::Statement;
use crate::sql::carry::CarriedIndex;
use crate::sql::index::{self, IndexDef};
use crate::state::Event;
use crate::state::StateStore;
use crate::step::{Phase, StepKind};

/// How often a running build is looked at, and how often that is logged.
const TICK: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);

/// SQLSTATE `unique_violation`: a unique build met duplicate keys.
const UNIQUE_VIOLATION: &str = "23505";

/// How many offending values an error lists.
pub(crate) const EXAMPLES: u32 = 5;

/// A session for concurrent statements: see the module documentation for its settings.
pub(crate) async fn session(pool: &PgPool) -> sqlx::Result<PgConnection> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    // One process per build: a parallel build (PostgreSQL's default, up to
    // `max_parallel_maintenance_workers` = 2 more processes) takes every core of a small server
    // at once, and the application's queries wait for CPU while it runs (BENCHMARKS.md, issue
    // #13). A build runs in the background anyway; slower and gentler is the trade.
    sqlx::raw_sql(
        "SET lock_timeout = 0; SET statement_timeout = 0; SET max_parallel_maintenance_workers = 0",
    )
    .execute(&mut conn)
    .await?;
    // No `client_connection_check_interval` here (see `sql::watch_client`): a build whose
    // process died keeps running, and the next leader adopts it instead of building again.
    Ok(conn)
}

fn target(step: &PlannedStep, phase: Phase) -> Target<'_> {
    Target {
        step: step.id.as_str(),
        phase,
        schema: step.model.schema,
        table: step.model.table,
    }
}

fn statement_error(step: &PlannedStep, phase: Phase, source: sqlx::Error) -> crate::Error {
    ErrorKind::Statement {
        step: step.id.to_string(),
        phase: phase.to_string(),
        table: step.model.qualified_name(),
        source,
    }
    .into()
}

/// Runs one statement outside any transaction, in a [`session`].
async fn run_outside(pool: &PgPool, statement: &Statement) -> sqlx::Result<()> {
    let mut conn = session(pool).await?;
    sqlx::query(AssertSqlSafe(statement.sql.as_str()))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// Runs an abort whose statements include concurrent ones: the in-transaction ones first (a
/// constraint, under the executor's lock policy), then the concurrent ones (the index), then
/// `record`. Each part is idempotent (`IF EXISTS`), so an interrupted abort can simply run again.
pub(crate) async fn run_abort(
    pool: &PgPool,
    executor: &Executor,
    step: &PlannedStep,
    statements: &[Statement],
    record: &[String],
) -> Result<()> {
    let (outside, inside): (Vec<Statement>, Vec<Statement>) = statements
        .iter()
        .cloned()
        .partition(Statement::is_concurrent);
    let target = target(step, Phase::Aborted);
    if !inside.is_empty() {
        executor.run(target, &inside, &[], false).await?;
    }
    for statement in &outside {
        run_outside(pool, statement)
            .await
            .map_err(|e| statement_error(step, Phase::Aborted, e))?;
    }
    executor.run(target, &[], record, false).await
}

/// Whether a step's statements include one that must run outside a transaction.
pub(crate) fn has_concurrent(statements: &[Statement]) -> bool {
    statements.iter().any(Statement::is_concurrent)
}

/// The expand phase of an index step (`CreateIndex`, `AddUnique`): the concurrent build, with
/// everything around it (an INVALID index dropped first, a running build waited for, validity
/// checked after, cleanup and a clear error on failure). The caller records the phase.
pub(crate) struct Build<'a> {
    pub pool: &'a PgPool,
    pub options: &'a DdlOptions,
    pub step: &'a PlannedStep,
    pub progress: &'a Progress,
    /// Set when the build should stop (an abort is waiting): the build is cancelled and its
    /// INVALID index dropped.
    pub stop: &'a AtomicBool,
    /// An index a rename carries over from its old column (see `sql::carry`), built instead of
    /// the step's own: same recovery, no duplicate listing, no progress counts (the rename's
    /// are its backfill's).
    pub carried: Option<&'a CarriedIndex>,
    /// The phase the build belongs to (expand for index steps, validate for a rename's).
    pub phase: Phase,
}

/// How a build ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Built {
    /// The index is valid.
    Done,
    /// Stopped on request; nothing is left behind.
    Stopped,
}

impl Build<'_> {
    fn model(&self) -> &ModelSpec {
        &self.step.model
    }

    fn def(&self) -> Option<IndexDef> {
        self.step.index()
    }

    pub async fn run(&self) -> Result<Built> {
        let model = self.model();
        let (name, create, def) = match self.carried {
            Some(carried) => (carried.name.clone(), carried.create(model), None),
            None => match self.def() {
                Some(def) => (
                    def.name.clone(),
                    index::create_concurrently(model, &def),
                    Some(def),
                ),
                None => return Ok(Built::Done),
            },
        };
        let span = info_span!("ddl", step = %self.step.id, phase = %self.phase, table = %model.qualified_name(), index = %name);
        async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut conn = session(self.pool)
                    .await
                    .map_err(|e| statement_error(self.step, self.phase, e))?;
                match self.clear(&mut conn, &name).await {
                    Ok(Some(existing)) if existing.valid => {
                        info!("index {name} is already valid: adopted");
                        return Ok(Built::Done);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(statement_error(self.step, self.phase, e)),
                }
                if self.stop.load(Ordering::Acquire) {
                    return Ok(Built::Stopped);
                }
                if let Some(def) = &def {
                    self.point_out_equivalent(&mut conn, def).await;
                }
                info!("building index {name} concurrently");
                let started = Instant::now();
                let result = self.create(&mut conn, &create).await;
                let _ = conn.close().await;
                match result {
                    Ok(()) => {
                        let mut check = session(self.pool)
                            .await
                            .map_err(|e| statement_error(self.step, self.phase, e))?;
                        let state = indexes::read_index(&mut check, model, &name)
                            .await
                            .map_err(|e| statement_error(self.step, self.phase, e))?;
                        let _ = check.close().await;
                        match state {
                            Some(ix) if ix.valid => {
                                info!(
                                    seconds = started.elapsed().as_secs_f64(),
                                    "index {name} built and valid"
                                );
                                return Ok(Built::Done);
                            }
                            _ => {
                                let outcome = self.cleanup(&name).await;
                                return Err(ErrorKind::IndexBuild {
                                    step: self.step.id.to_string(),
                                    phase: self.phase.to_string(),
                                    table: model.qualified_name(),
                                    index: name.clone(),
                                    message: format!(
                                        "the build ended but pg_index.indisvalid is false; {outcome}; boot again to retry"
                                    ),
                                    connection_lost: false,
                                }
                                .into());
                            }
                        }
                    }
                    Err(e) if self.stop.load(Ordering::Acquire) => {
                        let outcome = self.cleanup(&name).await;
                        info!("index build stopped on request ({e}); {outcome}");
                        return Ok(Built::Stopped);
                    }
                    Err(e) if is_retryable(&e) && attempt < self.options.max_attempts => {
                        let outcome = self.cleanup(&name).await;
                        warn!(attempt, "index build failed ({e}); {outcome}; retrying");
                        tokio::time::sleep((self.options.initial_backoff * attempt).min(self.options.max_backoff)).await;
                    }
                    Err(e) => {
                        let outcome = self.cleanup(&name).await;
                        let code = e.as_database_error().and_then(|d| d.code());
                        if let Some(def) = &def
                            && code.as_deref() == Some(UNIQUE_VIOLATION)
                        {
                            return Err(self.duplicates_error(def, &e, &outcome).await);
                        }
                        let connection_lost = crate::transient::is_transient_sqlx(&e);
                        let next = if connection_lost {
                            "the background work tries again"
                        } else {
                            "boot again to retry"
                        };
                        return Err(ErrorKind::IndexBuild {
                            step: self.step.id.to_string(),
                            phase: self.phase.to_string(),
                            table: model.qualified_name(),
                            index: name.clone(),
                            message: format!("{e}; {outcome}; {next}"),
                            connection_lost,
                        }
                        .into());
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Makes room for the build: waits while another session builds the index (a process that
    /// died mid-build leaves its statement running), then drops it if it is INVALID. Returns
    /// what is left under the name (`None`, or a valid index).
    async fn clear(&self, conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<LiveIndex>> {
        let mut last_log: Option<Instant> = None;
        loop {
            let existing = indexes::read_index(conn, self.model(), name).await?;
            match existing {
                Some(ix) if ix.on_table && !ix.valid && ix.building => {
                    if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        info!(
                            "index {} is being built by another session (an earlier process that died?); waiting for it to end",
                            name
                        );
                        last_log = Some(Instant::now());
                    }
                    if self.stop.load(Ordering::Acquire) {
                        return Ok(None);
                    }
                    tokio::time::sleep(TICK).await;
                }
                Some(ix) if ix.on_table && !ix.valid => {
                    warn!(
                        "dropping the INVALID index {} left by an earlier build before building it again",
                        name
                    );
                    sqlx::query(AssertSqlSafe(
                        index::drop_concurrently(self.model(), name).sql.as_str(),
                    ))
                    .execute(&mut *conn)
                    .await?;
                }
                other => return Ok(other),
            }
        }
    }

    /// A valid index with the same definition under another name is not adopted (the plan names
    /// the index it builds), but it is worth a warning: it may make this one redundant.
    async fn point_out_equivalent(&self, conn: &mut PgConnection, def: &IndexDef) {
        let Ok(Ok(key)) = self.probe_key(conn, def).await else {
            return;
        };
        if let Ok(Some(other)) =
            indexes::equivalent_index(conn, self.model(), &key, &def.name).await
        {
            warn!(
                "index {other} already has the definition of {}; pgevolve builds {} as declared. Declare \
                 `name = \"{other}\"` instead to adopt the existing index",
                def.name, def.name
            );
        }
    }

    async fn probe_key(
        &self,
        conn: &mut PgConnection,
        def: &IndexDef,
    ) -> sqlx::Result<std::result::Result<String, String>> {
        let live = crate::catalog::read_table(conn, self.model()).await?;
        indexes::probe(
            conn,
            self.model(),
            &live,
            indexes::Probe::Index {
                unique: def.unique,
                body: &def.body(),
            },
        )
        .await
    }

    /// Runs the build, looking at its progress every second (and cancelling it when asked to
    /// stop).
    async fn create(&self, conn: &mut PgConnection, create: &Statement) -> sqlx::Result<()> {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await?;
        let build = sqlx::query(AssertSqlSafe(create.sql.as_str())).execute(&mut *conn);
        tokio::pin!(build);
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        let mut last_log = Instant::now();
        let mut cancelled = false;
        loop {
            tokio::select! {
                result = &mut build => return result.map(|_| ()),
                _ = tick.tick() => {
                    if self.stop.load(Ordering::Acquire) && !cancelled {
                        cancelled = true;
                        info!("stopping the index build on request");
                        let _ = sqlx::query("SELECT pg_cancel_backend($1)").bind(pid).execute(self.pool).await;
                    }
                    let log = last_log.elapsed() >= LOG_EVERY;
                    if log {
                        last_log = Instant::now();
                    }
                    self.report(pid, log).await;
                }
            }
        }
    }

    /// Feeds `pg_stat_progress_create_index` into the step's progress, and logs it (with what
    /// the build is waiting for) when `log` is set.
    async fn report(&self, pid: i32, log: bool) {
        let row = sqlx::query(
            "SELECT p.phase, p.tuples_done, p.tuples_total, p.blocks_done, p.blocks_total, \
                    p.current_locker_pid::bigint AS locker, \
                    (SELECT left(a.query, 200) || ' (' || a.state || ', transaction started ' || \
                            coalesce(a.xact_start::text, '?') || ')' \
                       FROM pg_stat_activity a WHERE a.pid = p.current_locker_pid) AS waiting_for \
             FROM pg_stat_progress_create_index p WHERE p.pid = $1",
        )
        .bind(pid)
        .fetch_optional(self.pool)
        .await;
        let Ok(Some(row)) = row else {
            return;
        };
        if self.carried.is_some() && !log {
            return;
        }
        // Progress is best effort: a row that does not read as expected is skipped, never a panic.
        let read = || -> sqlx::Result<_> {
            Ok((
                row.try_get::<String, _>("phase")?,
                row.try_get::<i64, _>("tuples_done")?,
                row.try_get::<i64, _>("tuples_total")?,
                row.try_get::<i64, _>("blocks_done")?,
                row.try_get::<i64, _>("blocks_total")?,
                row.try_get::<i64, _>("locker")?,
                row.try_get::<Option<String>, _>("waiting_for")?,
            ))
        };
        let Ok((phase, tuples_done, tuples_total, blocks_done, blocks_total, locker, waiting_for)) =
            read()
        else {
            return;
        };
        if tuples_total > 0 && self.carried.is_none() {
            self.progress
                .set_build(&self.step.id, tuples_done, tuples_total);
        }
        if log {
            if locker != 0 {
                info!(
                    "index build {phase}: waiting for pid {locker}: {}",
                    waiting_for.unwrap_or_default()
                );
            } else {
                info!(
                    blocks_done,
                    blocks_total, tuples_done, tuples_total, "index build {phase}"
                );
            }
        }
    }

    /// After a failed build: drops the INVALID index it left, and says what happened.
    async fn cleanup(&self, name: &str) -> String {
        let mut conn = match session(self.pool).await {
            Ok(conn) => conn,
            Err(e) => {
                return format!(
                    "the INVALID index it may have left could not be dropped ({e}); the next build drops it first"
                );
            }
        };
        let outcome = match indexes::read_index(&mut conn, self.model(), name).await {
            Ok(None) => "no index was left behind".to_string(),
            Ok(Some(ix)) if ix.on_table && !ix.valid && !ix.building => {
                match sqlx::query(AssertSqlSafe(
                    index::drop_concurrently(self.model(), name).sql.as_str(),
                ))
                .execute(&mut conn)
                .await
                {
                    Ok(_) => format!(
                        "the INVALID index {} it left was dropped (DROP INDEX CONCURRENTLY)",
                        name
                    ),
                    Err(e) => format!(
                        "the INVALID index {} it left could not be dropped ({e}); the next build drops it first",
                        name
                    ),
                }
            }
            Ok(Some(ix)) if ix.building => format!(
                "index {} is still being built by another session; the next build waits for it",
                name
            ),
            Ok(Some(_)) => format!("index {} is left as it is", name),
            Err(e) => format!(
                "the INVALID index it may have left could not be looked up ({e}); the next build drops it first"
            ),
        };
        let _ = conn.close().await;
        outcome
    }

    /// The error of a unique build that met duplicate keys, with a few of them.
    async fn duplicates_error(
        &self,
        def: &IndexDef,
        source: &sqlx::Error,
        outcome: &str,
    ) -> crate::Error {
        let model = self.model();
        let found = async {
            let mut conn = session(self.pool).await?;
            let rows = sqlx::query(AssertSqlSafe(
                index::duplicates(model, def, EXAMPLES).as_str(),
            ))
            .fetch_all(&mut conn)
            .await?;
            let _ = conn.close().await;
            rows.iter()
                .map(|r| {
                    let key: Vec<Option<String>> = r.try_get("key")?;
                    let count: i64 = r.try_get("rows")?;
                    let key: Vec<String> = key
                        .into_iter()
                        .map(|v| format!("'{}'", v.unwrap_or_default().replace('\'', "''")))
                        .collect();
                    Ok(format!("({}) in {count} rows", key.join(", ")))
                })
                .collect::<sqlx::Result<Vec<_>>>()
        }
        .await;
        let examples = match found {
            Ok(values) if !values.is_empty() => format!("e.g. {}", values.join(", ")),
            Ok(_) => format!("none remain now ({source})"),
            Err(e) => format!("they could not be listed ({e}); PostgreSQL said: {source}"),
        };
        ErrorKind::Verification {
            step: self.step.id.to_string(),
            phase: Phase::Expand.to_string(),
            table: model.qualified_name(),
            message: format!(
                "unique index {} on {} cannot be built: some values appear more than once, {examples}. {}, and \
                 nothing else was changed; remove the duplicates (or the `unique`), then boot again",
                def.name,
                def.describe_columns(),
                capitalize(outcome)
            ),
        }
        .into()
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The indexes removed from the structs: every index a recorded `create_index` step of the same
/// struct and table created, whose declaration is gone from this build. Returns, for each, the
/// id of the step that declared it and the `drop_index` step that drops it.
///
/// Only steps recorded by a struct of the same Rust name are considered: another service
/// mapping its own struct to the same table keeps its indexes.
pub(crate) async fn removed_indexes(
    pool: &PgPool,
    store: &StateStore,
    plans: &[Plan],
) -> Result<Vec<(String, PlannedStep)>> {
    let mut removed = Vec::new();
    for plan in plans {
        let model = &plan.model;
        // Every model of this build on the same table counts as declaring.
        let declared: Vec<String> = plans
            .iter()
            .filter(|p| p.model.schema == model.schema && p.model.table == model.table)
            .flat_map(|p| &p.steps)
            .filter_map(|s| s.object_name())
            .collect();
        let mut conn = pool.acquire().await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, object_name FROM {} WHERE model = $1 AND table_schema = $2 AND table_name = $3 \
             AND kind = 'create_index' AND phase NOT IN ('pending', 'aborted') AND object_name IS NOT NULL \
             ORDER BY created_at, id",
            store.table("steps")
        )))
        .bind(model.rust_name)
        .bind(model.schema)
        .bind(model.table)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let id: String = row.try_get("id")?;
            let name: String = row.try_get("object_name")?;
            if plan.steps.iter().any(|s| s.id.as_str() == id) || declared.contains(&name) {
                continue;
            }
            removed.push((id, PlannedStep::new(*model, StepKind::DropIndex(name))));
        }
    }
    Ok(removed)
}

/// Drops an index removed from the struct (a step of [`removed_indexes`]) with `DROP INDEX
/// CONCURRENTLY`. The drop is recorded as the `drop_index` step, phase contract, and the row of
/// the step that declared the index is deleted, so declaring it again later builds it again.
pub(crate) async fn drop_removed_index(
    pool: &PgPool,
    executor: &Executor,
    store: &StateStore,
    instance: &str,
    declared_by: &str,
    step: &PlannedStep,
) -> Result<()> {
    for statement in step.statements(Phase::Contract) {
        run_outside(pool, statement)
            .await
            .map_err(|e| statement_error(step, Phase::Contract, e))?;
    }
    let record = [
        store.steps().record_phase_sql(step, Phase::Contract),
        store.journal().insert_sql(
            Some(step.id.as_str()),
            &Event::RemovedIndexDropped {
                step: &step.describe(),
                declared_by,
            },
            instance,
        ),
        store.steps().forget_sql(declared_by),
    ];
    executor
        .run(target(step, Phase::Contract), &[], &record, false)
        .await?;
    info!(step = %step.id, phase = "contract", table = %step.model.qualified_name(), "{}", step.describe());
    Ok(())
}
