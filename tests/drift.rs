//! A database that does not match the models is reported before any DDL runs, with the table,
//! the column and what to do, and nothing is changed.

use pgevolve_test_support as support;

use pgevolve::{ErrorKind, Evolve, Evolver};
use sqlx::PgPool;
use support::{catalog_snapshot, database};

async fn state_store_exists(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT to_regnamespace('pgevolve') IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn drift_messages(pool: &PgPool, evolver: Evolver) -> Vec<String> {
    let err = evolver.boot().await.expect_err("drift must stop the boot");
    let ErrorKind::Drift(problems) = err.kind() else {
        panic!("expected drift, got {err}")
    };
    assert!(
        !state_store_exists(pool).await,
        "nothing was created, not even the state store"
    );
    problems.iter().map(|p| p.to_string()).collect()
}

#[derive(Evolve)]
#[evolve(table = "accounts")]
#[allow(dead_code)]
struct Account {
    #[evolve(primary_key)]
    id: i64,
    owner: String, // missing in the table, no way to fill it
    balance: i32,  // bigint in the table
    #[evolve(backfill = "upper(owner)")]
    owner_upper: String, // the table has no primary key... see NoKey below
}

#[tokio::test]
async fn missing_column_and_type_mismatch_are_reported_together() {
    let (_db, pool) = database(5).await;
    sqlx::raw_sql("CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let before = catalog_snapshot(&pool, "accounts").await;
    let messages = drift_messages(&pool, Evolver::new(pool.clone()).model::<Account>()).await;
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert!(
        messages[0].starts_with("public.accounts.owner: the column does not exist"),
        "{messages:#?}"
    );
    assert!(
        messages[0].contains("`#[evolve(backfill"),
        "says what to add: {}",
        messages[0]
    );
    assert!(
        messages[1].starts_with("public.accounts.balance: the column has type `bigint`"),
        "{messages:#?}"
    );
    assert!(
        messages[1].contains("declares `integer`")
            && messages[1].contains("`#[evolve(type_from = \"bigint\")]`"),
        "says how to declare the change: {}",
        messages[1]
    );
    assert!(
        messages[2].contains("not a valid expression"),
        "the backfill reads a missing column: {}",
        messages[2]
    );
    assert_eq!(catalog_snapshot(&pool, "accounts").await, before);
}

#[derive(Evolve)]
#[evolve(table = "events")]
#[allow(dead_code)]
struct Event {
    #[evolve(primary_key)]
    id: i64,
    kind: String,
    #[evolve(backfill = "lower(kind)")]
    kind_lower: String,
}

#[tokio::test]
async fn a_backfill_on_a_table_without_a_primary_key_is_drift_and_nothing_changes() {
    let (_db, pool) = database(5).await;
    sqlx::raw_sql("CREATE TABLE events (id bigint NOT NULL, kind text NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let before = catalog_snapshot(&pool, "events").await;
    let messages = drift_messages(&pool, Evolver::new(pool.clone()).model::<Event>()).await;
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("public.events.kind_lower: a backfill walks the primary key")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("public.events: the primary key is ()")),
        "{messages:#?}"
    );
    assert_eq!(catalog_snapshot(&pool, "events").await, before);
}

#[derive(Evolve)]
#[evolve(table = "tokens")]
#[allow(dead_code)]
struct Token {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(default = "random()")]
    weight: f64,
}

#[tokio::test]
async fn a_volatile_default_is_refused_with_the_safe_alternative() {
    let (_db, pool) = database(5).await;
    sqlx::raw_sql("CREATE TABLE tokens (id bigint PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    let messages = drift_messages(&pool, Evolver::new(pool.clone()).model::<Token>()).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(messages[0].contains("is volatile"), "{}", messages[0]);
    assert!(
        messages[0].contains("use `backfill = \"random()\"` instead"),
        "{}",
        messages[0]
    );
}

#[derive(Evolve)]
#[evolve(table = "people")]
#[allow(dead_code)]
struct Person {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(renamed_from = "name")]
    full_name: String,
    // Reads the new column of a rename that is not filled yet.
    #[evolve(backfill = "upper(full_name)")]
    shout: String,
}

#[tokio::test]
async fn a_backfill_reading_a_column_still_being_filled_is_refused() {
    let (_db, pool) = database(5).await;
    sqlx::raw_sql(
        "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO people VALUES (1, 'Ada');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = catalog_snapshot(&pool, "people").await;
    let messages = drift_messages(&pool, Evolver::new(pool.clone()).model::<Person>()).await;
    let message = messages
        .iter()
        .find(|m| m.contains("is still filling"))
        .unwrap_or_else(|| panic!("{messages:#?}"));
    assert!(
        message
            .starts_with("public.people.shout: the backfill `upper(full_name)` reads `full_name`"),
        "{message}"
    );
    assert!(
        message.contains("write the expression over `name`"),
        "gives the safe alternative: {message}"
    );
    assert_eq!(catalog_snapshot(&pool, "people").await, before);
}
