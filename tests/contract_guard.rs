//! Contract's `SET NOT NULL` relies on a validated helper check, so that it needs no scan under
//! ACCESS EXCLUSIVE. If the check is no longer validated when contract runs (dropped and re-added
//! `NOT VALID` by hand, a restore), contract proves it in the same transaction, after taking the
//! lock, and refuses, changing nothing.

use pgevolve_test_support as support;

use pgevolve::{DeployWindow, Evolve, Evolver};
use sqlx::PgPool;
use support::{catalog_snapshot, database};

#[derive(Evolve)]
#[evolve(table = "items")]
#[allow(dead_code)]
struct Item {
    #[evolve(primary_key)]
    id: i64,
    title: String,
    #[evolve(backfill = "upper(title)")]
    title_upper: String,
}

async fn not_null(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'title_upper'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_refuses_set_not_null_when_the_helper_check_is_no_longer_validated() {
    let (_db, pool) = database(5).await;
    sqlx::raw_sql(
        "CREATE TABLE items (id bigint PRIMARY KEY, title text NOT NULL);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2000) g;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Item>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();

    // Someone replaces the validated check with an unvalidated one.
    let check: String = sqlx::query_scalar(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'items'::regclass AND contype = 'c'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE items DROP CONSTRAINT \"{check}\", \
         ADD CONSTRAINT \"{check}\" CHECK (title_upper IS NOT NULL) NOT VALID"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let before = catalog_snapshot(&pool, "items").await;

    let refused = evolution.contract().await.unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("is not validated") && message.contains("ACCESS EXCLUSIVE"),
        "{message}"
    );
    assert!(!not_null(&pool).await, "no SET NOT NULL ran");
    assert_eq!(
        catalog_snapshot(&pool, "items").await,
        before,
        "contract changed nothing"
    );
    let phase: String =
        sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE kind = 'add_backfilled_column'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(phase, "validate");

    // Validated again: contract runs.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE items VALIDATE CONSTRAINT \"{check}\""
    )))
    .execute(&pool)
    .await
    .unwrap();
    evolution.contract().await.unwrap();
    assert!(not_null(&pool).await);
}
