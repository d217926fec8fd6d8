//! One process serving two databases (a database per tenant) with the same model in different
//! phases: tenant 1's rename is contracted (`name` is gone), tenant 2's has just expanded (old
//! binaries still write `name`). Each pool's accessors read and write the shape of their own
//! database while old and new writers run on both; a bare connection is refused when it cannot
//! say which database it is for, and served once tied to its evolution.

use pgevolve_test_support as support;

use std::sync::Arc;

use pgevolve::{BackfillOptions, DeployWindow, ErrorKind, Evolution, Evolver};
use sqlx::PgPool;
use support::database;
use support::people::*;

async fn boot(pool: &PgPool) -> Evolution {
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .backfill_options(BackfillOptions {
            initial_batch_size: 500,
            max_batch_size: 2_000,
            ..BackfillOptions::default()
        })
        .model::<Person>()
        .boot()
        .await
        .unwrap()
}

async fn finish_all(writers: Vec<Writer>) -> (u64, Vec<String>) {
    let (mut ok, mut errors) = (0, Vec::new());
    for w in writers {
        let (n, e) = w.finish().await;
        ok += n;
        errors.extend(e);
    }
    (ok, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_databases_in_different_phases_each_get_the_columns_of_their_own_phase() {
    let (_db1, one) = database(10).await;
    let (_db2, two) = database(10).await;
    seed(&one, "people").await;
    seed(&two, "people").await;

    // Tenant 1 goes all the way: `name` is dropped.
    let first = boot(&one).await;
    first.wait().await.unwrap();
    first.switch().await.unwrap();
    first.contract().await.unwrap();
    assert!(!column_exists(&one, "name").await);

    // Tenant 2 has just expanded: old binaries still write `name`, new ones write both.
    let (log_one, log_two): (WriteLog, WriteLog) = (Arc::default(), Arc::default());
    let old_two: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&two, lane, log_two.clone()))
        .collect();
    let second = boot(&two).await;
    let new_two: Vec<Writer> = (2..4)
        .map(|lane| new_writer(&two, lane, log_two.clone()))
        .collect();
    // New binaries of tenant 1 write through the same model in the same process meanwhile.
    let new_one: Vec<Writer> = (2..4)
        .map(|lane| new_writer(&one, lane, log_one.clone()))
        .collect();
    second.wait().await.unwrap();
    assert!(
        column_exists(&two, "name").await,
        "tenant 2 still has `name`"
    );

    let (ok_one, errors_one) = finish_all(new_one).await;
    let (ok_two, errors_two) = finish_all(old_two.into_iter().chain(new_two).collect()).await;
    assert!(
        errors_one.is_empty() && errors_two.is_empty(),
        "failed statements: tenant 1 {:?}, tenant 2 {:?}",
        errors_one.first(),
        errors_two.first()
    );
    assert!(ok_one > 100 && ok_two > 100, "{ok_one} and {ok_two} writes");

    // Every write is where it belongs: tenant 1 under `full_name` only, tenant 2 under both
    // names (the new column filled by the sync trigger and the backfill).
    assert_log_matches(&one, &log_one, "full_name").await;
    assert_log_matches(&two, &log_two, "name").await;
    assert_log_matches(&two, &log_two, "full_name").await;
    let differing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM people WHERE full_name IS DISTINCT FROM name")
            .fetch_one(&two)
            .await
            .unwrap();
    assert_eq!(differing, 0, "tenant 2's names agree on every row");
    for pool in [&one, &two] {
        let untouched: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM people WHERE id <= $1 AND full_name = 'Name ' || id",
        )
        .bind(ROWS)
        .fetch_one(pool)
        .await
        .unwrap();
        assert!(untouched > 0, "rows no writer touched keep their value");
    }
    assert!(Person::find(&1, &one).await.unwrap().is_some());
    assert!(Person::find(&1, &two).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_connection_is_refused_when_two_databases_know_the_model_and_served_through_its_evolution()
 {
    let (_db1, one) = database(10).await;
    let (_db2, two) = database(10).await;
    seed(&one, "people").await;
    seed(&two, "people").await;
    let first = boot(&one).await;
    first.wait().await.unwrap();
    first.switch().await.unwrap();
    first.contract().await.unwrap();
    let second = boot(&two).await;
    second.wait().await.unwrap();

    let person = |id: i64, name: &str| Person {
        id,
        full_name: name.into(),
        email: "t@example.com".into(),
    };
    let mut conn = two.acquire().await.unwrap();
    let refused = person(ROWS + 1, "nobody")
        .insert(&mut *conn)
        .await
        .unwrap_err();
    assert!(
        matches!(refused.kind(), ErrorKind::AmbiguousDatabase { .. }),
        "{refused}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("several databases") && message.contains("evolution.on("),
        "{message}"
    );
    let inserted: i64 = sqlx::query_scalar("SELECT count(*) FROM people WHERE id > $1")
        .bind(ROWS)
        .fetch_one(&two)
        .await
        .unwrap();
    assert_eq!(inserted, 0, "nothing was written");

    // Tied to its evolution, inside a transaction: tenant 2's shape (both names written).
    let mut tx = two.begin().await.unwrap();
    person(ROWS + 1, "Tenant Two")
        .insert(second.on(&mut *tx))
        .await
        .unwrap();
    let found = Person::find(&(ROWS + 1), second.on(&mut *tx))
        .await
        .unwrap();
    assert_eq!(found, Some(person(ROWS + 1, "Tenant Two")));
    tx.commit().await.unwrap();
    let (name, full_name): (String, String) =
        sqlx::query_as("SELECT name, full_name FROM people WHERE id = $1")
            .bind(ROWS + 1)
            .fetch_one(&two)
            .await
            .unwrap();
    assert_eq!(
        (name.as_str(), full_name.as_str()),
        ("Tenant Two", "Tenant Two")
    );

    // Tenant 1's connection tied to its evolution: `full_name` only (`name` does not exist).
    let mut conn = one.acquire().await.unwrap();
    person(ROWS + 1, "Tenant One")
        .insert(first.on(&mut *conn))
        .await
        .unwrap();
    let everyone = Person::fetch_all(first.on(&mut *conn)).await.unwrap();
    assert_eq!(everyone.len() as i64, ROWS + 1);
    assert!(everyone.contains(&person(ROWS + 1, "Tenant One")));
}
