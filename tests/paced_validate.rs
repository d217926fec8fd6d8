//! A rename's validate counts the rows whose old and new column differ one key range at a time
//! on the duty cycle (not in one scan at full speed), and reaches the verdict a full count
//! reaches: here a writer that bypasses the sync trigger inserts a differing row while the
//! count walks, and the validate phase fails naming it, as a count of the whole table does
//! afterwards. Fixed, the next boot validates.

use pgevolve_test_support as support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgevolve::{BackfillOptions, DeployWindow, ErrorKind, Evolve, Evolver};
use pgevolve_testkit::TestDatabase;
use sqlx::{Connection, PgConnection, PgPool};
use support::child::{self, ChildProcess};
use support::people::{Person, ROWS, seed};
use support::{catalog_snapshot, database};

/// Rows whose two names differ, in one count over the whole table.
async fn full_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM people WHERE full_name IS DISTINCT FROM name")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paced_count_sees_a_differing_row_written_while_it_walks() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(8).await;
    seed(&pool, "people").await;
    // Small batches, so the count's ranges (ten times a batch) are many: 2,000 keys at most.
    let options = BackfillOptions {
        initial_batch_size: 100,
        min_batch_size: 100,
        max_batch_size: 200,
        ..BackfillOptions::default()
    };
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .backfill_options(options.clone())
        .model::<Person>()
        .boot()
        .await
        .unwrap();

    // Watch for the count's ranges; at the first one, a writer that bypasses the sync trigger
    // inserts a row above every key, where the walk has not been yet.
    let stop = Arc::new(AtomicBool::new(false));
    let (watcher, watching) = (pool.clone(), stop.clone());
    let watch = tokio::spawn(async move {
        let mut ranges = BTreeSet::new();
        let mut inserted = false;
        while !watching.load(Ordering::Acquire) {
            let seen: Vec<String> = sqlx::query_scalar(
                // Not this test's own polls, whose text names the pattern too.
                "SELECT query FROM pg_stat_activity WHERE query LIKE '%AS __pgevolve_bad FROM%' \
                 AND query NOT LIKE '%pg_stat_activity%'",
            )
            .fetch_all(&watcher)
            .await
            .unwrap();
            if !seen.is_empty() && !inserted {
                let mut tx = watcher.begin().await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "SET LOCAL session_replication_role = replica;
                     INSERT INTO people (id, name, full_name, email)
                     VALUES ({}, 'Old name', 'Other name', 'x@example.com')",
                    ROWS + 1
                )))
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
                inserted = true;
            }
            ranges.extend(seen);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (inserted, ranges.len())
    });

    let err = evolution
        .wait()
        .await
        .expect_err("the differing row fails the validate phase");
    stop.store(true, Ordering::Release);
    let (inserted, ranges) = watch.await.unwrap();
    assert!(inserted, "the count was never seen running");
    assert!(ranges >= 2, "the count ran in {ranges} range(s), not paced");
    let ErrorKind::Background(inner) = err.kind() else {
        panic!("{err}");
    };
    assert!(
        matches!(inner.kind(), ErrorKind::Verification { phase, .. } if phase == "validate"),
        "{inner}"
    );
    assert!(
        inner
            .to_string()
            .contains("1 rows differ between name and full_name"),
        "{inner}"
    );
    // The verdict of a count of the whole table.
    assert_eq!(full_count(&pool).await, 1);

    // Fixed, booted again: the paced count finds nothing and the step validates.
    sqlx::query("UPDATE people SET full_name = name WHERE id = $1")
        .bind(ROWS + 1)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(full_count(&pool).await, 0);
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .backfill_options(options)
        .model::<Person>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let phase: String =
        sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE kind = 'rename_column'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        ["validate", "switch", "retire", "contract"].contains(&phase.as_str()),
        "{phase}"
    );
}

/// The rename step's id.
fn rename_step() -> String {
    Person::plan()
        .steps
        .into_iter()
        .find(|s| s.kind.name() == "rename_column")
        .unwrap()
        .id
        .to_string()
}

/// The rename step's recorded phase.
async fn phase(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE id = $1")
        .bind(rename_step())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// How often the rename step's journal has `event`.
async fn journaled(pool: &PgPool, event: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pgevolve.journal WHERE step_id = $1 AND event = $2")
        .bind(rename_step())
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Polls `done` every 20 ms for at most 60 s; panics naming `what` if it never holds.
async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited in vain for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that the child did not come back to the pause point (`PASSED`, printed when it
/// passes there again after its release): the count read no range after the one it was held
/// at. The short sleep lets lines already printed reach the test.
async fn assert_no_range_read_after_release(child: &mut ChildProcess) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = child.new_lines();
    assert!(
        !lines.iter().any(|l| l.contains("PASSED paced-count-range")),
        "the count read another range: {lines:?}"
    );
}

/// The child of the paced count tests: boots the rename with ranges of 5,000 to 10,000 keys
/// (four over the table), held by the parent after the first range
/// (`PGEVOLVE_PAUSE_AT=paced-count-range`), then waits for ever. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_count_child_process() {
    let Some((_, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .backfill_options(BackfillOptions {
            initial_batch_size: 500,
            min_batch_size: 100,
            max_batch_size: 1_000,
            ..BackfillOptions::default()
        })
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    // Ends with the abort, or not at all: the parent decides who leads.
    let _ = evolution.wait().await;
    loop {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
    }
}

/// A fresh database with `support::people`'s table (its catalog snapshot taken before any
/// boot), and a child whose paced count is held after its first range, validate not recorded.
async fn count_held() -> (TestDatabase, PgPool, Vec<String>, ChildProcess) {
    let (db, pool) = database(8).await;
    seed(&pool, "people").await;
    let before = catalog_snapshot(&pool, "people").await;
    let child = ChildProcess::held_at(
        "paced_count_child_process",
        "count",
        db.url(),
        "paced-count-range",
    );
    assert_eq!(phase(&pool).await, "backfill", "validate before the count");
    (db, pool, before, child)
}

/// An abort recorded (through the requests an operator's `pgevolve abort` sends) while the
/// paced count is held between two ranges: released, the count reads no further range, the
/// leader runs the abort's DDL, the table's catalog is as before the boot and validate was
/// never recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_during_a_paced_count_stops_it_before_its_next_range_and_restores_the_table() {
    if child::in_child() {
        return;
    }
    let (_db, pool, before, mut child) = count_held().await;

    let mut conn = pool.acquire().await.unwrap();
    pgevolve::__private::Requests::new("pgevolve")
        .submit(
            &mut conn,
            pgevolve::__private::Action::Abort,
            Some(&rename_step()),
            None,
            "test",
        )
        .await
        .unwrap();
    until("the abort recorded", || async {
        phase(&pool).await == "aborted"
    })
    .await;
    child.release();
    until("the abort's DDL", || async {
        journaled(&pool, "abort done").await == 1
    })
    .await;
    assert_no_range_read_after_release(&mut child).await;
    assert_eq!(catalog_snapshot(&pool, "people").await, before);
    assert_eq!(journaled(&pool, "validate done").await, 0);
    assert_eq!(phase(&pool).await, "aborted");
}

/// The leader's session ends (`pg_terminate_backend`) while the paced count is held between
/// two ranges, and the test takes the leader lock: released, the count reads no further range
/// and the instance journals the lost lock; validate is not recorded. Once the test lets the
/// lock go, the instance leads again and validates, counting from the first key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_count_stops_when_its_leaders_session_ends_and_the_next_leader_validates() {
    if child::in_child() {
        return;
    }
    let (db, pool, _, mut child) = count_held().await;
    // The leader lock's session ends, and the test takes the lock before the instance can.
    let key = pgevolve::__private::leader_lock_key("pgevolve");
    let pid: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
         AND ((classid::int8 << 32) | objid::int8) = $1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(key)
    .fetch_one(&pool)
    .await
    .unwrap();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(terminated);
    let mut holder = PgConnection::connect(db.url()).await.unwrap();
    let started = std::time::Instant::now();
    while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut holder)
        .await
        .unwrap()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the ended session's leader lock is still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    child.release();
    until("the lost leader lock journaled", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pgevolve.journal WHERE event = 'leader lock lost'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
            == 1
    })
    .await;
    assert_no_range_read_after_release(&mut child).await;
    assert_eq!(phase(&pool).await, "backfill", "validate recorded");

    // The lock back: the instance takes it over and counts again, from the first key.
    holder.close().await.unwrap();
    until("validate recorded", || async {
        phase(&pool).await == "validate"
    })
    .await;
    child.expect("PASSED paced-count-range");
    assert_eq!(journaled(&pool, "validate done").await, 1);
    assert_eq!(full_count(&pool).await, 0);
}
