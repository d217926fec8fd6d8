//! Rehearsals: your own migration, run against a throwaway server with both builds' writers,
//! before it ships.
//!
//! A rehearsal takes two builds of one model, the struct as the running service has it (the
//! *old* build) and the struct as the next deploy has it (the *new* build), and plays the deploy
//! in one process on fresh databases:
//!
//! 1. **The full walk.** The old build boots (that creates the old shape) and `rows` rows are
//!    seeded through its accessors. Old-build writers start (inserts of new rows and updates of
//!    any row, each through the generated accessors). The new build boots (expand) and its
//!    writers start too, on the same rows. Mid-backfill the new build is **restarted**
//!    ([`Evolution::stop`], then a second boot that resumes from the checkpoint). Then
//!    backfill and validate run to the end, `switch`, the old build's writers and instance stop
//!    (old builds are gone before a contract, that is what contract is gated on), `contract`,
//!    and the new build writes on.
//! 2. **The abort round** (first, on a database of its own, since an aborted step is not run
//!    again for its declaration): the same start, then every step of the new build is aborted
//!    mid-way with both builds writing; the table's catalog must be what it was before the new
//!    build booted, and every row must still be there. The old build's *instance* is stopped
//!    just before the abort (its writers go on): an abort of a step that changes the accessors
//!    (a rename) waits until every live instance acknowledges it, and an old build's instance,
//!    which does not know the step, never does, so the abort would wait for the
//!    acknowledgement deadline (10 minutes by default).
//!
//! Every write is serialized per row (striped locks), so the rehearsal knows which write came
//! last, and remembered. At the end every row is read back through the new build's accessors
//! and compared **in full** (`PartialEq`) with what was written last: a row the new build wrote
//! must read back exactly; a row the old build wrote must read back as your `expect` function
//! says the new build sees it (the backfill's value, the renamed field, ...). `expect` is
//! required: a generic comparison of the fields the two structs share by name is not possible
//! without reflection, and it would miss exactly what a migration computes (a backfilled
//! column), which is what a rehearsal is for.
//!
//! Every accessor call is timed; the [`RehearsalReport`] has the longest wait per stage, the
//! rows each build wrote, the writes that failed, every lost or mismatched row (key, expected
//! and found, through `Debug`), the phases each step walked, where the restart hit, and whether
//! the abort restored the catalog.
//!
//! ```no_run
//! mod v1 {
//!     #[derive(pgevolve::Evolve, Debug, Clone, PartialEq)]
//!     #[evolve(table = "users")]
//!     pub struct User {
//!         #[evolve(primary_key)]
//!         pub id: i64,
//!         pub name: String,
//!         pub email: String,
//!     }
//! }
//! mod v2 {
//!     #[derive(pgevolve::Evolve, Debug, Clone, PartialEq)]
//!     #[evolve(table = "users")]
//!     pub struct User {
//!         #[evolve(primary_key)]
//!         pub id: i64,
//!         #[evolve(renamed_from = "name")]
//!         pub full_name: String,
//!         pub email: String,
//!         #[evolve(backfill = "lower(email)")]
//!         pub email_lower: String,
//!     }
//! }
//! pgevolve_testkit::rehearsable!(v1::User, key = id: i64);
//! pgevolve_testkit::rehearsable!(v2::User, key = id: i64);
//!
//! # async fn run() -> Result<(), pgevolve_testkit::rehearsal::RehearsalError> {
//! use pgevolve_testkit::rehearsal::Rehearsal;
//! let report = Rehearsal::new(
//!     // How the old build writes row `n` (`version` changes with every write).
//!     |n, version| v1::User { id: n, name: format!("name {n}.{version}"), email: format!("U{n}.{version}@X.io") },
//!     // How the new build writes it.
//!     |n, version| v2::User {
//!         id: n,
//!         full_name: format!("full {n}.{version}"),
//!         email: format!("N{n}.{version}@X.io"),
//!         email_lower: format!("n{n}.{version}@x.io"),
//!     },
//!     // What the new build must read for a row the old build wrote last (`before`: the new
//!     // build's last write to it, whose filled value an old build's update keeps).
//!     |old: &v1::User, before: Option<&v2::User>| v2::User {
//!         id: old.id,
//!         full_name: old.name.clone(),
//!         email: old.email.clone(),
//!         email_lower: before.map_or_else(|| old.email.to_lowercase(), |b| b.email_lower.clone()),
//!     },
//! )
//! .rows(5_000)
//! .writers(2)
//! .run()
//! .await?;
//! println!("{report}");
//! report.assert_clean();
//! # Ok(()) }
//! ```
//!
//! ## Why a trait and a macro
//!
//! The accessors the derive generates (`insert`, `update`, `insert_many`) are inherent methods
//! of each struct, so generic code cannot call them; [`rehearsable!`](crate::rehearsable)
//! implements [`Rehearsable`] by forwarding to them (and names the key). Reads need nothing:
//! [`pgevolve::Select`] reads any model. The derive is left as it is, so a rehearsal costs
//! applications that never rehearse nothing.
//!
//! ## Limits
//!
//! One model per build, with a primary key of one column, on a fresh database (the old build
//! creates its table). The new build's deploy window is [`DeployWindow::always`]: a rehearsal
//! proves the data, not the calendar. Models whose new build cannot boot on a table the old
//! build created (drift) fail the rehearsal with that error.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, DeployWindow, Evolution, Evolve, Evolver, FromEvolvedRow, Phase};
use tokio::task::JoinHandle;

use crate::TestDatabase;

#[doc(hidden)]
pub use pgevolve::Error as AccessError;
#[doc(hidden)]
pub use sqlx::PgPool;

/// A model a rehearsal can write: the generated accessors, reachable from generic code.
/// Implement it with [`rehearsable!`](crate::rehearsable).
pub trait Rehearsable:
    Evolve + FromEvolvedRow + Clone + fmt::Debug + PartialEq + Send + Sync + Unpin + 'static
{
    /// The primary key's type.
    type Key: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static;

    /// The row's primary key.
    fn key(&self) -> Self::Key;

    /// The generated `insert`.
    fn insert_row<'a>(
        &'a self,
        pool: &'a PgPool,
    ) -> impl Future<Output = Result<(), AccessError>> + Send + 'a;

    /// The generated `update`: the rows updated.
    fn update_row<'a>(
        &'a self,
        pool: &'a PgPool,
    ) -> impl Future<Output = Result<u64, AccessError>> + Send + 'a;

    /// The generated `insert_many`.
    fn insert_rows<'a>(
        rows: &'a [Self],
        pool: &'a PgPool,
    ) -> impl Future<Output = Result<u64, AccessError>> + Send + 'a;
}

/// Implements [`Rehearsable`](crate::rehearsal::Rehearsable) for a struct with
/// `#[derive(Evolve)]`, naming its primary key field and type:
/// `pgevolve_testkit::rehearsable!(v2::User, key = id: i64);`. The struct must also derive
/// `Debug`, `Clone` and `PartialEq` (the rehearsal compares rows in full).
#[macro_export]
macro_rules! rehearsable {
    ($ty:ty, key = $key:ident : $key_ty:ty) => {
        impl $crate::rehearsal::Rehearsable for $ty {
            type Key = $key_ty;

            fn key(&self) -> $key_ty {
                ::core::clone::Clone::clone(&self.$key)
            }

            fn insert_row<'a>(
                &'a self,
                pool: &'a $crate::rehearsal::PgPool,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), $crate::rehearsal::AccessError>,
            > + ::core::marker::Send
            + 'a {
                <$ty>::insert(self, pool)
            }

            fn update_row<'a>(
                &'a self,
                pool: &'a $crate::rehearsal::PgPool,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<u64, $crate::rehearsal::AccessError>,
            > + ::core::marker::Send
            + 'a {
                <$ty>::update(self, pool)
            }

            fn insert_rows<'a>(
                rows: &'a [Self],
                pool: &'a $crate::rehearsal::PgPool,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<u64, $crate::rehearsal::AccessError>,
            > + ::core::marker::Send
            + 'a {
                <$ty>::insert_many(rows, pool)
            }
        }
    };
}

type Factory<T> = Arc<dyn Fn(i64, u64) -> T + Send + Sync>;
type Expect<O, N> = Arc<dyn Fn(&O, Option<&N>) -> N + Send + Sync>;

/// A rehearsal of the migration from the old build `O` to the new build `N` (see the
/// [module](self) documentation).
pub struct Rehearsal<O: Rehearsable, N: Rehearsable<Key = O::Key>> {
    old: Factory<O>,
    new: Factory<N>,
    expect: Expect<O, N>,
    rows: i64,
    writers: usize,
    abort: bool,
    restart: bool,
    backfill: BackfillOptions,
}

impl<O: Rehearsable, N: Rehearsable<Key = O::Key>> Rehearsal<O, N> {
    /// A rehearsal with 10,000 seeded rows, 2 writers per build, the abort round and the
    /// restart.
    ///
    /// - `old(n, version)`: the row `n` as the old build writes it. Its key must depend on `n`
    ///   only; `version` is different for every write (0 for the seeded rows), so that every
    ///   update writes new values: make every field depend on it.
    /// - `new(n, version)`: the same for the new build. Row `n` must have the same key in both.
    /// - `expect(row, new_before)`: what the new build must read for a row the old build wrote
    ///   last. `new_before` is the new build's last write to that row before it, if any: a
    ///   column the migration fills keeps a value a knowing writer (the new build) set against
    ///   an old build's later updates (the fill semantics, README "Fill semantics"), so the
    ///   expectation may depend on it.
    pub fn new(
        old: impl Fn(i64, u64) -> O + Send + Sync + 'static,
        new: impl Fn(i64, u64) -> N + Send + Sync + 'static,
        expect: impl Fn(&O, Option<&N>) -> N + Send + Sync + 'static,
    ) -> Self {
        Rehearsal {
            old: Arc::new(old),
            new: Arc::new(new),
            expect: Arc::new(expect),
            rows: 10_000,
            writers: 2,
            abort: true,
            restart: true,
            // Small batches, so that the restart and the abort hit a backfill under way.
            backfill: BackfillOptions {
                initial_batch_size: 200,
                min_batch_size: 100,
                max_batch_size: 500,
                ..BackfillOptions::default()
            },
        }
    }

    /// Rows seeded through the old build before the new one boots (rows `1..=rows`).
    pub fn rows(mut self, rows: i64) -> Self {
        self.rows = rows.max(1);
        self
    }

    /// Writer tasks per build (at least 1).
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }

    /// Whether to run the abort round (default `true`).
    pub fn abort_round(mut self, on: bool) -> Self {
        self.abort = on;
        self
    }

    /// Whether to restart the new build mid-backfill (default `true`).
    pub fn restart(mut self, on: bool) -> Self {
        self.restart = on;
        self
    }

    /// The new build's backfill options (default: batches of 100 to 500 rows, so that the
    /// restart and the abort land in the middle of a backfill).
    pub fn backfill_options(mut self, options: BackfillOptions) -> Self {
        self.backfill = options;
        self
    }

    /// Runs the rehearsal: the abort round (unless turned off), then the full walk, each on a
    /// fresh database of [`TestDatabase::new`] (the process's throwaway cluster, or
    /// `DATABASE_URL`'s server).
    ///
    /// # Errors
    ///
    /// [`RehearsalError`] when the rehearsal could not be carried out (no server, a boot or a
    /// phase that failed, a writer task that panicked). Lost or mismatched rows and failed
    /// writes are not errors: they are in the report ([`RehearsalReport::is_clean`]).
    pub async fn run(self) -> Result<RehearsalReport, RehearsalError> {
        let mut report = RehearsalReport {
            model: N::model().rust_name,
            table: format!("{}.{}", N::model().schema, N::model().table),
            rows_seeded: self.rows,
            ..RehearsalReport::default()
        };
        if self.abort {
            report.abort = Some(self.abort_round_run(&mut report).await?);
        }
        self.full_walk(&mut report).await?;
        Ok(report)
    }

    fn evolver(&self, pool: &PgPool) -> Evolver {
        Evolver::new(pool.clone())
            .deploy_window(DeployWindow::always())
            .backfill_options(self.backfill.clone())
            .model::<N>()
    }

    /// A fresh database with the old shape, seeded: the old build's evolution and the round.
    async fn prepare(
        &self,
        round: &'static str,
    ) -> Result<(TestDatabase, Evolution, Round<O, N>), RehearsalError> {
        let db = TestDatabase::new().await?;
        // A pool per build, as two builds are two processes: the statements of one build's
        // accessors must not meet the other's in a connection's statement cache (after an
        // abort the new build's SQL can be the old build's text with one more bound value).
        let old_pool = db.pool(2 * self.writers as u32 + 6).await?;
        let pool = db.pool(2 * self.writers as u32 + 6).await?;
        let old = Evolver::new(old_pool.clone())
            .model::<O>()
            .boot()
            .await
            .map_err(|e| RehearsalError::at(round, "the old build's boot", e))?;
        old.wait()
            .await
            .map_err(|e| RehearsalError::at(round, "the old build's boot", e))?;
        let round = Round::new(round, old_pool, pool, self);
        round.seed(self.rows).await?;
        Ok((db, old, round))
    }

    async fn abort_round_run(
        &self,
        report: &mut RehearsalReport,
    ) -> Result<AbortReport, RehearsalError> {
        let (_db, old_build, round) = self.prepare("abort round").await?;
        let before = catalog(&round.pool, N::model()).await?;
        round.stage("old build alone");
        let old_writers = round.writers(Build::Old, self.writers);
        tokio::time::sleep(Duration::from_millis(200)).await;

        round.stage("expand");
        let evolution = self
            .evolver(&round.pool)
            .boot()
            .await
            .map_err(|e| round.error("the new build's boot", e))?;
        let new_writers = round.writers(Build::New, self.writers);
        round.stage("backfill");
        let hit = mid_backfill(&evolution).await;
        round.stage("abort");
        // The old build's instance goes first (its writers go on: the accessors need no
        // instance). An abort of a step that changes the accessors (a rename) waits until every
        // live instance acknowledged it, and an instance whose build does not know the step
        // never does: with old instances still up, such an abort waits for the acknowledgement
        // deadline (see ARCHITECTURE.md, "Rehearsals").
        old_build
            .stop()
            .await
            .map_err(|e| round.error("stopping the old build's instance", e))?;
        drop(old_build);
        let mut aborted = Vec::new();
        for step in evolution.progress() {
            if step.phase >= Phase::Contract || is_create_table(&step.description) {
                continue;
            }
            evolution
                .abort(&step.step)
                .await
                .map_err(|e| round.error("abort", e))?;
            aborted.push(format!(
                "{} (at {}, {} rows filled)",
                step.description, step.phase, step.rows_done
            ));
        }
        round.stage("after the abort");
        tokio::time::sleep(Duration::from_millis(200)).await;
        round.stop(old_writers).await?;
        round.stop(new_writers).await?;
        let after = catalog(&round.pool, N::model()).await?;
        let catalog_diff = diff(&before, &after);
        // After the abort the table has the old shape: every row is read through the old build.
        // An abort keeps what a backfill wrote into an existing column (a `set_not_null`'s
        // filled NULLs): a row the old build wrote last must read back as written, or at
        // least mean the same to the new build (`expect` of both is equal).
        let rows = pgevolve::Select::<O>::new()
            .fetch_all(&round.old_pool)
            .await
            .map_err(|e| round.error("reading every row", e))?;
        let found: HashMap<O::Key, O> = rows.into_iter().map(|r| (r.key(), r)).collect();
        let log = round.log();
        let mut problems = Vec::new();
        for (key, last) in &log {
            let found = found.get(key);
            match (last, found) {
                (_, None) => problems.push(RowProblem {
                    round: "abort round",
                    key: format!("{key:?}"),
                    expected: last.describe(),
                    found: None,
                }),
                (Last::Old(o, before), Some(f))
                    if o != f
                        && (self.expect)(o, before.as_ref())
                            != (self.expect)(f, before.as_ref()) =>
                {
                    problems.push(RowProblem {
                        round: "abort round",
                        key: format!("{key:?}"),
                        expected: format!("{o:?}"),
                        found: Some(format!("{f:?}")),
                    })
                }
                _ => {}
            }
        }
        report.absorb(&round);
        report.problems.extend(problems);
        drop(evolution);
        Ok(AbortReport {
            hit,
            aborted,
            catalog_diff,
            rows_checked: log.len(),
        })
    }

    async fn full_walk(&self, report: &mut RehearsalReport) -> Result<(), RehearsalError> {
        let (_db, old_build, round) = self.prepare("full walk").await?;
        round.stage("old build alone");
        let old_writers = round.writers(Build::Old, self.writers);
        tokio::time::sleep(Duration::from_millis(200)).await;

        round.stage("expand");
        let mut evolution = self
            .evolver(&round.pool)
            .boot()
            .await
            .map_err(|e| round.error("the new build's boot", e))?;
        let new_writers = round.writers(Build::New, self.writers);
        if self.restart {
            round.stage("backfill");
            match mid_backfill(&evolution).await {
                Some(hit) => {
                    round.stage("restart");
                    evolution
                        .stop()
                        .await
                        .map_err(|e| round.error("stopping the new build", e))?;
                    drop(evolution);
                    evolution = self
                        .evolver(&round.pool)
                        .boot()
                        .await
                        .map_err(|e| round.error("the new build's second boot", e))?;
                    let resumed = evolution
                        .progress()
                        .iter()
                        .map(|s| s.rows_done)
                        .max()
                        .unwrap_or(0);
                    report.resumed_from = Some(resumed);
                    report.restart = Some(format!(
                        "stopped at {hit}; the second boot resumed from a checkpoint of {resumed} rows"
                    ));
                }
                None => report.restart = Some(
                    "no restart: the background work finished before a backfill was seen under way"
                        .into(),
                ),
            }
        }
        round.stage("backfill, validate");
        let watcher = watch_phases(&round, &evolution);
        let walked = evolution.wait().await;
        watcher.abort();
        walked.map_err(|e| round.error("backfill and validate", e))?;
        round.stage("switch");
        evolution
            .switch()
            .await
            .map_err(|e| round.error("switch", e))?;
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Old builds are gone before a contract: that is what contract is gated on.
        round.stage("retire, contract");
        round.stop(old_writers).await?;
        drop(old_build);
        evolution
            .contract()
            .await
            .map_err(|e| round.error("contract", e))?;
        round.stage("after contract");
        tokio::time::sleep(Duration::from_millis(200)).await;
        round.stop(new_writers).await?;

        let rows = pgevolve::Select::<N>::new()
            .fetch_all(&round.pool)
            .await
            .map_err(|e| round.error("reading every row", e))?;
        let found: HashMap<N::Key, N> = rows.into_iter().map(|r| (r.key(), r)).collect();
        let log = round.log();
        for (key, last) in &log {
            let expected = match last {
                Last::Old(o, before) => (self.expect)(o, before.as_ref()),
                Last::New(n) => n.clone(),
            };
            match found.get(key) {
                Some(f) if *f == expected => {}
                found => report.problems.push(RowProblem {
                    round: "full walk",
                    key: format!("{key:?}"),
                    expected: format!("{expected:?}"),
                    found: found.map(|f| format!("{f:?}")),
                }),
            }
        }
        report.rows_checked = log.len();
        report.unexpected_rows = found.keys().filter(|k| !log.contains_key(k)).count();
        report.absorb(&round);
        let status = evolution
            .status()
            .await
            .map_err(|e| round.error("reading the journal", e))?;
        let ours: Vec<pgevolve::StepId> =
            evolution.progress().into_iter().map(|s| s.step).collect();
        for step in status.into_iter().filter(|s| ours.contains(&s.id)) {
            report.steps.push(StepWalk {
                description: step.description.clone(),
                phase: step.phase,
                events: step.history.iter().map(|e| e.event.clone()).collect(),
            });
        }
        Ok(())
    }
}

/// Waits until some step's backfill has filled rows and is not over, or the background work
/// is finished; says where it stopped (`None`: finished first).
async fn mid_backfill(evolution: &Evolution) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if evolution.is_finished() || Instant::now() > deadline {
            return None;
        }
        if let Some(step) = evolution
            .progress()
            .into_iter()
            .find(|s| s.rows_done > 0 && s.phase < Phase::Backfill)
        {
            return Some(format!(
                "{}: {} rows filled",
                step.description, step.rows_done
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The step that creates a missing table: never aborted by the rehearsal (the old build's table
/// is there, and its abort would drop it).
fn is_create_table(description: &str) -> bool {
    description.starts_with("create table")
}

/// Names the stage after the phase the background work is in, while it runs.
fn watch_phases<O: Rehearsable, N: Rehearsable<Key = O::Key>>(
    round: &Round<O, N>,
    evolution: &Evolution,
) -> JoinHandle<()> {
    let (stage, evolution) = (round.shared.stage.clone(), evolution.clone());
    tokio::spawn(async move {
        while !evolution.is_finished() {
            // The furthest step says the phase: a step with nothing after expand (an index)
            // stays at expand while the others backfill and validate.
            let furthest = evolution
                .progress()
                .iter()
                .filter(|s| s.phase != Phase::Aborted)
                .map(|s| s.phase)
                .max();
            let name = match furthest {
                Some(Phase::Pending) => "expand",
                Some(Phase::Expand) => "backfill",
                Some(Phase::Backfill) => "validate",
                _ => "validate",
            };
            *stage.lock().unwrap_or_else(|p| p.into_inner()) = name;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// What a row holds last, by the build that wrote it; an old build's write with the new
/// build's last write before it.
#[derive(Clone)]
enum Last<O, N> {
    Old(O, Option<N>),
    New(N),
}

impl<O: fmt::Debug, N: fmt::Debug> Last<O, N> {
    fn describe(&self) -> String {
        match self {
            Last::Old(o, _) => format!("{o:?} (written by the old build)"),
            Last::New(n) => format!("{n:?} (written by the new build)"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    Old,
    New,
}

const STRIPES: usize = 64;

/// What the writers of one round share.
struct Shared<O: Rehearsable, N: Rehearsable<Key = O::Key>> {
    log: Mutex<HashMap<O::Key, Last<O, N>>>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// The next fresh row number; rows below it were seeded or inserted (or are being).
    next_row: AtomicI64,
    version: AtomicU64,
    stage: Arc<Mutex<&'static str>>,
    /// The longest accessor call per stage, in the order the stages came.
    waits: Mutex<Vec<(&'static str, Duration)>>,
    writes_old: AtomicU64,
    writes_new: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

struct Round<O: Rehearsable, N: Rehearsable<Key = O::Key>> {
    name: &'static str,
    /// The new build's pool.
    pool: PgPool,
    /// The old build's.
    old_pool: PgPool,
    shared: Arc<Shared<O, N>>,
    old: Factory<O>,
    new: Factory<N>,
}

struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl<O: Rehearsable, N: Rehearsable<Key = O::Key>> Round<O, N> {
    fn new(
        name: &'static str,
        old_pool: PgPool,
        pool: PgPool,
        rehearsal: &Rehearsal<O, N>,
    ) -> Self {
        Round {
            name,
            pool,
            old_pool,
            shared: Arc::new(Shared {
                log: Mutex::new(HashMap::new()),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                next_row: AtomicI64::new(rehearsal.rows + 1),
                version: AtomicU64::new(1),
                stage: Arc::new(Mutex::new("seed")),
                waits: Mutex::new(Vec::new()),
                writes_old: AtomicU64::new(0),
                writes_new: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                failures: Mutex::new(Vec::new()),
            }),
            old: rehearsal.old.clone(),
            new: rehearsal.new.clone(),
        }
    }

    fn error(&self, what: &'static str, source: pgevolve::Error) -> RehearsalError {
        RehearsalError::at(self.name, what, source)
    }

    fn stage(&self, name: &'static str) {
        *self.shared.stage.lock().unwrap_or_else(|p| p.into_inner()) = name;
    }

    fn log(&self) -> HashMap<O::Key, Last<O, N>> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rows `1..=rows` through the old build's `insert_many`, in chunks within PostgreSQL's
    /// bind limit.
    async fn seed(&self, rows: i64) -> Result<(), RehearsalError> {
        let columns = O::model().columns.len().max(1);
        let chunk = (60_000 / columns).clamp(1, 5_000);
        let all: Vec<O> = (1..=rows).map(|n| (self.old)(n, 0)).collect();
        for part in all.chunks(chunk) {
            O::insert_rows(part, &self.old_pool)
                .await
                .map_err(|e| self.error("seeding through the old build", e))?;
        }
        let mut log = self.shared.log.lock().unwrap_or_else(|p| p.into_inner());
        for row in all {
            log.insert(row.key(), Last::Old(row, None));
        }
        Ok(())
    }

    fn writers(&self, build: Build, count: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..count)
            .map(|w| {
                let pool = match build {
                    Build::Old => self.old_pool.clone(),
                    Build::New => self.pool.clone(),
                };
                let (shared, stop) = (self.shared.clone(), stop.clone());
                let (old, new) = (self.old.clone(), self.new.clone());
                let seed = (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ u64::from(build == Build::New);
                tokio::spawn(async move {
                    let mut rng = seed | 1;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let insert = n.is_multiple_of(4);
                        let row = if insert {
                            shared.next_row.fetch_add(1, Ordering::Relaxed)
                        } else {
                            let known = shared.next_row.load(Ordering::Relaxed) - 1;
                            1 + (rng % known.max(1) as u64) as i64
                        };
                        let version = shared.version.fetch_add(1, Ordering::Relaxed);
                        let _row_lock = shared.stripes[stripe(row)].lock().await;
                        let started = Instant::now();
                        let (result, last) = match build {
                            Build::Old => {
                                let value = old(row, version);
                                let result = if insert {
                                    value.insert_row(&pool).await.map(|()| 1)
                                } else {
                                    value.update_row(&pool).await
                                };
                                (result, Last::Old(value, None))
                            }
                            Build::New => {
                                let value = new(row, version);
                                let result = if insert {
                                    value.insert_row(&pool).await.map(|()| 1)
                                } else {
                                    value.update_row(&pool).await
                                };
                                (result, Last::New(value))
                            }
                        };
                        shared.waited(started.elapsed());
                        match result {
                            // An update of a row whose insert has not run yet changed nothing.
                            Ok(0) => {}
                            Ok(_) => {
                                let mut log = shared.log.lock().unwrap_or_else(|p| p.into_inner());
                                let last = match last {
                                    // The new build's last write before this one, if any.
                                    Last::Old(o, _) => {
                                        let before = match log.get(&o.key()) {
                                            Some(Last::New(n)) => Some(n.clone()),
                                            Some(Last::Old(_, before)) => before.clone(),
                                            None => None,
                                        };
                                        Last::Old(o, before)
                                    }
                                    new => new,
                                };
                                let key = match &last {
                                    Last::Old(o, _) => o.key(),
                                    Last::New(n) => n.key(),
                                };
                                log.insert(key, last);
                                drop(log);
                                match build {
                                    Build::Old => &shared.writes_old,
                                    Build::New => &shared.writes_new,
                                }
                                .fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                shared.failed.fetch_add(1, Ordering::Relaxed);
                                let mut failures =
                                    shared.failures.lock().unwrap_or_else(|p| p.into_inner());
                                if failures.len() < 5 {
                                    let who = match build {
                                        Build::Old => "old",
                                        Build::New => "new",
                                    };
                                    let what = if insert { "insert" } else { "update" };
                                    failures
                                        .push(format!("{who} build's {what} of row {row}: {e}"));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Writers { stop, handles }
    }

    async fn stop(&self, writers: Writers) -> Result<(), RehearsalError> {
        writers.stop.store(true, Ordering::Relaxed);
        for handle in writers.handles {
            handle.await.map_err(|e| RehearsalError::Writer {
                round: self.name,
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

impl<O: Rehearsable, N: Rehearsable<Key = O::Key>> Shared<O, N> {
    fn waited(&self, took: Duration) {
        let stage = *self.stage.lock().unwrap_or_else(|p| p.into_inner());
        let mut waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        match waits.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, longest)) => *longest = (*longest).max(took),
            None => waits.push((stage, took)),
        }
    }
}

fn stripe(row: i64) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    row.hash(&mut hasher);
    (hasher.finish() % STRIPES as u64) as usize
}

/// The table's columns, indexes, constraints and triggers, one line each, sorted.
async fn catalog(
    pool: &PgPool,
    model: &pgevolve::ModelSpec,
) -> Result<Vec<String>, RehearsalError> {
    let table = format!(
        "\"{}\".\"{}\"",
        model.schema.replace('"', "\"\""),
        model.table.replace('"', "\"\"")
    );
    sqlx::query_scalar(
        "SELECT 'column ' || attname || ' ' || format_type(atttypid, atttypmod) || ' notnull=' || attnotnull
                || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
         UNION ALL
         SELECT 'index ' || pg_get_indexdef(indexrelid) || ' valid=' || indisvalid FROM pg_index WHERE indrelid = $1::regclass
         UNION ALL
         SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid) || ' validated=' || convalidated
           FROM pg_constraint WHERE conrelid = $1::regclass
         UNION ALL
         SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal
         ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| RehearsalError::Catalog(Arc::new(e)))
}

fn diff(before: &[String], after: &[String]) -> Vec<String> {
    let gone = before
        .iter()
        .filter(|l| !after.contains(l))
        .map(|l| format!("- {l}"));
    let new = after
        .iter()
        .filter(|l| !before.contains(l))
        .map(|l| format!("+ {l}"));
    gone.chain(new).collect()
}

/// A row that was lost (`found` is `None`) or reads back differently from what was written last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// `"full walk"` or `"abort round"`.
    pub round: &'static str,
    /// The primary key, through `Debug`.
    pub key: String,
    /// What the row must hold, through `Debug`.
    pub expected: String,
    /// What it holds, through `Debug`; `None` when the row is gone.
    pub found: Option<String>,
}

/// One step of the new build as the full walk left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepWalk {
    /// What the step does.
    pub description: String,
    /// Its last phase.
    pub phase: Phase,
    /// Its journal: `expand done`, `backfill done`, ...
    pub events: Vec<String>,
}

/// What the abort round did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AbortReport {
    /// Where the abort hit the backfill (`None`: the background work was over first).
    pub hit: Option<String>,
    /// The steps aborted, with the phase each had reached.
    pub aborted: Vec<String>,
    /// Lines of the table's catalog that differ from before the new build booted (`-` gone,
    /// `+` new); empty when the abort restored it.
    pub catalog_diff: Vec<String>,
    /// Rows compared after the abort.
    pub rows_checked: usize,
}

/// What a rehearsal found. `Display` prints all of it; [`RehearsalReport::assert_clean`] panics
/// with that text when something is wrong.
#[derive(Debug, Clone, Default)]
pub struct RehearsalReport {
    /// The new build's struct.
    pub model: &'static str,
    /// `schema.table`.
    pub table: String,
    /// Rows seeded through the old build in each round.
    pub rows_seeded: i64,
    /// Writes (inserts and updates that changed a row) by the old build's writers, all rounds.
    pub writes_old: u64,
    /// The same for the new build's writers.
    pub writes_new: u64,
    /// Writes that failed (an error from the accessor), all rounds.
    pub failed_writes: u64,
    /// The first few failures' `Display` texts.
    pub failures: Vec<String>,
    /// The longest accessor call per stage (round and stage), in order.
    pub longest_waits: Vec<(String, Duration)>,
    /// Rows compared at the end of the full walk.
    pub rows_checked: usize,
    /// Rows found at the end that no writer wrote.
    pub unexpected_rows: usize,
    /// Lost and mismatched rows.
    pub problems: Vec<RowProblem>,
    /// The new build's steps after the full walk.
    pub steps: Vec<StepWalk>,
    /// Where the restart hit and what the second boot found.
    pub restart: Option<String>,
    /// The rows the second boot found filled when it started (the largest of its steps'
    /// checkpoints); `None` when no restart happened.
    pub resumed_from: Option<i64>,
    /// The abort round, when it ran.
    pub abort: Option<AbortReport>,
}

impl RehearsalReport {
    /// No lost or mismatched row, no failed write, no unexpected row, and the abort (if run)
    /// restored the catalog.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
            && self.failed_writes == 0
            && self.unexpected_rows == 0
            && self
                .abort
                .as_ref()
                .is_none_or(|a| a.catalog_diff.is_empty())
    }

    /// The longest accessor call of the whole rehearsal.
    pub fn longest_wait(&self) -> Duration {
        self.longest_waits
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }

    /// Panics with the report's text unless [`RehearsalReport::is_clean`].
    #[track_caller]
    pub fn assert_clean(&self) {
        assert!(self.is_clean(), "the rehearsal found problems:\n{self}");
    }

    fn absorb<O: Rehearsable, N: Rehearsable<Key = O::Key>>(&mut self, round: &Round<O, N>) {
        let shared = &round.shared;
        self.writes_old += shared.writes_old.load(Ordering::Relaxed);
        self.writes_new += shared.writes_new.load(Ordering::Relaxed);
        self.failed_writes += shared.failed.load(Ordering::Relaxed);
        self.failures.extend(
            shared
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        self.longest_waits.extend(
            shared
                .waits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(s, d)| (format!("{}: {s}", round.name), *d)),
        );
    }
}

/// Rows listed in full before the report says "and N more".
const LISTED: usize = 10;

impl fmt::Display for RehearsalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_clean() { "clean" } else { "PROBLEMS" };
        writeln!(
            f,
            "rehearsal of {} on {}: {verdict}",
            self.model, self.table
        )?;
        writeln!(
            f,
            "  writes: {} by the old build, {} by the new build, {} failed; {} rows seeded per round",
            self.writes_old, self.writes_new, self.failed_writes, self.rows_seeded
        )?;
        for failure in &self.failures {
            writeln!(f, "    failed: {failure}")?;
        }
        if let Some(abort) = &self.abort {
            writeln!(
                f,
                "  abort round: {}; {} rows checked",
                abort
                    .hit
                    .as_deref()
                    .unwrap_or("the background work was over before the abort"),
                abort.rows_checked
            )?;
            for step in &abort.aborted {
                writeln!(f, "    aborted {step}")?;
            }
            if abort.catalog_diff.is_empty() {
                writeln!(f, "    catalog restored")?;
            } else {
                writeln!(f, "    catalog NOT restored:")?;
                for line in &abort.catalog_diff {
                    writeln!(f, "      {line}")?;
                }
            }
        }
        if let Some(restart) = &self.restart {
            writeln!(f, "  restart: {restart}")?;
        }
        writeln!(f, "  steps of the full walk:")?;
        for step in &self.steps {
            writeln!(
                f,
                "    {} ({}): {}",
                step.description,
                step.phase,
                step.events.join(", ")
            )?;
        }
        writeln!(f, "  longest writer wait per stage:")?;
        for (stage, wait) in &self.longest_waits {
            writeln!(f, "    {stage}: {:.1} ms", wait.as_secs_f64() * 1e3)?;
        }
        writeln!(
            f,
            "  rows compared at the end: {}; unexpected rows: {}",
            self.rows_checked, self.unexpected_rows
        )?;
        let lost = self.problems.iter().filter(|p| p.found.is_none()).count();
        writeln!(
            f,
            "  lost rows: {lost}; mismatched rows: {}",
            self.problems.len() - lost
        )?;
        let mut by_round: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &self.problems {
            *by_round.entry(p.round).or_default() += 1;
            if by_round[p.round] > LISTED {
                continue;
            }
            match &p.found {
                None => writeln!(
                    f,
                    "    {} key {}: lost; expected {}",
                    p.round, p.key, p.expected
                )?,
                Some(found) => writeln!(
                    f,
                    "    {} key {}:\n      expected {}\n      found    {found}",
                    p.round, p.key, p.expected
                )?,
            }
        }
        for (round, n) in by_round {
            if n > LISTED {
                writeln!(f, "    {round}: and {} more", n - LISTED)?;
            }
        }
        Ok(())
    }
}

/// Why a rehearsal could not be carried out. Lost or mismatched rows are not errors: they are
/// in the [`RehearsalReport`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RehearsalError {
    /// No throwaway database.
    #[error("no database for the rehearsal: {0}")]
    Database(#[from] crate::Error),
    /// A boot, a phase or an accessor call of the rehearsal itself failed.
    #[error("{round}: {what} failed: {source}")]
    Evolution {
        /// `"full walk"` or `"abort round"`.
        round: &'static str,
        /// What the rehearsal was doing.
        what: &'static str,
        /// The runtime's error.
        #[source]
        source: pgevolve::Error,
    },
    /// Reading the table's catalog failed.
    #[error("reading the table's catalog failed: {0}")]
    Catalog(#[source] Arc<sqlx::Error>),
    /// A writer task panicked.
    #[error("{round}: a writer task panicked: {message}")]
    Writer {
        /// `"full walk"` or `"abort round"`.
        round: &'static str,
        /// The panic.
        message: String,
    },
}

impl RehearsalError {
    fn at(round: &'static str, what: &'static str, source: pgevolve::Error) -> RehearsalError {
        RehearsalError::Evolution {
            round,
            what,
            source,
        }
    }
}
