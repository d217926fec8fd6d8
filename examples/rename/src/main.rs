//! Renaming a hot column: `customers.name` becomes `full_name` while a writer built before the
//! change (raw SQL on `name`) and one built after it (the generated accessors) keep writing.
//! Every phase is printed as it happens, then the final schema.
//!
//! Run with `cargo run -p rename` (a throwaway PostgreSQL, or `DATABASE_URL`'s server).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgevolve::{DeployWindow, Evolve, Evolver};
use pgevolve_testkit::TestDatabase;
use sqlx::PgPool;

/// The new build's struct: `full_name` used to be `name`.
#[derive(Evolve, Debug, Clone)]
#[evolve(table = "customers")]
struct Customer {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(renamed_from = "name")]
    full_name: String,
    country: String,
}

const ROWS: i64 = 100_000;

/// Prints an error with its `Display` text (a `main` returning `Err` would print `Debug`) and
/// exits with status 1.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let db = TestDatabase::new().await?;
    let pool = db.pool(20).await?;
    sqlx::raw_sql(
        "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, country text NOT NULL);
         INSERT INTO customers SELECT g, 'Customer ' || g, 'FR' FROM generate_series(1, 100000) g;",
    )
    .execute(&pool)
    .await?;
    println!("customers: {ROWS} rows, column `name`\n");
    println!("{}", Customer::plan());

    let started = Instant::now();
    let say = |what: &str| println!("[{:>7.2}s] {what}", started.elapsed().as_secs_f64());

    let stop_old = Arc::new(AtomicBool::new(false));
    let old_writes = Arc::new(AtomicU64::new(0));
    let old = tokio::spawn(old_binary(
        pool.clone(),
        stop_old.clone(),
        old_writes.clone(),
    ));

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Customer>()
        .boot()
        .await?;
    say("expand: full_name added, sync trigger and compatibility view in place");
    say(&format!(
        "  accessors read {}",
        Customer::read_expr("full_name")?.unwrap_or_default()
    ));

    let stop_new = Arc::new(AtomicBool::new(false));
    let new_writes = Arc::new(AtomicU64::new(0));
    let new = tokio::spawn(new_binary(
        pool.clone(),
        stop_new.clone(),
        new_writes.clone(),
    ));

    evolution.wait().await?;
    say("backfill and validate: every row copied, no row differs between name and full_name");
    evolution.switch().await?;
    say(&format!(
        "switch: accessors read {}",
        Customer::read_expr("full_name")?.unwrap_or_default()
    ));

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_old.store(true, Ordering::Relaxed);
    old.await??;
    say("old binaries retired (they were the last to write `name`)");
    evolution.contract().await?;
    say(
        "contract: accessors stopped writing name; trigger, view and name dropped; NOT NULL enforced",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_new.store(true, Ordering::Relaxed);
    new.await??;

    println!(
        "\n{} writes by the old binary, {} by the new one, none failed",
        old_writes.load(Ordering::Relaxed),
        new_writes.load(Ordering::Relaxed)
    );
    let schema: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute \
         WHERE attrelid = 'customers'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .fetch_all(&pool)
    .await?;
    println!("final schema of customers:");
    for (name, ty, not_null) in schema {
        println!(
            "  {name:<10} {ty:<7} {}",
            if not_null { "NOT NULL" } else { "NULL" }
        );
    }
    let sample = Customer::find(&42, &pool).await?;
    println!("Customer::find(42) = {sample:?}");
    Ok(())
}

/// A binary built before the rename: it knows only `name`.
async fn old_binary(
    pool: PgPool,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) -> Result<(), sqlx::Error> {
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        sqlx::query("UPDATE customers SET name = $1 WHERE id = $2")
            .bind(format!("Old writer {n}"))
            .bind(1 + (n * 7919) % ROWS)
            .execute(&pool)
            .await?;
        writes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A binary built after it: only the generated accessors.
async fn new_binary(
    pool: PgPool,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) -> Result<(), pgevolve::Error> {
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if n % 4 == 0 {
            Customer {
                id: ROWS + n,
                full_name: format!("New customer {n}"),
                country: "DE".into(),
            }
            .insert(&pool)
            .await?;
        } else if let Some(mut c) = Customer::find(&(1 + (n * 104_729) % ROWS), &pool).await? {
            c.full_name = format!("New writer {n}");
            c.update(&pool).await?;
        }
        writes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
