//! Crashes at the gaps between two writes that must go together: a real child process is
//! stopped exactly there (the runtime's `PGEVOLVE_PAUSE_AT` point, test builds only) and killed
//! with SIGKILL, with its transaction open; the next boot must carry on as if the crash came
//! just before or just after.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, DeployWindow, Evolve, Evolver};
use sqlx::PgPool;
use support::database;

/// Set in the child process: the database url.
const ENV: &str = "PGEVOLVE_CRASH_CHILD";
const ROWS: i64 = 30_000;

/// Two fills of one table, independent of each other: one backfill pass writes both.
#[derive(Evolve)]
#[evolve(table = "events")]
#[allow(dead_code)]
struct Event {
    #[evolve(primary_key)]
    id: i64,
    name: String,
    #[evolve(backfill = "lower(name)")]
    name_lower: String,
    #[evolve(backfill = "upper(name)")]
    name_upper: String,
}

fn evolver(pool: &PgPool) -> Evolver {
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .backfill_options(BackfillOptions {
            initial_batch_size: 500,
            max_batch_size: 1_000,
            ..BackfillOptions::default()
        })
        .model::<Event>()
}

/// The child: boots and lets its background work run into the pause point. Not a test in a
/// normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_process() {
    let Ok(url) = std::env::var(ENV) else { return };
    let pool = PgPool::connect(&url).await.unwrap();
    let evolution = evolver(&pool).boot().await.unwrap();
    // Paused for ever at the point; the parent kills this process.
    let _ = evolution.wait().await;
}

/// Starts the child with the pause point, and returns it once it has paused there.
fn child_paused_at(url: &str, point: &str) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, url)
        .env("PGEVOLVE_PAUSE_AT", point)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the child never paused at {point}"));
        if line.contains(&format!("PAUSED {point}")) {
            return child;
        }
    }
}

async fn bounds(pool: &PgPool) -> Vec<Option<Vec<String>>> {
    sqlx::query_scalar(
        "SELECT upper_bound FROM pgevolve.steps WHERE kind = 'add_backfilled_column' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_upper_bounds_of_a_pass_leaves_none_and_the_next_boot_fills_every_row() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let (db, pool) = database(10).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE events (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO events SELECT g, 'Event ' || g FROM generate_series(1, {ROWS}) g;"
    )))
    .execute(&pool)
    .await
    .unwrap();

    // The first step's bound is written, the second's not yet: the child is killed there.
    let mut child = child_paused_at(db.url(), "backfill-bounds");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        bounds(&pool).await,
        [None, None],
        "the bounds of a pass are committed together or not at all"
    );

    // The next boot starts the pass with one bound for both steps and fills every row.
    let evolution = evolver(&pool).boot().await.unwrap();
    evolution.wait().await.unwrap();
    let recorded = bounds(&pool).await;
    assert!(
        recorded[0].is_some() && recorded[0] == recorded[1],
        "{recorded:?}"
    );
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE name_lower IS DISTINCT FROM lower(name) \
         OR name_upper IS DISTINCT FROM upper(name)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, ROWS);
}
