//! A rename and a backfilled column of the same table are filled in one pass (each row written
//! once), while old binaries keep writing both source columns; the pass survives a crash and
//! resumes from the checkpoint it shares between its steps. Every row is compared at the end.

use pgevolve_test_support as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, DeployWindow, Evolve, Evolver, Phase};
use sqlx::PgPool;
use support::child::{self, ChildProcess};
use support::database;
use support::people::{ROWS, WriteLog, assert_log_matches, old_writer, seed};

#[derive(Evolve, Debug)]
#[evolve(table = "people")]
#[allow(dead_code)]
struct Person {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(renamed_from = "name")]
    full_name: String,
    email: String,
    #[evolve(backfill = "lower(email)")]
    email_normalized: String,
}

const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// Rows where a filled column is not what its source says.
async fn wrong_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM people WHERE full_name IS DISTINCT FROM name \
         OR email_normalized IS DISTINCT FROM lower(email)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The two steps' (checkpoint, rows_done), rename first.
async fn pass_state(pool: &PgPool) -> Vec<(Option<Vec<String>>, i64)> {
    sqlx::query_as(
        "SELECT checkpoint, rows_done FROM pgevolve.steps \
         WHERE kind IN ('rename_column', 'add_backfilled_column') ORDER BY kind DESC",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// An old binary changing emails (mixed case), so the fill trigger must recompute
/// `email_normalized` for rows the pass has already filled. Returns the longest wait.
fn email_writer(
    pool: &PgPool,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Duration> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let (mut n, mut longest) = (0i64, Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let id = 1 + (n * 7919) % ROWS;
            let started = Instant::now();
            let result = sqlx::query("UPDATE people SET email = $1 WHERE id = $2")
                .bind(format!("Changed{n}@Example.ORG"))
                .bind(id)
                .execute(&pool)
                .await;
            longest = longest.max(started.elapsed());
            if result.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        longest
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_pass_fills_a_rename_and_a_backfill_under_old_writers() {
    let (_db, pool) = database(20).await;
    seed(&pool, "people").await;
    let log: WriteLog = Arc::default();
    let names: Vec<_> = (0..2)
        .map(|lane| old_writer(&pool, lane, log.clone()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let emails = email_writer(&pool, stop.clone(), failed.clone());

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .lock_timeout(LOCK_TIMEOUT)
        .backfill_options(BackfillOptions {
            initial_batch_size: 500,
            max_batch_size: 2_000,
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let longest = emails.await.unwrap();
    let mut errors = Vec::new();
    for writer in names {
        errors.extend(writer.finish().await.1);
    }
    assert!(
        errors.is_empty(),
        "old writers failed: {:?}",
        errors.first()
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "email writes failed");
    assert!(
        longest < LOCK_TIMEOUT + Duration::from_secs(1),
        "a writer waited {longest:?}"
    );

    for step in evolution.progress() {
        if step.description.contains("full_name") || step.description.contains("email_normalized") {
            assert_eq!(step.phase, Phase::Validate, "{}", step.description);
        }
    }
    // One pass: both steps carry the same checkpoint, and no row was counted twice.
    let state = pass_state(&pool).await;
    assert_eq!(state.len(), 2);
    assert_eq!(
        state[0], state[1],
        "both steps recorded by the same batches"
    );
    assert!(
        state[0].1 > 0 && state[0].1 <= ROWS,
        "rows_done = {}",
        state[0].1
    );
    assert_eq!(wrong_rows(&pool).await, 0);
    assert_log_matches(&pool, &log, "name").await;
    assert_log_matches(&pool, &log, "full_name").await;
}

/// The child of the kill test: boots, fills in small batches and reports its progress until
/// killed. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_child_process() {
    let Some((_, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 200,
            max_batch_size: 200,
            pause: Duration::from_millis(10),
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    child::report_progress_forever(&evolution).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_killed_midway_resumes_from_its_shared_checkpoint() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(10).await;
    seed(&pool, "people").await;

    // First process: a real child that fills for a while, then is SIGKILLed mid-pass.
    let mut first = ChildProcess::start("pass_child_process", "pass", db.url(), None);
    let reported = first.progress_at_least(2_000);
    first.kill();
    child::until_no_advisory_lock(&pool).await;

    let state = pass_state(&pool).await;
    assert_eq!(state[0], state[1], "one checkpoint for the whole pass");
    let at_crash = state[0].1;
    assert!(
        reported <= at_crash && at_crash < ROWS,
        "killed midway: {reported} reported, {at_crash} committed"
    );
    let checkpoint = state[0].0.clone().expect("a checkpoint was committed");
    assert!(checkpoint[0].parse::<i64>().unwrap() >= 2_000 - 200);
    assert!(wrong_rows(&pool).await > 0, "the crash left rows to fill");

    // Second process: the leader lock died with the first one's session, so this one resumes.
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let state = pass_state(&pool).await;
    assert_eq!(state[0], state[1]);
    assert!(at_crash <= state[0].1);
    assert_eq!(
        state[0].1, ROWS,
        "every row filled exactly once across both runs"
    );
    assert_eq!(wrong_rows(&pool).await, 0);
}

/// Every batch must be an index range scan whatever the planner thinks of the cursor: the
/// `UPDATE` scans the table itself between two index bounds, never a join with the batch's
/// keys (with the cursor as a literal, such a join was planned as a sequential scan per batch
/// on a 5,000,000-row table).
#[tokio::test]
async fn the_batch_update_is_an_index_range_scan() {
    let (_db, pool) = database(5).await;
    seed(&pool, "people").await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let plan = Person::plan();
    let step = plan
        .steps
        .iter()
        .find(|s| s.describe().contains("email_normalized"))
        .unwrap();
    let batch = &step.statements(Phase::Backfill)[0].sql;
    let statement: String = batch
        .lines()
        // The batch's settings and its WAL position reads (`wal_start`, `wal_end`) around it.
        .filter(|l| !l.starts_with("SET LOCAL") && !l.contains(" AS wal_"))
        .collect::<Vec<_>>()
        .join("\n");
    let statement = statement.trim_end_matches(';');
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE batch AS {statement}")))
        .execute(&mut *conn)
        .await
        .unwrap();
    // The first executions of a prepared statement are planned with their values, as the
    // runtime's literal batches are.
    let (explain,): (serde_json::Value,) =
        sqlx::query_as("EXPLAIN (FORMAT JSON) EXECUTE batch(10, 20000, 500)")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let text = explain.to_string();
    fn update_child(node: &serde_json::Value) -> Option<&serde_json::Value> {
        if node["Node Type"] == "ModifyTable" && node["Relation Name"] == "people" {
            return node["Plans"]
                .as_array()?
                .iter()
                // The scan under the UPDATE: its outer plan from PostgreSQL 14, a "Member" of
                // the ModifyTable's list of subplans before.
                .find(|p| matches!(p["Parent Relationship"].as_str(), Some("Outer" | "Member")));
        }
        node["Plans"].as_array()?.iter().find_map(update_child)
    }
    let scan = update_child(&explain[0]["Plan"]).expect("the UPDATE of people");
    assert!(
        matches!(
            scan["Node Type"].as_str(),
            Some("Index Scan" | "Bitmap Heap Scan")
        ),
        "the UPDATE reads {}: {text}",
        scan["Node Type"]
    );
}

#[derive(Evolve, Debug)]
#[evolve(table = "accounts")]
#[allow(dead_code)]
struct Account {
    #[evolve(primary_key)]
    id: i64,
    name: String,
    email: String,
    #[evolve(backfill = "slow_lower(email)")]
    email_normalized: String,
}

/// A batch that runs past the batch timeout is cancelled (its row locks go with it) and retried
/// smaller, so a writer never waits for a batch longer than the timeout: here the first batch
/// would hold 400 rows for 2 s (5 ms of expression per row) without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_past_the_batch_timeout_is_cancelled_and_retried_smaller() {
    let (_db, pool) = database(10).await;
    sqlx::raw_sql(
        "CREATE FUNCTION slow_lower(text) RETURNS text LANGUAGE sql AS \
           'SELECT lower($1) FROM pg_sleep(0.005)';
         CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
         INSERT INTO accounts SELECT g, 'n' || g, 'A' || g || '@Example.COM' FROM generate_series(1, 600) g;
         ANALYZE accounts;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let batch_timeout = Duration::from_millis(80);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2i64)
        .map(|w| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut n, mut longest, mut failed) = (0i64, Duration::ZERO, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let started = Instant::now();
                    let result = sqlx::query("UPDATE accounts SET name = $1 WHERE id = $2")
                        .bind(format!("w{w}-{n}"))
                        .bind(1 + (n * 37 + w * 101) % 400)
                        .execute(&pool)
                        .await;
                    longest = longest.max(started.elapsed());
                    failed += u32::from(result.is_err());
                }
                (longest, failed)
            })
        })
        .collect();

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Account>()
        .lock_timeout(LOCK_TIMEOUT)
        .backfill_options(BackfillOptions {
            initial_batch_size: 400,
            min_batch_size: 2,
            batch_timeout,
            ..BackfillOptions::unthrottled()
        })
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let (longest, failed) = writer.await.unwrap();
        assert_eq!(failed, 0, "writes failed");
        assert!(
            longest < batch_timeout + Duration::from_secs(1),
            "a writer waited {longest:?}"
        );
    }
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM accounts WHERE email_normalized IS DISTINCT FROM lower(email)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
}

/// With a WAL budget far below what the batches write, the pass says the budget set its pace
/// (journal `backfill paced on wal`, once) and its next batch is smaller than the one that wrote
/// too much; every row is filled all the same. What is asserted is the pass's decision, never
/// a rate or a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_wal_budget_paces_the_pass_and_shrinks_its_batches() {
    let (_db, pool) = database(6).await;
    seed(&pool, "people").await;
    // A first batch of 5,000 rows (given the time to finish) writes far more than the budget's
    // share of one cycle (2 MiB/s × 30 ms × 3, about 190 KiB).
    let initial = 5_000;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .backfill_options(
            BackfillOptions {
                initial_batch_size: initial,
                batch_timeout: Duration::from_secs(5),
                ..BackfillOptions::default()
            }
            .wal_budget(2 << 20),
        )
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert_eq!(wrong_rows(&pool).await, 0);
    let paced: Vec<String> = sqlx::query_scalar(
        "SELECT j.detail FROM pgevolve.journal j JOIN pgevolve.steps s ON s.id = j.step_id \
         WHERE j.event = 'backfill paced on wal' AND s.kind = 'add_backfilled_column'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(paced.len(), 1, "journaled once per pass: {paced:?}");
    let detail = &paced[0];
    assert!(
        detail.contains(&format!("a batch of {initial} rows"))
            && detail.contains("against a budget of 2097152 bytes/s"),
        "{detail}"
    );
    let next: u32 = detail
        .rsplit_once("next batch ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no next batch size in {detail}"));
    assert!(next < initial, "the batch did not shrink: {detail}");
}

/// Without a WAL budget (`unthrottled()`) the pass never paces on WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unthrottled_pass_keeps_no_wal_budget() {
    let (_db, pool) = database(6).await;
    seed(&pool, "people").await;
    assert_eq!(BackfillOptions::unthrottled().wal_budget, None);
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .backfill_options(BackfillOptions {
            initial_batch_size: 5_000,
            ..BackfillOptions::unthrottled()
        })
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert_eq!(wrong_rows(&pool).await, 0);
    let paced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pgevolve.journal WHERE event = 'backfill paced on wal'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(paced, 0);
}
