//! hot_table: the pgevolve side of the `users` evolution measured by `benches/under_load.rs`, as
//! a program you drive phase by phase while your own load generator (pgbench included, see
//! `examples/hot_table/README.md`) keeps the table busy.
//!
//! ```sh
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/hot
//! cargo run --release -p hot_table -- setup --rows 1000000   # the old table, seeded
//! cargo run --release -p hot_table -- expand                 # or backfill, switch, contract, all
//! ```
//!
//! Phases: `setup` creates and seeds `users` as the old build has it; `plan` prints the plan;
//! `expand` boots (runs expand) and exits; `backfill` boots and waits for the backfills, the
//! validations and the concurrent index build; `switch` moves the accessors' reads to
//! `full_name`; `contract` runs the gated contract (retire `name`, NOT NULL, helpers dropped);
//! `all` does expand to contract in one go.

#[allow(dead_code)]
mod model;

use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, Evolution, Evolve, Evolver};
use sqlx::postgres::PgPoolOptions;

use model::{STEPS, Support, User};

const USAGE: &str = "usage: hot_table <setup|plan|expand|backfill|switch|contract|all> \
                     [--rows N] [--unthrottled] [--lock-timeout-ms MS] [--override-window REASON]\n\
                     DATABASE_URL names the database (required except for `plan`).";

struct Args {
    phase: String,
    rows: i64,
    unthrottled: bool,
    lock_timeout: Duration,
    override_window: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        phase: String::new(),
        rows: 1_000_000,
        unthrottled: false,
        lock_timeout: Duration::from_secs(2),
        override_window: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--rows" => {
                let v = value("--rows")?;
                args.rows = v
                    .replace(['_', ','], "")
                    .parse()
                    .map_err(|_| format!("--rows: not a number: {v}"))?;
            }
            "--unthrottled" => args.unthrottled = true,
            "--override-window" => args.override_window = Some(value("--override-window")?),
            "--lock-timeout-ms" => {
                let v = value("--lock-timeout-ms")?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("--lock-timeout-ms: not a number: {v}"))?;
                args.lock_timeout = Duration::from_millis(ms);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            p if args.phase.is_empty() && !p.starts_with('-') => args.phase = p.to_string(),
            other => return Err(format!("unexpected argument `{other}`\n{USAGE}")),
        }
    }
    if args.phase.is_empty() {
        return Err(USAGE.to_string());
    }
    Ok(args)
}

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
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if args.phase == "plan" {
        println!("{}", User::plan());
        print_missing_steps();
        return Ok(());
    }
    let url =
        std::env::var("DATABASE_URL").map_err(|_| format!("DATABASE_URL is not set\n{USAGE}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await?;

    let started = Instant::now();
    match args.phase.as_str() {
        "setup" => setup(&pool, args.rows).await?,
        "expand" => {
            boot(&pool, &args).await?;
            println!(
                "expand done in {:?}: full_name (with its sync trigger and compatibility view) and \
                 email_normalized (with its fill trigger) are in place, each with a NOT VALID check.\n\
                 The background work (backfills, validation, the concurrent index build) started and \
                 stops with this program: `hot_table backfill` resumes it from its last committed batch.",
                started.elapsed()
            );
        }
        "backfill" => {
            let evolution = boot(&pool, &args).await?;
            wait_with_progress(&evolution).await?;
            println!(
                "backfill, validate and the index build done in {:?}",
                started.elapsed()
            );
            print_status(&evolution).await?;
        }
        "switch" => {
            let evolution = boot(&pool, &args).await?;
            wait_with_progress(&evolution).await?;
            evolution.switch().await?;
            println!(
                "switch done in {:?}: the accessors of every instance read full_name; writes still \
                 go to name and full_name, so builds that know only `name` keep working",
                started.elapsed()
            );
            print_status(&evolution).await?;
        }
        "contract" => {
            let evolution = boot(&pool, &args).await?;
            contract(&evolution, &args).await?;
            println!("contract done in {:?}", started.elapsed());
            print_status(&evolution).await?;
        }
        "all" => {
            let evolution = boot(&pool, &args).await?;
            println!("expand done in {:?}", started.elapsed());
            wait_with_progress(&evolution).await?;
            println!(
                "backfill, validate and index done in {:?}",
                started.elapsed()
            );
            evolution.switch().await?;
            println!("switch done in {:?}", started.elapsed());
            contract(&evolution, &args).await?;
            println!("contract done in {:?}", started.elapsed());
            print_status(&evolution).await?;
        }
        other => {
            eprintln!("unknown phase `{other}`\n{USAGE}");
            std::process::exit(2);
        }
    }
    print_missing_steps();
    Ok(())
}

/// Contract: `name` dropped, NOT NULL enforced, helpers dropped. Only inside the deploy window
/// (not on Fridays or weekends by default) unless `--override-window` gives a reason.
async fn contract(evolution: &Evolution, args: &Args) -> pgevolve::Result<()> {
    match &args.override_window {
        Some(reason) => evolution.contract_overriding_window(reason).await,
        None => evolution.contract().await,
    }
}

/// Creates `users` as the old build has it, with `rows` rows (skipped when it holds rows).
async fn setup(pool: &sqlx::PgPool, rows: i64) -> Result<(), sqlx::Error> {
    sqlx::query(model::CREATE_TABLE).execute(pool).await?;
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1) t")
        .fetch_one(pool)
        .await?;
    if present > 0 {
        println!("users already holds rows: left as it is");
        return Ok(());
    }
    let t = Instant::now();
    sqlx::query(model::SEED).bind(rows).execute(pool).await?;
    sqlx::query("VACUUM ANALYZE users").execute(pool).await?;
    println!("users created with {rows} rows in {:?}", t.elapsed());
    Ok(())
}

async fn boot(pool: &sqlx::PgPool, args: &Args) -> pgevolve::Result<Evolution> {
    let backfill = if args.unthrottled {
        BackfillOptions::unthrottled()
    } else {
        BackfillOptions::default()
    };
    Evolver::new(pool.clone())
        .model::<User>()
        .lock_timeout(args.lock_timeout)
        .backfill_options(backfill)
        .boot()
        .await
}

async fn wait_with_progress(evolution: &Evolution) -> pgevolve::Result<()> {
    let mut last = Instant::now();
    while !evolution.is_finished() {
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            for p in evolution.progress().iter().filter(|p| p.rows_estimated > 0) {
                println!(
                    "  {}: {} / ~{} rows, {:.0} rows/s (phase done: {})",
                    p.description, p.rows_done, p.rows_estimated, p.rows_per_second, p.phase
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    evolution.wait().await
}

async fn print_status(evolution: &Evolution) -> pgevolve::Result<()> {
    for s in evolution.status().await? {
        println!(
            "  step {} ({}): {} done, {} rows filled",
            s.id, s.description, s.phase, s.rows_done
        );
    }
    Ok(())
}

fn print_missing_steps() {
    for step in STEPS.iter().filter(|s| s.support == Support::NotYet) {
        println!(
            "not run: {} ({}): pgevolve does not support `{}` yet",
            step.name, step.what, step.attribute
        );
    }
}
