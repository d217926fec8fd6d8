//! A rename carries every object on the old column over to the new one before contract drops
//! the old column: indexes (built concurrently before switch), unique and check constraints,
//! foreign keys in both directions, the default, an owned sequence, the comment and column
//! privileges. What it cannot carry stops the boot as drift; abort removes what was carried.

mod support;

use std::time::Duration;

use pgevolve::{DeployWindow, Evolver};
use sqlx::PgPool;
use support::database;
use support::people::*;

/// The definitions of the indexes over `column` of `table`, with the index name replaced by
/// `<name>` so definitions of differently named indexes compare.
async fn index_defs(pool: &PgPool, table: &str, column: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT replace(pg_get_indexdef(i.indexrelid), c.relname || ' ON', '<name> ON') \
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
          WHERE i.indrelid = $1::regclass \
            AND ((SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2) = ANY (i.indkey::int2[]) \
                 OR EXISTS (SELECT 1 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                             WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid AND a.attname = $2 \
                               AND d.refobjid = $1::regclass)) \
          ORDER BY 1",
    )
    .bind(table)
    .bind(column)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The constraints of `table` whose definition mentions `column` (by `pg_get_constraintdef`).
async fn constraint_defs(pool: &PgPool, table: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
          WHERE conrelid = $1::regclass AND contype <> 'p' ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string())
}

async fn migrate_through_contract(pool: &PgPool) {
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    evolution.switch().await.unwrap();
    evolution.contract().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_column_with_an_index_keeps_both_after_contract() {
    let (_db, pool) = database(10).await;
    seed(&pool, "people").await;
    sqlx::raw_sql(
        "ALTER TABLE people ADD CONSTRAINT people_name_key UNIQUE (name);
         CREATE INDEX people_name_pattern_idx ON people (name text_pattern_ops);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before: Vec<String> = index_defs(&pool, "people", "name")
        .await
        .into_iter()
        .map(|d| d.replace("(name", "(full_name"))
        .collect();
    assert_eq!(before.len(), 2, "{before:#?}");

    migrate_through_contract(&pool).await;

    assert!(!column_exists(&pool, "name").await);
    assert_eq!(index_defs(&pool, "people", "full_name").await, before);
    let constraints = constraint_defs(&pool, "people").await;
    assert!(
        constraints.contains(&("people_full_name_key".into(), "UNIQUE (full_name)".into())),
        "{constraints:#?}"
    );
    let duplicate = sqlx::query(
        "INSERT INTO people (id, full_name, email) VALUES (999999999, 'Name 1', 'dup@example.com')",
    )
    .execute(&pool)
    .await
    .expect_err("a duplicate is rejected");
    assert_eq!(sqlstate(&duplicate).as_deref(), Some("23505"), "{duplicate}");
    let _ = Duration::ZERO;
}
