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
use sqlx::PgPool;
use support::database;

#[derive(Evolve, Debug)]
#[evolve(table = "people")]
#[allow(dead_code)]
struct Person {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(renamed_from = "name")]
    full_name: String,
    email: String,
}

const ROWS: i64 = 30_000;

async fn seed(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
         INSERT INTO people SELECT g, 'Name ' || g, 'p' || g || '@example.com' FROM generate_series(1, {ROWS}) g;
         ANALYZE people;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// Rows whose two names differ, in one count over the whole table.
async fn full_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM people WHERE full_name IS DISTINCT FROM name")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paced_count_sees_a_differing_row_written_while_it_walks() {
    let (_db, pool) = database(8).await;
    seed(&pool).await;
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
