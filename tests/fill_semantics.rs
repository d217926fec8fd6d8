//! Who a backfill expression applies to: only rows written by code that does not know the
//! column (inserts that leave it NULL, old builds' updates of the expression's inputs). A value
//! a build that knows the column wrote is never replaced, not when it writes the same value
//! again, not by later updates of old builds, not by the backfill pass, restarted or not.
//!
//! Each test uses its own table: the accessors' phase registry is per process and per model.

mod support;

use pgevolve::{DeployWindow, Evolver};
use support::database;

mod plans {
    use pgevolve::Evolve;

    /// The new build of `accounts`: `plan` is new, `'free'` for rows old builds write.
    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "accounts")]
    pub struct Account {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: String,
        #[evolve(backfill = "'free'")]
        pub plan: String,
    }
}

/// The scenario of the bug: a new build inserts `pro`, then calls `update()` after changing
/// another field (which writes `plan = 'pro'` again): the row must still say `pro`, and again
/// after a second update writing the same value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_new_build_wrote_survives_its_own_updates_that_write_it_again() {
    use plans::Account;
    let (_db, pool) = database(10).await;
    sqlx::raw_sql(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO accounts SELECT g, 'old ' || g FROM generate_series(1, 100) g;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Account>()
        .boot()
        .await
        .unwrap();

    let mut account = Account {
        id: 1_000,
        name: "Ada".into(),
        plan: "pro".into(),
    };
    account.insert(&pool).await.unwrap();
    account.name = "Ada Lovelace".into();
    account.update(&pool).await.unwrap();
    let found = Account::find(&1_000, &pool).await.unwrap().unwrap();
    assert_eq!(found.plan, "pro", "an update() writing the same plan again");
    found.update(&pool).await.unwrap();
    let plan: String = sqlx::query_scalar("SELECT plan FROM accounts WHERE id = 1000")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        plan, "pro",
        "a second update() writing the same value again"
    );

    // The same on a row that existed before expand: the new build sets `pro`, then writes it
    // again while changing the name.
    let mut old_row = Account::find(&7, &pool).await.unwrap().unwrap();
    assert_eq!(old_row.plan, "free");
    old_row.plan = "pro".into();
    old_row.update(&pool).await.unwrap();
    old_row.name = "renamed".into();
    old_row.update(&pool).await.unwrap();
    assert_eq!(Account::find(&7, &pool).await.unwrap().unwrap().plan, "pro");

    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    let plans: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, plan FROM accounts WHERE plan <> 'free' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(plans, [(7, "pro".to_string()), (1_000, "pro".to_string())]);
}
