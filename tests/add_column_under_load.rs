//! A NOT NULL column computed from existing data is added to a 200,000-row table while four
//! writers that do not know the column keep inserting and updating: no failed write, no writer
//! blocked longer than lock_timeout + 1 s, and every row ends up equal to the expression.

use pgevolve_test_support as support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use pgevolve::{DeployWindow, Evolve, Evolver, Phase};
use support::{Writers, database, seed_users};

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

const ROWS: i64 = 200_000;
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfilled_not_null_column_under_four_writers_fails_no_write_blocks_none_past_lock_timeout_and_fills_every_row()
 {
    let (_db, pool) = database(20).await;
    seed_users(&pool, ROWS).await;
    let writers = Writers::start(&pool, 4, ROWS);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<User>()
        .lock_timeout(LOCK_TIMEOUT)
        .boot()
        .await
        .expect("boot");
    evolution.wait().await.expect("backfill and validate");
    let progress = evolution.progress();
    let step = progress
        .iter()
        .find(|p| p.description.contains("email_normalized"))
        .unwrap();
    assert_eq!(step.phase, Phase::Validate);
    assert!(
        step.rows_done > 0 && step.rows_done <= ROWS,
        "rows_done = {}",
        step.rows_done
    );

    // New binaries are deployed (they write the column), then contract runs under their load.
    writers.new_code.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    evolution.contract().await.expect("contract");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = writers.finish().await;

    let failed = stats.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "failed writes; first: {:?}",
        stats.first_error.lock().unwrap()
    );
    assert!(
        stats.ok.load(Ordering::Relaxed) > 100,
        "the writers barely ran"
    );
    assert!(
        stats.max_wait() < LOCK_TIMEOUT + Duration::from_secs(1),
        "a writer waited {:?}",
        stats.max_wait()
    );

    let not_null: bool = sqlx::query_scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'email_normalized'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(not_null, "email_normalized is NOT NULL after contract");
    let (total, wrong): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE email_normalized IS DISTINCT FROM lower(email)) FROM users",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(total > ROWS);
    assert_eq!(
        wrong, 0,
        "rows whose email_normalized differs from lower(email)"
    );
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'users'::regclass AND NOT tgisinternal)
              + (SELECT count(*) FROM pg_constraint WHERE conrelid = 'users'::regclass AND contype = 'c')
              + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'pgevolve%')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        leftovers, 0,
        "helper trigger, function or check left behind"
    );
    // The phases, without what the pass said about its pace.
    let phases: Vec<String> = sqlx::query_scalar(
        "SELECT event FROM pgevolve.journal WHERE event <> 'backfill paced on wal' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        phases,
        [
            "expand done",
            "backfill done",
            "validate done",
            "contract done"
        ]
    );
}
