//! The engine, split by role. Every file adds methods to one [`Engine`], the state a booted
//! evolution shares between its handle and its background task:
//!
//! | file | role |
//! |---|---|
//! | `builder.rs` | [`Evolver`]: models, options, plans built once, `boot` |
//! | `boot.rs` | the slow boot: privileges, drift, expand under the boot lock, background task |
//! | `fast_boot.rs` | the boot with nothing pending (one round trip) |
//! | `evolution.rs` | [`Evolution`]: progress, wait, switch, contract, abort |
//! | `background.rs` | the walk under the leader lock, following and taking over without it |
//! | `advance.rs` | one phase of one step: the kind's runner, then the phase recorded |
//! | `gates.rs` | deploy window (with an override passed down) and acknowledgements |
//! | `abort.rs` | abort: recorded first, DDL once every instance follows |
//! | `requests.rs` | operators' requests (`pgevolve pause`, `contract`, ...) carried out |
//! | `carry.rs` | a rename's carry-over of indexes and constraints |
//! | `widen_key.rs` | a widened primary key's validate and contract, over the referencing tables |
//!
//! The runners below the engine (`backfill`, `concurrent`, `constraints`) get what they need
//! as arguments (a [`Progress`](crate::progress::Progress) handle, the pool, the stop flag) and
//! import nothing from here.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};

mod abort;
mod advance;
mod background;
mod boot;
mod builder;
mod carry;
mod evolution;
mod fast_boot;
mod gates;
mod requests;
mod widen_key;

pub use builder::Evolver;
pub use evolution::Evolution;

use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Executor, Target};
use crate::plan::PlannedStep;
use crate::progress::Progress;
use crate::registry::PhaseRegistry;
use crate::state::StateStore;
use crate::step::{Phase, StepId, advisory_key};

/// How often a waiting instance looks again (leader lock, the leader's progress).
const POLL: Duration = Duration::from_millis(100);

/// Connections of the runtime's own pool over [`Evolver::direct`]'s options.
const DIRECT_POOL_SIZE: u32 = 5;

/// The oldest PostgreSQL pgevolve runs on (13.0), as `server_version_num`.
const MIN_SERVER_VERSION: i32 = 130_000;

/// What a booted evolution shares between its handle and its background task.
#[derive(Debug)]
struct Engine {
    evolver: Evolver,
    executor: Executor,
    store: StateStore,
    instance: String,
    progress: Progress,
    /// Asks the background task to stop between batches (an abort needs the leader lock).
    stop: std::sync::atomic::AtomicBool,
    /// Phase propagation from and to the other instances; started at the end of boot.
    coordinator: std::sync::OnceLock<Coordinator>,
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

impl Engine {
    pub(super) fn lock_key(&self) -> i64 {
        advisory_key(&self.store.schema)
    }

    /// A connection outside the pool, so the session-level lock lives exactly as long as it.
    /// The first call checks that the pool keeps its sessions (no transaction pooler in between,
    /// see `pooler`), unless [`Evolver::direct`] was given; every lock and DDL comes after one.
    pub(super) async fn leader_connection(&self) -> Result<PgConnection> {
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
    pub(super) async fn check_same_database(&self) -> Result<()> {
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

    pub(super) async fn recorded_phase(
        &self,
        conn: &mut PgConnection,
        step: &PlannedStep,
    ) -> Result<Phase> {
        Ok(self
            .store
            .steps()
            .get(conn, &step.id)
            .await?
            .map(|r| r.phase)
            .unwrap_or(Phase::Pending))
    }

    /// Records a phase in this instance's view: progress, and the registry accessors read.
    pub(super) fn set_phase(&self, id: &StepId, phase: Phase) {
        self.registry.set(id, phase);
        self.progress.set_phase(id, phase);
    }

    /// The planned step with this id, among this evolution's models.
    pub(super) fn step(&self, id: &StepId) -> Result<PlannedStep> {
        self.evolver
            .planned()
            .iter()
            .flat_map(|p| &p.steps)
            .find(|s| &s.id == id)
            .cloned()
            .ok_or_else(|| {
                ErrorKind::UnknownStep {
                    step: id.to_string(),
                }
                .into()
            })
    }

    /// Takes the leader lock, waiting (polling, never queued in PostgreSQL) while another
    /// instance holds it.
    pub(super) async fn lead(&self) -> Result<PgConnection> {
        let mut lock = self.leader_connection().await?;
        while !try_lock(&mut lock, self.lock_key()).await? {
            tokio::time::sleep(POLL).await;
        }
        Ok(lock)
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
