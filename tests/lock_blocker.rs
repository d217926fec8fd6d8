//! DDL waits politely behind a long transaction: it does not even enter the table's lock queue
//! while a transaction older than `long_holder` holds a lock on the table (the application's
//! queries keep flowing), succeeds once the blocker ends, and when the blocker never ends, fails
//! at its deadline naming it, with how long it held the lock, and leaves nothing half-done. A
//! blocker younger than `long_holder`, or one it cannot see the age of (another role's, without
//! `pg_read_all_stats`), is met with short `lock_timeout` attempts instead, and named too.

use pgevolve_test_support as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgevolve::{DdlOptions, ErrorKind, Evolve, Evolver};
use sqlx::{Connection, PgPool};
use support::{catalog_snapshot, database, roles, seed_users};

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

const LOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// The long-holder threshold of the first two tests: a transaction open longer than this is
/// waited for outside the lock queue.
const LONG_HOLDER: Duration = Duration::from_millis(500);

/// Runs a simple query on the table in a loop and keeps the longest time one took.
fn probe(pool: &PgPool, stop: Arc<AtomicBool>) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let max_us = Arc::new(AtomicU64::new(0));
    let (pool, max) = (pool.clone(), max_us.clone());
    let handle = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            sqlx::query("SELECT email FROM users WHERE id = 42")
                .fetch_optional(&pool)
                .await
                .unwrap();
            max.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (max_us, handle)
}

/// Samples `pg_locks` until stopped and counts the samples in which some session waited in the
/// lock queue of `users` (a relation lock not granted).
fn queue_watcher(url: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let url = url.to_string();
    tokio::spawn(async move {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut seen = 0;
        while !stop.load(Ordering::Relaxed) {
            let queued: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'relation' \
                 AND relation = to_regclass('public.users') AND NOT granted)",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            seen += queued as u64;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen
    })
}

/// A session that holds ACCESS SHARE on `users` (an open transaction that read it).
async fn blocker(url: &str) -> (sqlx::PgConnection, i32) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; SELECT count(*) FROM users /* long report */;")
        .execute(&mut conn)
        .await
        .unwrap();
    (conn, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_enters_the_lock_queue_while_a_five_second_blocker_holds_the_table_and_succeeds_after()
 {
    let (db, pool) = database(10).await;
    seed_users(&pool, 1_000).await;
    let (mut blocking, _) = blocker(db.url()).await;
    // A holder younger than long_holder may still be met with bounded attempts: the claim is
    // about a transaction that has already been open for longer.
    tokio::time::sleep(LONG_HOLDER * 2).await;
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = queue_watcher(db.url(), watching.clone());
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Stop watching just before the blocker ends: from then on the DDL may queue briefly.
        watching.store(true, Ordering::Relaxed);
        let queued = watcher.await.unwrap();
        sqlx::raw_sql("COMMIT")
            .execute(&mut blocking)
            .await
            .unwrap();
        queued
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (max_wait, prober) = probe(&pool, stop.clone());

    let started = Instant::now();
    let evolution = Evolver::new(pool.clone())
        .model::<User>()
        .ddl_options(DdlOptions {
            long_holder: LONG_HOLDER,
            max_attempts: 30,
            ..DdlOptions::default()
        })
        .boot()
        .await
        .expect("boot succeeds once the blocker commits");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "expand cannot have run while the blocker held its lock"
    );
    evolution.wait().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    prober.await.unwrap();
    let queued = release.await.unwrap();
    assert_eq!(
        queued, 0,
        "while the blocker held the table, no session waited in its lock queue"
    );

    let waited = Duration::from_micros(max_wait.load(Ordering::Relaxed));
    assert!(
        waited < LONG_HOLDER + Duration::from_secs(1),
        "a simple query waited {waited:?}"
    );
    let filled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email_normalized = lower(email)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(filled, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocker_that_never_ends_is_named_at_the_deadline_and_nothing_is_left_half_done() {
    let (db, pool) = database(10).await;
    seed_users(&pool, 1_000).await;
    let before = catalog_snapshot(&pool, "users").await;
    let (mut blocking, blocker_pid) = blocker(db.url()).await;
    tokio::time::sleep(LONG_HOLDER * 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (max_wait, prober) = probe(&pool, stop.clone());

    let err = Evolver::new(pool.clone())
        .model::<User>()
        .ddl_options(DdlOptions {
            long_holder: LONG_HOLDER,
            deadline: Duration::from_secs(3),
            ..DdlOptions::default()
        })
        .boot()
        .await
        .expect_err("the lock is never granted");
    stop.store(true, Ordering::Relaxed);
    prober.await.unwrap();

    let ErrorKind::LockTimeout {
        blockers,
        held,
        attempts,
        table,
        waited_secs,
        ..
    } = err.kind()
    else {
        panic!("expected a lock timeout, got {err}");
    };
    assert_eq!(
        *attempts, 0,
        "no lock was asked for while the long blocker held the table"
    );
    assert!(
        held.starts_with(&format!("pid {blocker_pid} ("))
            && held.contains("held AccessShareLock for at least"),
        "the error says who held the lock and for how long: {held}"
    );
    assert!(held_seconds(held) >= 3.0, "held for the whole wait: {held}");
    assert!(*waited_secs >= 3.0, "gave up after {waited_secs} s");
    assert_eq!(table, "public.users");
    assert!(
        blockers.contains(&format!("pid {blocker_pid}")),
        "{blockers}"
    );
    assert!(
        blockers.contains("long report"),
        "the blocker's query text is shown: {blockers}"
    );
    let message = err.to_string();
    assert!(
        message.contains("nothing of this phase was applied"),
        "{message}"
    );

    let waited = Duration::from_micros(max_wait.load(Ordering::Relaxed));
    assert!(
        waited < LONG_HOLDER + Duration::from_secs(1),
        "a simple query waited {waited:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocking)
        .await
        .unwrap();
    assert_eq!(
        catalog_snapshot(&pool, "users").await,
        before,
        "the table is exactly as it was"
    );
}

/// The "for at least N s" of the first holder the error names.
fn held_seconds(held: &str) -> f64 {
    held.split("for at least ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_younger_than_long_holder_gets_many_short_attempts_and_is_named_with_how_long_it_held()
 {
    let (db, pool) = database(10).await;
    seed_users(&pool, 1_000).await;
    let before = catalog_snapshot(&pool, "users").await;
    let (mut blocking, blocker_pid) = blocker(db.url()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (max_wait, prober) = probe(&pool, stop.clone());

    // The default lock_timeout (100 ms); a threshold the blocker never reaches, so every try is
    // a real lock request, each bounded by lock_timeout.
    let options = DdlOptions {
        long_holder: Duration::from_secs(3600),
        deadline: Duration::from_secs(3),
        ..DdlOptions::default()
    };
    assert_eq!(options.lock_timeout, Duration::from_millis(100));
    let err = Evolver::new(pool.clone())
        .model::<User>()
        .ddl_options(options)
        .boot()
        .await
        .expect_err("the lock is never granted");
    stop.store(true, Ordering::Relaxed);
    prober.await.unwrap();
    let ErrorKind::LockTimeout {
        attempts,
        held,
        waited_secs,
        ..
    } = err.kind()
    else {
        panic!("expected a lock timeout, got {err}");
    };
    assert!(
        *attempts >= 3,
        "many short attempts within the deadline, not one long one: {attempts}"
    );
    assert!(*waited_secs >= 3.0, "gave up after {waited_secs} s");
    assert!(
        held.starts_with(&format!("pid {blocker_pid} (")) && held.contains("long report"),
        "the holder is named first, with its query: {held}"
    );
    assert!(
        held_seconds(held) >= 2.5,
        "and with how long it held the lock: {held}"
    );
    assert!(err.to_string().contains(held.as_str()), "{err}");
    let waited = Duration::from_micros(max_wait.load(Ordering::Relaxed));
    assert!(
        waited < Duration::from_millis(100) + Duration::from_secs(1),
        "a simple query waited {waited:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocking)
        .await
        .unwrap();
    assert_eq!(catalog_snapshot(&pool, "users").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_without_pg_read_all_stats_is_told_the_blocker_pid_role_and_lock_mode() {
    let (db, admin) = database(5).await;
    let owner = roles::table_owner(&db, &admin).await;
    seed_users(&owner.pool, 1_000).await;
    let reads_all_stats: bool =
        sqlx::query_scalar("SELECT pg_has_role('pg_read_all_stats', 'USAGE')")
            .fetch_one(&owner.pool)
            .await
            .unwrap();
    assert!(!reads_all_stats);
    let before = catalog_snapshot(&admin, "users").await;
    // Another role's session (the superuser's): its query text is hidden from the owner.
    let (mut blocking, blocker_pid) = blocker(db.url()).await;

    let err = Evolver::new(owner.pool.clone())
        .model::<User>()
        .ddl_options(DdlOptions {
            lock_timeout: LOCK_TIMEOUT,
            max_attempts: 2,
            ..DdlOptions::default()
        })
        .boot()
        .await
        .expect_err("the lock is never granted");
    let ErrorKind::LockTimeout { blockers, .. } = err.kind() else {
        panic!("expected a lock timeout, got {err}");
    };
    println!("{err}");
    for expected in [
        format!("pid {blocker_pid} (role \"postgres\", holds AccessShareLock;"),
        format!(
            "hidden from role {}, which is not a member of pg_read_all_stats",
            owner.quoted()
        ),
        format!("SELECT pg_terminate_backend({blocker_pid})"),
    ] {
        assert!(blockers.contains(&expected), "{expected} in {blockers}");
    }
    assert!(!blockers.contains("long report"), "{blockers}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocking)
        .await
        .unwrap();
    assert_eq!(catalog_snapshot(&admin, "users").await, before);
}
