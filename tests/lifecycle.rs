//! The life of a model: the table created from nothing, new nullable and defaulted columns on a
//! live table, idempotent re-boots, several instances booting at once, and a backfill that
//! resumes from its checkpoint after the process dies.

use pgevolve_test_support as support;

use std::time::Duration;

use pgevolve::{BackfillOptions, DeployWindow, Evolve, Evolver, Phase};
use support::child::{self, ChildProcess};
use support::{catalog_snapshot, database, seed_users};

mod v1 {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "orders", schema = "shop")]
    #[allow(dead_code)]
    pub struct Order {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(primary_key)]
        pub line: i32,
        pub sku: String,
    }
}

mod v2 {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "orders", schema = "shop")]
    #[allow(dead_code)]
    pub struct Order {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(primary_key)]
        pub line: i32,
        pub sku: String,
        pub note: Option<String>,
        #[evolve(default = "1")]
        pub quantity: i32,
        #[evolve(backfill = "upper(sku) || '-' || line")]
        pub label: String,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_evolve_a_composite_key_table_and_reboot_idempotently() {
    let (_db, pool) = database(10).await;
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<v1::Order>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO shop.orders (id, line, sku) SELECT g / 3, g % 3, 'sku' || g FROM generate_series(1, 3000) g",
    )
    .execute(&pool)
    .await
    .unwrap();

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<v2::Order>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 100,
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    // Expand is done when boot returns: old writers already get the new columns filled.
    sqlx::raw_sql("INSERT INTO shop.orders (id, line, sku) VALUES (5000, 1, 'late')")
        .execute(&pool)
        .await
        .unwrap();
    evolution.contract().await.unwrap();

    let columns = catalog_snapshot(&pool, "shop.orders").await;
    for expected in [
        "column label text notnull=true default=",
        "column note text notnull=false default=",
        "column quantity integer notnull=true default=1",
    ] {
        assert!(
            columns.iter().any(|c| c == expected),
            "{expected} in {columns:#?}"
        );
    }
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM shop.orders WHERE label <> upper(sku) || '-' || line OR quantity <> 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);

    // Booting again finds nothing to do and changes nothing.
    let before = catalog_snapshot(&pool, "shop.orders").await;
    let again = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<v2::Order>()
        .boot()
        .await
        .unwrap();
    again.wait().await.unwrap();
    again.contract().await.unwrap();
    assert_eq!(catalog_snapshot(&pool, "shop.orders").await, before);
    let status = again.status().await.unwrap();
    assert!(
        status.iter().all(|s| s.phase >= Phase::Expand),
        "{status:#?}"
    );
    let label = status
        .iter()
        .find(|s| s.description.contains("label"))
        .unwrap();
    assert_eq!(label.phase, Phase::Contract);
    assert_eq!(label.rows_done, 3000);
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_instances_booting_at_once_expand_once_and_all_serve() {
    let (_db, pool) = database(30).await;
    seed_users(&pool, 20_000).await;
    let boots = (0..5).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            Evolver::new(pool)
                .deploy_window(DeployWindow::always())
                .model::<User>()
                .boot()
                .await
        })
    });
    let mut evolutions = Vec::new();
    for boot in boots {
        evolutions.push(boot.await.unwrap().expect("every instance boots"));
    }
    for evolution in &evolutions {
        evolution.wait().await.unwrap();
    }
    let expands: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgevolve.journal WHERE event = 'expand done'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(expands, 1, "exactly one instance ran expand");
    let nulls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email_normalized IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(nulls, 0);
    // Every instance serves: a read through each one's accessors returns the filled column.
    for (i, evolution) in evolutions.iter().enumerate() {
        let mut conn = pool.acquire().await.unwrap();
        let id = 1 + i as i64 * 1_000;
        let user = User::find(&id, evolution.on(&mut *conn))
            .await
            .unwrap_or_else(|e| panic!("instance {i} does not serve: {e}"))
            .unwrap_or_else(|| panic!("instance {i} does not find user {id}"));
        assert_eq!(
            user.email_normalized,
            user.email.to_lowercase(),
            "instance {i}"
        );
    }
}

fn slow_backfill() -> BackfillOptions {
    BackfillOptions {
        initial_batch_size: 500,
        max_batch_size: 500,
        pause: Duration::from_millis(10),
        ..BackfillOptions::default()
    }
}

/// The child of the kill test: boots, backfills and reports its progress until killed. Not a
/// test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_child_process() {
    let Some((_, url)) = child::child_spec() else {
        return;
    };
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<User>()
        .backfill_options(slow_backfill())
        .boot()
        .await
        .unwrap();
    child::report_progress_forever(&evolution).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_midway_resumes_from_its_checkpoint() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(10).await;
    seed_users(&pool, 50_000).await;

    // First process: a real child that boots and backfills; SIGKILLed once it has filled 5,000
    // rows, in the middle of its pass (with a batch possibly open).
    let mut first = ChildProcess::start("backfill_child_process", "backfill", db.url(), None);
    let done_at_crash = first.progress_at_least(5_000);
    first.kill();
    child::until_no_advisory_lock(&pool).await;

    let (checkpoint, committed): (Option<Vec<String>>, i64) = sqlx::query_as(
        "SELECT checkpoint, rows_done FROM pgevolve.steps WHERE kind = 'add_backfilled_column'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let checkpoint = checkpoint.expect("a checkpoint was committed with the batches");
    assert!(checkpoint[0].parse::<i64>().unwrap() >= 5_000 - 500);
    assert!(
        done_at_crash <= committed && committed < 50_000,
        "the kill came midway: {done_at_crash} reported, {committed} committed"
    );
    let filled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email_normalized IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        filled, committed,
        "the rows filled are exactly those the committed checkpoint counts"
    );

    // Second process: the leader lock died with the first one's session, so this one takes
    // over from the checkpoint.
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<User>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let rows_done: i64 = sqlx::query_scalar(
        "SELECT rows_done FROM pgevolve.steps WHERE kind = 'add_backfilled_column'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(done_at_crash <= rows_done);
    assert_eq!(
        rows_done, 50_000,
        "every row filled exactly once across both runs"
    );
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE email_normalized IS DISTINCT FROM lower(email)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
}
