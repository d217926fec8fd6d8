//! Quickstart: a NOT NULL column computed from existing data is added to a busy 200,000-row
//! table while writers that do not know the column keep inserting and updating.
//!
//! Run with `cargo run -p quickstart`. With `DATABASE_URL` set, a fresh database is created on
//! that server; without it, a throwaway PostgreSQL is started from the installed binaries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgevolve::{DeployWindow, Evolve, Evolver, Phase};
use pgevolve_testkit::TestDatabase;
use sqlx::PgPool;

/// The struct as the new build declares it: `email_normalized` is new.
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
    println!("database: {}", db.url());

    sqlx::raw_sql(
        "CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, email text NOT NULL)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("INSERT INTO users (name, email) SELECT 'user ' || g, 'User' || g || '@Example.COM' FROM generate_series(1, $1) g")
        .bind(ROWS)
        .execute(&pool)
        .await?;
    println!("created users with {ROWS} rows");

    println!("\n{}", User::plan());

    // Writers built before the change: plain SQL that knows nothing of email_normalized.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(write_loop(
                pool.clone(),
                w,
                stop.clone(),
                writes.clone(),
                slowest.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<User>()
        .boot()
        .await?;
    println!(
        "expand done in {:?}: column, NOT VALID check and fill trigger are in place",
        started.elapsed()
    );
    while !evolution.is_finished() {
        for p in evolution.progress().iter().filter(|p| p.rows_estimated > 0) {
            let pct = 100.0 * p.rows_done as f64 / p.rows_estimated as f64;
            println!(
                "  backfill {}: {} / ~{} rows ({pct:.0}%), {:.0} rows/s, {} writes so far",
                p.table,
                p.rows_done,
                p.rows_estimated,
                p.rows_per_second,
                writes.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    evolution.wait().await?;
    println!("backfill and validate done in {:?}", started.elapsed());

    // The new build (which writes email_normalized itself) is everywhere now: contract.
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await??;
    }
    evolution.contract().await?;
    println!("contract done in {:?}", started.elapsed());
    for p in evolution.progress() {
        assert!(p.phase >= Phase::Expand);
        println!("  step {} {}: {}", p.step, p.description, p.phase);
    }

    let schema: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute \
         WHERE attrelid = 'users'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .fetch_all(&pool)
    .await?;
    println!("\nfinal schema of users:");
    for (name, ty, not_null) in schema {
        println!(
            "  {name:<18} {ty:<8} {}",
            if not_null { "NOT NULL" } else { "NULL" }
        );
    }
    let (total, wrong): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE email_normalized IS DISTINCT FROM lower(email)) FROM users",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "\n{total} rows, {wrong} differ from lower(email); {} concurrent writes, slowest {:?}",
        writes.load(Ordering::Relaxed),
        Duration::from_micros(slowest.load(Ordering::Relaxed))
    );
    if wrong != 0 {
        return Err("some rows are not filled".into());
    }
    println!("every row is filled");
    Ok(())
}

async fn write_loop(
    pool: PgPool,
    w: u64,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    slowest: Arc<AtomicU64>,
) -> Result<(), sqlx::Error> {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let email = format!("Writer{w}.{n}@Example.ORG");
        let t = Instant::now();
        if n.is_multiple_of(2) {
            sqlx::query("INSERT INTO users (name, email) VALUES ('writer', $1)")
                .bind(&email)
                .execute(&pool)
                .await?;
        } else {
            let id = 1 + ((n * 7919 + w * 104_729) % ROWS as u64) as i64;
            sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
                .bind(&email)
                .bind(id)
                .execute(&pool)
                .await?;
        }
        slowest.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        writes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
