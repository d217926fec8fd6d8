//! The backfill watches the database's health (`HealthBounds`): it pauses while a real streaming
//! replica's replay lag is past its bound (replay paused with `pg_wal_replay_pause()`) and while
//! an open snapshot holds the xmin horizon back, records why where `pgevolve status` reads it,
//! and finishes by itself once the replica replays again or the snapshot is gone. Every row is
//! compared at the end, on the replica too.

use pgevolve_test_support as support;

use std::future::Future;
use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, DeployWindow, Evolution, Evolve, Evolver, HealthBounds, Phase};
use pgevolve_testkit::Cluster;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use support::{database, seed_users};

#[derive(Evolve)]
#[evolve(table = "users")]
#[allow(dead_code)]
struct User {
    #[evolve(primary_key, generated)]
    id: i64,
    name: String,
    email: String,
    #[evolve(backfill = "lower(email)")]
    email_normalized: String,
}

/// Enough that the backfill is still running when a pause registers, on any machine: batches of
/// 500 rows at least 20 ms apart ([`small_batches`]) fill at most 25,000 rows a second, and the
/// pause registers about 1.3 s after the test opens its snapshot (the 1 s bound, then the
/// 200 ms check), so before 35,000 rows.
const ROWS: i64 = 80_000;

/// Held by the tests whose snapshots live on the process-wide cluster: one test's open snapshot
/// would pause (and be named by) the other's backfill.
static SHARED_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Polls `check` every 50 ms until it returns `Some`, failing with `what` at the deadline.
async fn until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "never happened within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `url` with its database replaced.
fn in_database(url: &str, database: &str) -> String {
    let (server, _) = url.rsplit_once('/').unwrap();
    format!("{server}/{database}")
}

/// The backfill's recorded rows.
async fn rows_done(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT rows_done FROM pgevolve.steps WHERE kind = 'add_backfilled_column'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The recorded health pause of the backfill step: (reason, detail).
async fn health_pause(pool: &PgPool) -> Option<(String, String)> {
    sqlx::query_as(
        "SELECT p.reason, p.detail FROM pgevolve.health_pauses p \
         JOIN pgevolve.steps s ON s.id = p.step_id WHERE s.kind = 'add_backfilled_column'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Journal events of the backfill step whose name is `event`.
async fn journaled(pool: &PgPool, event: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT j.detail FROM pgevolve.journal j JOIN pgevolve.steps s ON s.id = j.step_id \
         WHERE s.kind = 'add_backfilled_column' AND j.event = $1 ORDER BY j.id",
    )
    .bind(event)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A digest of every row's old columns, in key order.
async fn old_columns(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT md5(string_agg(id || '|' || name || '|' || email, ',' ORDER BY id)) FROM users",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A digest of every row, the filled column included, in key order.
async fn every_row(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT md5(string_agg(id || '|' || name || '|' || email || '|' || email_normalized, ',' ORDER BY id)) \
         FROM users",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Asserts that every row kept its old columns and holds `lower(email)` in the new one.
async fn assert_every_row_filled(pool: &PgPool, before: &str) {
    assert_eq!(old_columns(pool).await, before, "the old columns changed");
    let (rows, wrong): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE email_normalized IS DISTINCT FROM lower(email)) FROM users",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(rows, ROWS);
    assert_eq!(wrong, 0, "rows whose filled column is not lower(email)");
}

/// The rows recorded while a pause holds do not move for `for_at_least` (a delay in which an
/// unpaused backfill fills thousands of rows), and the pause is still recorded.
async fn assert_rows_stand_still(pool: &PgPool, for_at_least: Duration) -> i64 {
    let before = rows_done(pool).await;
    tokio::time::sleep(for_at_least).await;
    let after = rows_done(pool).await;
    assert_eq!(after, before, "rows filled while paused");
    assert!(
        health_pause(pool).await.is_some(),
        "the pause is still recorded"
    );
    assert!(after < ROWS, "the backfill had not finished: {after} rows");
    after
}

async fn wait_validated(evolution: &Evolution) {
    tokio::time::timeout(Duration::from_secs(120), evolution.wait())
        .await
        .expect("the backfill finished within 2 minutes")
        .unwrap();
    for step in evolution
        .progress()
        .into_iter()
        .filter(|s| s.description.contains("email_normalized"))
    {
        assert!(
            step.phase >= Phase::Validate,
            "{} at {:?}",
            step.description,
            step.phase
        );
    }
}

/// Slow enough that the pass is still running when the test intervenes: 500 rows a batch and at
/// least 20 ms after each, whatever the machine (see [`ROWS`]).
fn small_batches(health: HealthBounds) -> BackfillOptions {
    BackfillOptions {
        initial_batch_size: 500,
        max_batch_size: 500,
        pause: Duration::from_millis(20),
        ..BackfillOptions::default()
    }
    .health(health.interval(Duration::from_millis(200)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_pauses_while_a_replicas_replay_lag_is_past_its_bound_and_finishes_once_replay_resumes()
 {
    let (primary, replica) = tokio::task::spawn_blocking(|| {
        let primary = Cluster::start().expect("primary");
        let replica = primary.start_replica().expect("streaming replica");
        (primary, replica)
    })
    .await
    .unwrap();
    let admin = PgPool::connect(&primary.url()).await.unwrap();
    sqlx::query("CREATE DATABASE health")
        .execute(&admin)
        .await
        .unwrap();
    let url = in_database(&primary.url(), "health");
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(&url)
        .await
        .unwrap();
    seed_users(&pool, ROWS).await;
    let before = old_columns(&pool).await;
    let standby_url = in_database(&replica.url(), "health");
    let standby = until(
        "the replica replays the seeded table",
        Duration::from_secs(60),
        || async {
            let pool = PgPool::connect(&standby_url).await.ok()?;
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n == ROWS).then_some(pool)
        },
    )
    .await;
    until("the primary sees the replica streaming", Duration::from_secs(30), || async {
        let lag: Option<i64> = sqlx::query_scalar(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8 FROM pg_stat_replication \
             WHERE state = 'streaming'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
        .flatten();
        lag.filter(|l| *l < 1 << 20)
    })
    .await;

    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&standby)
        .await
        .unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<User>()
        .backfill_options(small_batches(
            HealthBounds::off().replay_lag_bytes(1u64 << 20),
        ))
        .boot()
        .await
        .unwrap();

    let (reason, detail) = until(
        "the backfill pauses on the replica's lag",
        Duration::from_secs(60),
        || health_pause(&pool),
    )
    .await;
    assert_eq!(reason, "replica_lag");
    assert!(
        detail.contains("of WAL left to replay (bound 1.0 MiB)"),
        "{detail}"
    );
    let paused_at = assert_rows_stand_still(&pool, Duration::from_secs(2)).await;
    let paused = journaled(&pool, "health paused").await;
    assert_eq!(paused.len(), 1, "{paused:?}");
    assert!(paused[0].starts_with("replica_lag: replica "), "{paused:?}");

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&standby)
        .await
        .unwrap();
    wait_validated(&evolution).await;
    assert!(
        rows_done(&pool).await > paused_at,
        "rows filled after the pause"
    );
    assert_eq!(health_pause(&pool).await, None, "the pause is cleared");
    let resumed = journaled(&pool, "health resumed").await;
    assert!(
        resumed
            .first()
            .is_some_and(|r| r.starts_with("replica_lag back within its bound after")),
        "{resumed:?}"
    );

    assert_every_row_filled(&pool, &before).await;
    let on_primary = every_row(&pool).await;
    until(
        "the replica holds every row as the primary does",
        Duration::from_secs(60),
        || async {
            let on_replica = every_row(&standby).await;
            (on_replica == on_primary).then_some(())
        },
    )
    .await;

    drop(evolution);
    standby.close().await;
    pool.close().await;
    admin.close().await;
    replica.shutdown().unwrap();
    primary.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_pauses_while_an_open_snapshot_holds_the_xmin_horizon_and_finishes_once_it_commits()
 {
    let _alone = SHARED_CLUSTER.lock().await;
    let (db, pool) = database(10).await;
    seed_users(&pool, ROWS).await;
    let before = old_columns(&pool).await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<User>()
        .backfill_options(small_batches(
            HealthBounds::off().oldest_transaction(Duration::from_secs(1)),
        ))
        .boot()
        .await
        .unwrap();
    until(
        "the backfill fills its first rows",
        Duration::from_secs(30),
        || async { (rows_done(&pool).await > 0).then_some(()) },
    )
    .await;

    // A report in another session: a REPEATABLE READ snapshot, held open.
    let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    let mut snapshot = holder.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *snapshot)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *snapshot)
        .await
        .unwrap();
    assert_eq!(seen, ROWS);

    let (reason, detail) = until(
        "the backfill pauses on the open snapshot",
        Duration::from_secs(30),
        || health_pause(&pool),
    )
    .await;
    assert_eq!(reason, "xmin_horizon");
    assert!(
        detail.starts_with(&format!("session {holder_pid} (")) && detail.contains("(bound 1 s)"),
        "{detail}"
    );
    assert_rows_stand_still(&pool, Duration::from_secs(2)).await;

    snapshot.commit().await.unwrap();
    wait_validated(&evolution).await;
    assert_eq!(health_pause(&pool).await, None, "the pause is cleared");
    assert_eq!(journaled(&pool, "health paused").await.len(), 1);
    assert_eq!(journaled(&pool, "health resumed").await.len(), 1);
    assert_every_row_filled(&pool, &before).await;
    drop(evolution);
}

/// The health check needs no superuser: as a role without `pg_read_all_stats` (like Amazon
/// RDS's master user) the query runs, other roles' sessions are hidden from it, and a snapshot
/// held by one of its own sessions still pauses the backfill until it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_role_without_pg_read_all_stats_a_snapshot_of_its_own_still_pauses_the_backfill() {
    let _alone = SHARED_CLUSTER.lock().await;
    let (db, admin) = database(4).await;
    let role = support::roles::rds_master(&db, &admin).await;
    let sees_all: bool = sqlx::query_scalar("SELECT pg_has_role('pg_read_all_stats', 'USAGE')")
        .fetch_one(&role.pool)
        .await
        .unwrap();
    assert!(!sees_all, "the role must not have pg_read_all_stats");
    let pool = role.pool.clone();
    seed_users(&pool, ROWS).await;
    let before = old_columns(&pool).await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<User>()
        .backfill_options(small_batches(
            HealthBounds::off().oldest_transaction(Duration::from_secs(1)),
        ))
        .boot()
        .await
        .unwrap();
    until(
        "the backfill fills its first rows",
        Duration::from_secs(30),
        || async { (rows_done(&pool).await > 0).then_some(()) },
    )
    .await;
    let mut snapshot = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *snapshot)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM users")
        .execute(&mut *snapshot)
        .await
        .unwrap();
    let (reason, _) = until(
        "the backfill pauses on its own role's snapshot",
        Duration::from_secs(30),
        || health_pause(&admin),
    )
    .await;
    assert_eq!(reason, "xmin_horizon");
    snapshot.commit().await.unwrap();
    wait_validated(&evolution).await;
    assert_eq!(health_pause(&admin).await, None, "the pause is cleared");
    assert_every_row_filled(&admin, &before).await;
    drop(evolution);
}
