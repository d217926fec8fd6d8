//! Dropped connections: every connection of the runtime goes through a TCP proxy
//! ([`pgevolve_testkit::TcpProxy`], given to [`Evolver::direct`]: its pool, the leader lock's
//! session, the coordinator's connections, the concurrent index builds), and the proxy cuts
//! all of them at random moments of every phase of a model with every step kind, while the
//! old build and the new build write directly to the server, as an application whose own
//! connections are not the ones that dropped. The random source is seeded (printed;
//! `PGEVOLVE_SEED=<n>` replays the same strikes).
//!
//! The background work carries on by itself after every cut (a lost leader lock session, a
//! lost connection under a phase: it follows, waits, takes the lock again and resumes from the
//! checkpoint), and the test fails if it ever ends with an error. A cut under a call the service
//! makes (`boot`, `switch`, `contract`) returns the error, and the service does what a real one
//! does: calls again (booting again first). The evolution must
//! finish with no row lost or changed, no phase run twice, no INVALID index, and the catalog a
//! database evolved without cuts has.

use pgevolve_test_support as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use pgevolve::{ErrorKind, Evolution, Evolver, Plan};
use pgevolve_testkit::TcpProxy;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use support::campaign::{self, Goal, Rng, Strike, Tally};
use support::orders::{self, REMOVED_INDEX, ROWS};

/// The fewest cuts that must have landed before the evolution ended (runs land 18 to 44).
const CUTS_WANTED: u64 = 12;

/// The service: boots the evolution (again after an error) and walks it to `goal`. Every error
/// it met is kept.
struct Service {
    app: PgPool,
    through: PgConnectOptions,
    evolution: Option<Evolution>,
    errors: Vec<String>,
    /// Errors the background work ended with (`Evolution::wait`).
    background_errors: Vec<String>,
}

impl Service {
    fn evolver(&self) -> Evolver {
        orders::evolver(&self.app).direct(self.through.clone())
    }

    fn failed(&mut self, e: pgevolve::Error) {
        let kind = match e.kind() {
            ErrorKind::Background(inner) => inner.kind(),
            kind => kind,
        };
        assert!(
            !matches!(
                kind,
                ErrorKind::Drift(_) | ErrorKind::Verification { .. } | ErrorKind::NotReady { .. }
            ),
            "a lost connection reported as something else: {e}"
        );
        self.errors.push(e.to_string());
        self.evolution = None;
    }

    /// The evolution, booted until a boot succeeds.
    async fn evolution(&mut self) -> Evolution {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(e) = &self.evolution {
                return e.clone();
            }
            assert!(Instant::now() < deadline, "no boot succeeded within 120 s");
            match self.evolver().boot().await {
                Ok(e) => self.evolution = Some(e),
                Err(e) => self.failed(e),
            }
        }
    }

    /// Walks to `goal`, booting again after every error.
    async fn walk(&mut self, goal: Goal) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                Instant::now() < deadline,
                "{goal:?} not reached within 120 s"
            );
            let evolution = self.evolution().await;
            if let Err(e) = evolution.wait().await {
                // The background work retries lost connections by itself: it must not end on one.
                self.background_errors.push(e.to_string());
                self.failed(e);
                continue;
            }
            let outcome = async {
                evolution.switch().await?;
                if goal == Goal::End {
                    evolution.contract().await?;
                }
                pgevolve::Result::Ok(())
            }
            .await;
            match outcome {
                Ok(()) => return,
                Err(e) => self.failed(e),
            }
        }
    }
}

/// Cuts every connection of the proxy at random moments until stopped; the phase each cut hit,
/// with how many connections it closed.
struct Cutter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Tally, u64)>,
}

impl Cutter {
    fn start(
        pool: &PgPool,
        proxy: Arc<TcpProxy>,
        plans: Vec<Plan>,
        goal: Arc<AtomicU8>,
        mut rng: Rng,
    ) -> Cutter {
        let stop = Arc::new(AtomicBool::new(false));
        let (pool, flag) = (pool.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut tally, mut closed) = (Tally::default(), 0);
            loop {
                let strike = Strike::draw(&mut rng, 500);
                if !strike.wait(&pool, || flag.load(Ordering::Relaxed)).await {
                    return (tally, closed);
                }
                let goal = match goal.load(Ordering::Relaxed) {
                    0 => Goal::Switch,
                    _ => Goal::End,
                };
                let hit = campaign::in_progress(&pool, &plans, goal, REMOVED_INDEX).await;
                let n = proxy.cut_all();
                println!("cut {}: {n} connections, {hit}", tally.total() + 1);
                closed += n as u64;
                tally.add(hit);
            }
        });
        Cutter { stop, task }
    }

    async fn finish(self) -> (Tally, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_cut_at_random_moments_of_every_phase_lose_no_row_run_no_phase_twice_and_the_evolution_finishes()
 {
    let started = Instant::now();
    let (db, pool) = support::database(20).await;
    orders::seed(&pool, ROWS).await;
    let proxy = Arc::new(TcpProxy::for_url(db.url()).await.unwrap());
    let plans = orders::evolver(&pool).plans();
    let log = orders::Log::default();
    let old: Vec<_> = (0..2)
        .map(|lane| orders::old_writer(&pool, lane, ROWS, log.clone()))
        .collect();
    let mut service = Service {
        app: pool.clone(),
        through: proxy.options_for(db.url()).unwrap(),
        evolution: None,
        errors: Vec::new(),
        background_errors: Vec::new(),
    };
    let goal = Arc::new(AtomicU8::new(0));
    let cutter = Cutter::start(
        &pool,
        proxy.clone(),
        plans.clone(),
        goal.clone(),
        Rng::from_env("connection_cuts"),
    );

    // Up to switch while the old build writes; the new build serves once booted.
    service.evolution().await;
    let new: Vec<_> = (2..4)
        .map(|lane| orders::new_writer(&pool, lane, ROWS, log.clone()))
        .collect();
    service.walk(Goal::Switch).await;
    let mut writes = 0;
    for (lane, writer) in old.into_iter().enumerate() {
        writes += writer.assert_no_errors(&format!("old writer {lane}")).await;
    }
    // The old build is gone: retire and contract, still under cuts.
    goal.store(1, Ordering::Relaxed);
    service.walk(Goal::End).await;
    let (tally, closed) = cutter.finish().await;
    assert!(
        service.background_errors.is_empty(),
        "the background work ended on errors instead of trying again: {:?}",
        service.background_errors
    );

    // Nothing is left to do: a last pass without cuts changes nothing and fails nowhere.
    let errors = std::mem::take(&mut service.errors);
    service.evolution = None;
    service.walk(Goal::End).await;
    assert!(service.errors.is_empty(), "{:?}", service.errors);
    for (lane, writer) in new.into_iter().enumerate() {
        writes += writer
            .assert_no_errors(&format!("new writer {}", lane + 2))
            .await;
    }
    drop(service);

    tally.print("cuts");
    let cuts = tally.total();
    println!(
        "{} errors seen by the service (each followed by a boot), {} distinct:",
        errors.len(),
        {
            let mut distinct: Vec<String> = errors.iter().map(|e| shape(e)).collect();
            distinct.sort();
            distinct.dedup();
            for e in &distinct {
                println!("  {e}");
            }
            distinct.len()
        }
    );
    assert!(
        cuts >= CUTS_WANTED,
        "only {cuts} cuts landed before the evolution ended"
    );
    assert!(closed > 0, "no cut closed a connection");
    let compared = orders::assert_evolved_as_planned(&pool, &plans, &log).await;
    println!(
        "{cuts} cuts ({closed} connections closed) in {} phases survived; {compared} rows compared, \
         0 lost or different; {writes} writes by the old and new builds; {:.1} s",
        tally.phases(),
        started.elapsed().as_secs_f64()
    );
}

/// An error's message with the details that vary (numbers, quoted names) left out, to group
/// them.
fn shape(e: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in e.chars() {
        match c {
            '"' | '`' => {
                quoted = !quoted;
                out.push(c);
            }
            _ if quoted => {}
            '0'..='9' => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            _ => out.push(c),
        }
    }
    out.chars().take(160).collect()
}
