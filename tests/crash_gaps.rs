//! Crashes at the gaps between two writes that must go together: a real child process is
//! stopped exactly there (the runtime's `PGEVOLVE_PAUSE_AT` point, test builds only) and killed
//! with SIGKILL, with its transaction open; the next boot must carry on as if the crash came
//! just before or just after.

use pgevolve_test_support as support;

use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, DdlOptions, DeployWindow, Evolve, Evolver, StepId, StepKind};
use sqlx::PgPool;
use support::child::{self, ChildProcess};
use support::people::{
    Person, WriteLog, assert_log_matches, column_exists, new_writer, old_writer, seed,
};
use support::{catalog_snapshot, database};

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

/// A table whose check takes about 1 ms a row to prove while `slow_check.on_` is true (a
/// function that sleeps, declared immutable as a check needs): its VALIDATE runs for a while.
#[derive(Evolve)]
#[evolve(table = "readings")]
#[evolve(check(name = "readings_slow", expr = "slow_true(id)"))]
#[allow(dead_code)]
struct Reading {
    #[evolve(primary_key)]
    id: i64,
    value: i64,
}

const READINGS: i64 = 20_000;

/// The function reads `slow_check` in its caller's snapshot: a VALIDATE that started while it
/// was on stays slow to its end, one that starts after it was turned off is quick.
async fn seed_readings(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE slow_check (on_ boolean NOT NULL);
         INSERT INTO slow_check VALUES (true);
         CREATE FUNCTION slow_true(bigint) RETURNS boolean IMMUTABLE LANGUAGE sql
           AS 'SELECT pg_sleep(CASE WHEN (SELECT on_ FROM slow_check) THEN 0.001 ELSE 0 END) IS NOT NULL';
         CREATE TABLE readings (id bigint PRIMARY KEY, value bigint NOT NULL);
         INSERT INTO readings SELECT g, g * 10 FROM generate_series(1, {READINGS}) g;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// Short lock waits and few attempts: a VALIDATE left running would make this boot's own
/// VALIDATE give up within a few seconds.
fn impatient(pool: &PgPool) -> Evolver {
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .ddl_options(DdlOptions {
            lock_timeout: Duration::from_millis(500),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(500),
            deadline: Duration::from_secs(5),
            ..DdlOptions::default()
        })
        .model::<Reading>()
}

/// The rename of `people.name` to `full_name`, with a short heartbeat timeout so that a killed
/// instance is not waited for long.
fn people_evolver(pool: &PgPool) -> Evolver {
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(Duration::from_secs(3), Duration::from_secs(60))
        .model::<Person>()
}

fn rename_step() -> StepId {
    Person::plan()
        .steps
        .into_iter()
        .find(|s| matches!(s.kind, StepKind::RenameColumn(_)))
        .unwrap()
        .id
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
    let Some((scenario, url)) = child::child_spec() else {
        return;
    };
    let scenario = scenario.as_str();
    let pool = PgPool::connect(&url).await.unwrap();
    if scenario == "abort" {
        let evolution = people_evolver(&pool).boot().await.unwrap();
        evolution.wait().await.unwrap();
        // Paused for ever between recording the abort and its DDL; the parent kills this.
        let _ = evolution.abort(&rename_step()).await;
        return;
    }
    let evolver = match scenario {
        "validate" => impatient(&pool),
        _ => evolver(&pool),
    };
    let evolution = evolver.boot().await.unwrap();
    // Paused for ever at the point; the parent kills this process.
    let _ = evolution.wait().await;
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
    if child::in_child() {
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
    ChildProcess::paused_at("crash_child_process", "pass", db.url(), "backfill-bounds").kill();
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

/// A VALIDATE whose process was killed goes on in the server, holding its lock, until the server
/// notices the client is gone: pgevolve's long statements ask the server to look every second
/// (PostgreSQL 14 and later), so the next leader's VALIDATE gets the lock within its few attempts
/// instead of timing out. On 13 the test checks what happens there instead: the leader's error
/// names the orphan, and a boot after it ended validates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validate_left_running_by_a_killed_process_stops_and_the_next_boot_validates() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(10).await;
    seed_readings(&pool).await;
    let child = ChildProcess::start("crash_child_process", "validate", db.url(), None);
    let deadline = Instant::now() + Duration::from_secs(60);
    let validating = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                      AND state = 'active' AND query LIKE 'ALTER TABLE%VALIDATE CONSTRAINT%'";
    loop {
        let running: i64 = sqlx::query_scalar(validating)
            .fetch_one(&pool)
            .await
            .unwrap();
        if running > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child never started its VALIDATE"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill(); // SIGKILL, in the middle of a VALIDATE of about 20 s
    // The orphan stays slow (its snapshot saw the switch on); the next leader's VALIDATE is quick.
    sqlx::query("UPDATE slow_check SET on_ = false")
        .execute(&pool)
        .await
        .unwrap();

    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&pool)
        .await
        .unwrap();
    let evolution = impatient(&pool).boot().await.unwrap();
    if version < 140_000 {
        // PostgreSQL 13 has no `client_connection_check_interval`: the orphan runs to its end
        // (and rolls back). The impatient leader gives up, naming it; once it is gone, the next
        // boot validates.
        let waited = evolution.wait().await.unwrap_err().to_string();
        assert!(
            waited.contains("could not get a lock") && waited.contains("VALIDATE CONSTRAINT"),
            "{waited}"
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        while sqlx::query_scalar::<_, i64>(validating)
            .fetch_one(&pool)
            .await
            .unwrap()
            > 0
        {
            assert!(Instant::now() < deadline, "the orphan VALIDATE never ended");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        impatient(&pool).boot().await.unwrap().wait().await.unwrap();
    } else {
        evolution.wait().await.unwrap();
    }
    let validated: bool = sqlx::query_scalar(
        "SELECT convalidated FROM pg_constraint WHERE conname = 'readings_slow'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(validated);
    let left: i64 = sqlx::query_scalar(validating)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "no VALIDATE left running");
}

/// An abort recorded (every instance's accessors go back to the old name) whose process was
/// killed before its DDL: the next boot does not drop the new column at once, while another
/// instance may still write it; the leader's background work waits until every live instance
/// has acknowledged the abort, then drops it. Old and new writers run throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_killed_before_its_ddl_is_finished_after_every_instance_acknowledged_it() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(20).await;
    seed(&pool, "people").await;
    let before = catalog_snapshot(&pool, "people").await;
    let first = people_evolver(&pool).boot().await.unwrap();
    first.wait().await.unwrap();
    let log: WriteLog = std::sync::Arc::default();
    let old = old_writer(&pool, 0, log.clone());
    let new = new_writer(&pool, 2, log.clone());

    // SIGKILL: the abort is recorded, its DDL has not run.
    ChildProcess::paused_at("crash_child_process", "abort", db.url(), "abort-recorded").kill();
    assert!(column_exists(&pool, "full_name").await);

    let second = people_evolver(&pool).boot().await.unwrap();
    second.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut failures = Vec::new();
    for w in [old, new] {
        failures.extend(w.finish().await.1);
    }
    assert!(failures.is_empty(), "failed writes: {:?}", failures.first());

    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event FROM pgevolve.journal WHERE step_id = $1 AND id > \
           (SELECT max(id) FROM pgevolve.journal WHERE step_id = $1 AND event = 'abort started') \
         ORDER BY id",
    )
    .bind(rename_step().as_str())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        ["aborted acknowledged", "abort done"],
        "the DDL ran only once every live instance had acknowledged the abort"
    );
    assert_eq!(catalog_snapshot(&pool, "people").await, before);
    assert_log_matches(&pool, &log, "name").await;
    drop(first);
}

/// A pool whose sessions carry `name` as their application name, so the test can tell the two
/// instances' statements apart in `pg_stat_activity`.
async fn named_pool(url: &str, name: &str) -> PgPool {
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .connect_with(options.application_name(name))
        .await
        .unwrap()
}

/// The leader's lock lives on an idle session: if that session ends without the leader noticing
/// (terminated here with `pg_terminate_backend`, as a proxy or a network failure would), another
/// instance takes the lock. The leader runs its batches on that very session, so a batch under
/// way ends with it: the two never run batches at the same time, the first journals that it
/// lost the lock, and the pass still fills every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_lock_session_was_terminated_stops_and_never_fills_beside_the_next_leader() {
    if child::in_child() {
        return;
    }
    // Enough rows that the first leader is still filling when its session ends (its session
    // is terminated right after the second boot), not more: the pass is paced, about 2,000
    // rows a second on a busy 2-core machine.
    const EVENTS: i64 = 20_000;
    let (db, pool) = database(10).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE events (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO events SELECT g, 'Event ' || g FROM generate_series(1, {EVENTS}) g;"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let (first_pool, second_pool) = (
        named_pool(db.url(), "first").await,
        named_pool(db.url(), "second").await,
    );
    let first = evolver(&first_pool).boot().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.progress().iter().all(|p| p.rows_done == 0) {
        assert!(
            Instant::now() < deadline,
            "the first instance never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = evolver(&second_pool).boot().await.unwrap();

    // Watch the batches: never two instances at once.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (pool, watching) = (pool.clone(), watching.clone());
        tokio::spawn(async move {
            let mut overlaps = 0u32;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let running: i64 = sqlx::query_scalar(
                    "SELECT count(DISTINCT application_name) FROM pg_stat_activity \
                     WHERE datname = current_database() AND state = 'active' \
                     AND query LIKE '%WITH batch AS%' AND pid <> pg_backend_pid()",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                overlaps += u32::from(running > 1);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            overlaps
        })
    };
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'first'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(terminated, 1, "the first instance held the leader lock");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lost: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgevolve.journal WHERE event = 'leader lock lost' AND instance = $1",
        )
        .bind(first.instance_id())
        .fetch_one(&pool)
        .await
        .unwrap();
        if lost == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first instance did not notice it lost the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.wait().await.unwrap();
    first.wait().await.unwrap();
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(watcher.await.unwrap(), 0, "two leaders ran batches at once");
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE name_lower IS DISTINCT FROM lower(name) \
         OR name_upper IS DISTINCT FROM upper(name)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
}
