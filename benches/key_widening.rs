//! What widening an `integer` primary key to `bigint` (with the foreign key that references it)
//! costs a live workload, side by side with the plain way.
//!
//! ```sh
//! cargo bench --bench key_widening -- --rows 1000000
//! ```
//!
//! Two runs on databases of the benchmark server (`support::db`), each seeded the same way:
//! `accounts(id serial primary key, name text)` with `--rows` rows and `payments(id bigserial,
//! account_id integer not null references accounts, amount integer)` with as many rows, indexed
//! on `account_id`, while `--clients` clients loop over: `INSERT` of an account, `INSERT` of a
//! payment to a random account, `UPDATE` of a random payment, `UPDATE` of a random account's
//! name, `SELECT` of a random account. Every operation's latency is recorded under the phase
//! active when it started; the longest one is the phase's stall.
//!
//! - **pgevolve**: `#[evolve(primary_key, type_from = "integer")] id: i64`: boot (expand),
//!   backfill and validate (unthrottled), switch, contract (the key swap);
//! - **plain**: `ALTER TABLE payments ALTER COLUMN account_id TYPE bigint` and `ALTER TABLE
//!   accounts ALTER COLUMN id TYPE bigint` in one transaction (rewrites both tables and their
//!   indexes under ACCESS EXCLUSIVE).
//!
//! Output: a markdown report on stdout. BENCHMARKS.md ("int → bigint primary key") has figures.

#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, DeployWindow, Evolve, Evolver};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sqlx::PgPool;

use support::db::{Result, Server, Template};

const USAGE: &str = "\
usage: cargo bench --bench key_widening -- [flags]

  --rows N       rows in accounts, and in payments (default 1000000)
  --clients N    concurrent clients (default 4)
  --settle S     seconds of workload before and after each migration (default 3)
";

/// Longest stall the target allows during the key swap.
const STALL_TARGET_MS: f64 = 100.0;

/// The new build's key table.
#[derive(Evolve, Debug, Clone)]
#[evolve(table = "accounts")]
pub struct Account {
    #[evolve(primary_key, type_from = "integer")]
    pub id: i64,
    pub name: String,
}

struct Args {
    rows: i64,
    clients: usize,
    settle: Duration,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        rows: 1_000_000,
        clients: 4,
        settle: Duration::from_secs(3),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rows" => {
                args.rows = value()?
                    .replace(['_', ','], "")
                    .parse()
                    .map_err(|e| format!("--rows: {e}"))?
            }
            "--clients" => {
                args.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?
            }
            "--settle" => {
                args.settle =
                    Duration::from_secs_f64(value()?.parse().map_err(|e| format!("--settle: {e}"))?)
            }
            "--bench" => {}
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

async fn seed(pool: &PgPool, rows: i64) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);
         CREATE TABLE payments (
             id bigserial PRIMARY KEY,
             account_id integer NOT NULL REFERENCES accounts (id),
             amount integer NOT NULL
         );",
    )
    .execute(pool)
    .await?;
    sqlx::query("INSERT INTO accounts (name) SELECT 'account ' || g FROM generate_series(1, $1) g")
        .bind(rows)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO payments (account_id, amount) SELECT 1 + (g * 7919) % $1, g % 1000 FROM generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(pool)
    .await?;
    for sql in [
        "CREATE INDEX payments_account_id_idx ON payments (account_id)",
        "VACUUM ANALYZE accounts",
        "VACUUM ANALYZE payments",
    ] {
        sqlx::query(sql).execute(pool).await?;
    }
    Ok(())
}

/// Phases of a run, as the workload tags its operations.
struct Load {
    phase: AtomicUsize,
    stop: AtomicBool,
    /// Per phase: longest latency (µs), operations, failures.
    longest: Vec<AtomicU64>,
    ops: Vec<AtomicU64>,
    failed: Vec<AtomicU64>,
    first_error: std::sync::Mutex<Option<String>>,
}

const PHASES: usize = 8;

impl Load {
    fn new() -> Arc<Load> {
        let v = || (0..PHASES).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Load {
            phase: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            longest: v(),
            ops: v(),
            failed: v(),
            first_error: std::sync::Mutex::new(None),
        })
    }
}

fn start_clients(
    pool: &PgPool,
    load: &Arc<Load>,
    clients: usize,
    rows: i64,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (pool, load) = (pool.clone(), load.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(0x6b65_7900 + c as u64);
                while !load.stop.load(Ordering::Acquire) {
                    let phase = load.phase.load(Ordering::Acquire);
                    let id: i64 = rng.random_range(1..=rows);
                    let started = Instant::now();
                    let outcome = match rng.random_range(0..5u32) {
                        0 => sqlx::query("INSERT INTO accounts (name) VALUES ($1)")
                            .bind(format!("client {c}"))
                            .execute(&pool)
                            .await
                            .map(|_| ()),
                        1 => sqlx::query(
                            "INSERT INTO payments (account_id, amount) VALUES ($1::bigint, $2)",
                        )
                        .bind(id)
                        .bind(c as i32)
                        .execute(&pool)
                        .await
                        .map(|_| ()),
                        2 => sqlx::query("UPDATE payments SET amount = amount + 1 WHERE id = $1")
                            .bind(id)
                            .execute(&pool)
                            .await
                            .map(|_| ()),
                        3 => sqlx::query("UPDATE accounts SET name = $1 WHERE id = $2::bigint")
                            .bind(format!("renamed by {c}"))
                            .bind(id)
                            .execute(&pool)
                            .await
                            .map(|_| ()),
                        _ => sqlx::query("SELECT name FROM accounts WHERE id = $1::bigint")
                            .bind(id)
                            .fetch_optional(&pool)
                            .await
                            .map(|_| ()),
                    };
                    let us = started.elapsed().as_micros() as u64;
                    match outcome {
                        Ok(()) => {
                            load.ops[phase].fetch_add(1, Ordering::Relaxed);
                            load.longest[phase].fetch_max(us, Ordering::Relaxed);
                        }
                        Err(e) => {
                            load.failed[phase].fetch_add(1, Ordering::Relaxed);
                            load.longest[phase].fetch_max(us, Ordering::Relaxed);
                            let mut first = load.first_error.lock().unwrap();
                            if first.is_none() {
                                *first = Some(e.to_string());
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

/// One phase of a run as reported.
struct Row {
    run: &'static str,
    phase: &'static str,
    seconds: f64,
    ops: u64,
    failed: u64,
    longest_ms: f64,
}

async fn run_pgevolve(pool: &PgPool, args: &Args, load: &Arc<Load>) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let names = [
        "before",
        "expand (boot)",
        "backfill + validate",
        "switch",
        "contract (key swap)",
        "after",
    ];
    let mut times = Vec::new();
    let mut mark = Instant::now();
    let mut next = |i: usize, times: &mut Vec<f64>| {
        times.push(mark.elapsed().as_secs_f64());
        mark = Instant::now();
        load.phase.store(i, Ordering::Release);
    };
    tokio::time::sleep(args.settle).await;
    next(1, &mut times);
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .backfill_options(BackfillOptions::unthrottled())
        .model::<Account>()
        .boot()
        .await?;
    next(2, &mut times);
    evolution.wait().await?;
    next(3, &mut times);
    evolution.switch().await?;
    next(4, &mut times);
    evolution.contract().await?;
    next(5, &mut times);
    tokio::time::sleep(args.settle).await;
    times.push(mark.elapsed().as_secs_f64());
    for (i, name) in names.iter().enumerate() {
        rows.push(row("pgevolve", name, times[i], load, i));
    }
    Ok(rows)
}

async fn run_plain(pool: &PgPool, args: &Args, load: &Arc<Load>) -> Result<Vec<Row>> {
    tokio::time::sleep(args.settle).await;
    let before = args.settle.as_secs_f64();
    load.phase.store(1, Ordering::Release);
    let t = Instant::now();
    sqlx::raw_sql(
        "BEGIN;
         ALTER TABLE payments ALTER COLUMN account_id TYPE bigint;
         ALTER TABLE accounts ALTER COLUMN id TYPE bigint;
         ALTER SEQUENCE accounts_id_seq AS bigint;
         COMMIT;",
    )
    .execute(pool)
    .await?;
    let altered = t.elapsed().as_secs_f64();
    load.phase.store(2, Ordering::Release);
    tokio::time::sleep(args.settle).await;
    Ok(vec![
        row("plain", "before", before, load, 0),
        row(
            "plain",
            "ALTER COLUMN ... TYPE bigint (both tables)",
            altered,
            load,
            1,
        ),
        row("plain", "after", args.settle.as_secs_f64(), load, 2),
    ])
}

fn row(run: &'static str, phase: &'static str, seconds: f64, load: &Load, i: usize) -> Row {
    Row {
        run,
        phase,
        seconds,
        ops: load.ops[i].load(Ordering::Relaxed),
        failed: load.failed[i].load(Ordering::Relaxed),
        longest_ms: load.longest[i].load(Ordering::Relaxed) as f64 / 1000.0,
    }
}

async fn one_run(
    server: &mut Server,
    template: &Template,
    args: &Args,
    plain: bool,
) -> Result<(Vec<Row>, Option<String>)> {
    let db = server.copy(template).await?;
    let pool = db.pool(args.clients as u32 + 8).await?;
    let load = Load::new();
    let clients = start_clients(&pool, &load, args.clients, args.rows);
    let outcome = if plain {
        run_plain(&pool, args, &load).await
    } else {
        run_pgevolve(&pool, args, &load).await
    };
    load.stop.store(true, Ordering::Release);
    for c in clients {
        let _ = c.await;
    }
    let error = load.first_error.lock().unwrap().clone();
    pool.close().await;
    server.drop_database(&db.name).await?;
    Ok((outcome?, error))
}

async fn run_all(args: &Args, server: &mut Server) -> Result<()> {
    // The template: a database seeded once, copied by both runs.
    let empty = server.create_template(1).await?;
    let seeded = server.copy(&empty).await?;
    let t = Instant::now();
    {
        let pool = seeded.pool(2).await?;
        seed(&pool, args.rows).await?;
        pool.close().await;
    }
    let seed_seconds = t.elapsed().as_secs_f64();
    let template = Template {
        name: seeded.name.clone(),
        rows: args.rows,
        seed_seconds,
    };
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for plain in [false, true] {
        let (rows, error) = one_run(server, &template, args, plain).await?;
        all.extend(rows);
        if let Some(e) = error {
            errors.push(format!("{}: {e}", if plain { "plain" } else { "pgevolve" }));
        }
    }
    let settings: Vec<(String, String)> = server.describe().await.unwrap_or_default();
    println!(
        "## int → bigint primary key: {} rows in accounts and in payments, {} clients\n",
        args.rows, args.clients
    );
    for (k, v) in &settings {
        println!("- {k}: {v}");
    }
    println!("- seed: {seed_seconds:.1} s\n");
    println!("| run | phase | seconds | operations | failed | longest stall (ms) |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in &all {
        println!(
            "| {} | {} | {:.1} | {} | {} | {:.1} |",
            r.run, r.phase, r.seconds, r.ops, r.failed, r.longest_ms
        );
    }
    let swap = all
        .iter()
        .find(|r| r.run == "pgevolve" && r.phase.starts_with("contract"))
        .map(|r| r.longest_ms)
        .unwrap_or(f64::NAN);
    let worst = all
        .iter()
        .filter(|r| r.run == "pgevolve")
        .map(|r| r.longest_ms)
        .fold(0.0, f64::max);
    let plain = all
        .iter()
        .find(|r| r.run == "plain" && r.phase.starts_with("ALTER"))
        .map(|r| r.longest_ms)
        .unwrap_or(f64::NAN);
    println!(
        "\nkey swap longest stall: {swap:.1} ms (target ≤ {STALL_TARGET_MS} ms: {}); longest stall of any pgevolve phase: {worst:.1} ms; \
         plain ALTER: {plain:.1} ms ({:.0}× the key swap)",
        if swap <= STALL_TARGET_MS {
            "PASS"
        } else {
            "FAIL"
        },
        plain / swap.max(0.001)
    );
    for e in errors {
        println!("\nfirst workload error, {e}");
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    support::main_with(USAGE, parse_args(), run_all).await;
}
