//! DDL waits politely behind a long transaction: it retries under lock_timeout while the
//! application's queries keep flowing, succeeds once the blocker ends, and when the blocker never
//! ends, fails naming it and leaves nothing half-done.

mod support;

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
async fn retries_until_a_five_second_blocker_ends() {
    let (db, pool) = database(10).await;
    seed_users(&pool, 1_000).await;
    let (mut blocking, _) = blocker(db.url()).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        sqlx::raw_sql("COMMIT")
            .execute(&mut blocking)
            .await
            .unwrap();
        blocking
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (max_wait, prober) = probe(&pool, stop.clone());

    let started = Instant::now();
    let evolution = Evolver::new(pool.clone())
        .model::<User>()
        .ddl_options(DdlOptions {
            lock_timeout: LOCK_TIMEOUT,
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
    release.await.unwrap();

    let waited = Duration::from_micros(max_wait.load(Ordering::Relaxed));
    assert!(
        waited < LOCK_TIMEOUT + Duration::from_secs(1),
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
async fn a_blocker_that_never_ends_is_named_and_nothing_is_left_half_done() {
    let (db, pool) = database(10).await;
    seed_users(&pool, 1_000).await;
    let before = catalog_snapshot(&pool, "users").await;
    let (mut blocking, blocker_pid) = blocker(db.url()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (max_wait, prober) = probe(&pool, stop.clone());

    let err = Evolver::new(pool.clone())
        .model::<User>()
        .ddl_options(DdlOptions {
            lock_timeout: LOCK_TIMEOUT,
            max_attempts: 3,
            ..DdlOptions::default()
        })
        .boot()
        .await
        .expect_err("the lock is never granted");
    stop.store(true, Ordering::Relaxed);
    prober.await.unwrap();

    let ErrorKind::LockTimeout {
        blockers,
        attempts,
        table,
        ..
    } = err.kind()
    else {
        panic!("expected a lock timeout, got {err}");
    };
    assert_eq!(*attempts, 3);
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
        waited < LOCK_TIMEOUT + Duration::from_secs(1),
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
