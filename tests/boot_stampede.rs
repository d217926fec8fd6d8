//! A boot stampede: 8 processes of one build boot at the same instant on a database none of them
//! has evolved yet (every one of them tries the boot lock, one expands, one leads the
//! backfill), then 8 processes of a newer build (one more step) boot at the same instant while
//! the older build's backfill runs. The processes wait at a barrier (a file the test creates)
//! so that their boots really overlap. The old build writes throughout; every row is compared
//! at the end.

use pgevolve_test_support as support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, Evolver, Phase};
use sqlx::PgPool;
use support::campaign;
use support::child::{self, ChildProcess};
use support::orders::{self, ROWS};

/// Processes per build.
const PROCESSES: usize = 8;

/// How long a wave of boots may take before the test calls it stuck.
const DEADLINE: Duration = Duration::from_secs(90);

/// The campaigns' evolution with a backfill of 60 batches of 50 rows, each followed by 120 ms
/// (8 s on an idle machine, half a minute on a loaded one, where 16 processes share 2 cores),
/// so that the newer build's wave lands while it runs; `next` adds the newer build's table.
fn evolver(pool: &PgPool, next: bool) -> Evolver {
    let mut evolver = orders::evolver(pool);
    if next {
        evolver = evolver.model::<orders::OrderTag>();
    }
    evolver.backfill_options(BackfillOptions {
        initial_batch_size: 50,
        min_batch_size: 50,
        max_batch_size: 50,
        pause: Duration::from_millis(120),
        ..orders::backfill_options()
    })
}

/// A process of build `n` or `next`: waits for the barrier file, boots, reports how long the
/// boot took, waits for the background work (which another process may lead) and reports it.
/// Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_child_process() {
    let Some((scenario, url)) = child::child_spec() else {
        return;
    };
    let (build, barrier) = scenario.split_once(':').unwrap();
    if std::env::var_os("PGEVOLVE_CHILD_STDERR_DIR").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("pgevolve=debug,pgevolve_runtime=debug")
            .try_init();
    }
    let pool = PgPool::connect(&url).await.unwrap();
    child::report("READY");
    while !Path::new(barrier).exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let outcome: pgevolve::Result<()> = async {
        let evolution = evolver(&pool, build == "next").boot().await?;
        child::report(&format!("BOOTED {}", started.elapsed().as_millis()));
        evolution.wait().await?;
        child::report("FINISHED");
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        child::report(&format!("FAILED {e}"));
    }
    // Serving until killed: an instance that stays registered, as in production.
    std::future::pending::<()>().await;
}

/// Starts `PROCESSES` processes of `build`, waits until each is ready, then opens the barrier.
fn wave(build: &str, url: &str, dir: &Path) -> Vec<ChildProcess> {
    let barrier: PathBuf = dir.join(format!("go-{build}"));
    let scenario = format!("{build}:{}", barrier.display());
    let mut children: Vec<ChildProcess> = (0..PROCESSES)
        .map(|_| ChildProcess::start("stampede_child_process", &scenario, url, None))
        .collect();
    for child in &mut children {
        child.expect("READY");
    }
    std::fs::write(&barrier, b"go").unwrap();
    children
}

/// Waits until every child printed `word`; panics on a `FAILED` line or after [`DEADLINE`].
/// Returns each child's line.
fn all_say(children: &mut [ChildProcess], word: &str) -> Vec<String> {
    children
        .iter_mut()
        .enumerate()
        .map(|(i, child)| {
            let line = child.wait_for("", |l| l.starts_with(word) || l.starts_with("FAILED"));
            assert!(!line.starts_with("FAILED"), "process {i}: {line}");
            line
        })
        .collect()
}

async fn deadlocks(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn backfill_phase(pool: &PgPool) -> (String, i64) {
    sqlx::query_as(
        "SELECT phase, rows_done FROM pgevolve.steps WHERE kind = 'add_backfilled_column'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_processes_boot_at_once_then_eight_of_a_newer_build_during_the_backfill_without_deadlock_and_every_phase_runs_once()
 {
    if child::in_child() {
        return;
    }
    let started = Instant::now();
    let (db, pool) = support::database(20).await;
    orders::seed(&pool, ROWS).await;
    let dir = std::env::temp_dir().join(format!("pgevolve-stampede-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let deadlocks_before = deadlocks(&pool).await;
    let log = orders::Log::default();
    let old: Vec<_> = (0..2)
        .map(|lane| orders::old_writer(&pool, lane, ROWS, log.clone()))
        .collect();

    // Wave 1: the build, 8 processes at once.
    let mut first = wave("n", db.url(), &dir);
    let booted = all_say(&mut first, "BOOTED");
    println!("build n booted: {booted:?}");

    // Wave 2 once the backfill runs: the newer build, 8 processes at once.
    let deadline = Instant::now() + DEADLINE;
    while backfill_phase(&pool).await.1 == 0 {
        assert!(Instant::now() < deadline, "the backfill did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut second = wave("next", db.url(), &dir);
    let booted = all_say(&mut second, "BOOTED");
    let (phase, rows) = backfill_phase(&pool).await;
    println!("build next booted: {booted:?}, the backfill at {rows} rows");
    assert_eq!(
        phase, "expand",
        "the older build's backfill still ran when the newer build's 8 processes had booted"
    );

    // Everyone's background work ends.
    let plans = evolver(&pool, true).plans();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = campaign::in_progress(&pool, &plans, campaign::Goal::Validate, "").await;
        if left == "after the last phase" {
            break;
        }
        let activity: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT coalesce(application_name, ''), coalesce(wait_event_type || ' ' || wait_event, state, ''), coalesce(left(query, 100), '')              FROM pg_stat_activity WHERE datname = current_database() AND query NOT LIKE 'SELECT 1%' ORDER BY query",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for child in first.iter_mut().chain(second.iter_mut()) {
            for line in child.new_lines() {
                assert!(!line.starts_with("FAILED"), "{line}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "the background work is stuck at {left} (backfill {:?}, bounds {:?}, {:?}); sessions: {activity:#?}",
            backfill_phase(&pool).await,
            sqlx::query_as::<_, (Option<Vec<String>>, Option<Vec<String>>, i64)>(
                "SELECT checkpoint, upper_bound, (SELECT count(*) FROM orders) FROM pgevolve.steps WHERE kind = 'add_backfilled_column'"
            )
            .fetch_one(&pool)
            .await
            .unwrap(),
            sqlx::query_as::<_, (String, String, String)>(
                "SELECT event, instance, coalesce(detail, '') FROM pgevolve.journal ORDER BY id"
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    all_say(&mut first, "FINISHED");
    all_say(&mut second, "FINISHED");
    let mut writes = 0;
    for (lane, writer) in old.into_iter().enumerate() {
        writes += writer.assert_no_errors(&format!("old writer {lane}")).await;
    }
    for child in first.into_iter().chain(second) {
        child.kill();
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let steps: Vec<(String, String)> = sqlx::query_as("SELECT id, phase FROM pgevolve.steps")
        .fetch_all(&pool)
        .await
        .unwrap();
    for step in plans.iter().flat_map(|p| &p.steps) {
        let goal = campaign::up_to(step.kind.phases(), Phase::Validate);
        let recorded = steps.iter().find(|(id, _)| id == step.id.as_str());
        assert_eq!(
            recorded.map(|(_, p)| p.as_str()),
            Some(goal.as_str()),
            "{}",
            step.describe()
        );
    }
    campaign::assert_each_phase_done_once(&pool, &plans, Phase::Validate, orders::existed).await;
    campaign::assert_no_invalid_index(&pool).await;
    let compared = orders::assert_every_row(&pool, ROWS, &log).await;
    // The server's own count: no transaction of any process was chosen as a deadlock victim.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(deadlocks(&pool).await, deadlocks_before, "deadlocks");
    println!(
        "{} processes booted, 0 deadlocks; {compared} rows compared, 0 lost or different; \
         {writes} writes by the old build; {:.1} s",
        2 * PROCESSES,
        started.elapsed().as_secs_f64()
    );
}
