//! A boot with nothing pending, in round trips and time, against a bare `SELECT 1` on the same
//! pool.
//!
//! ```sh
//! cargo bench --bench boot
//! ```
//!
//! `users` (10,000 rows) is evolved to the end first (boot, backfill, validate, contract), so
//! every later boot of the same model finds nothing to do. Then:
//!
//! - **time**: `boot()` on a plain sqlx pool of the database, many times, against `SELECT 1` on
//!   the same pool;
//! - **round trips**: the same boots on a pool whose connections go through a proxy on
//!   127.0.0.1 that reads the PostgreSQL protocol (`support/proxy.rs`): a round trip is each
//!   time the client sends after the server has answered, i.e. each time it had to wait.
//!   Connection startups and sqlx's pool pings (a lone `Sync` when the pool hands out an idle
//!   connection, `test_before_acquire`, on by default) are counted apart and included in the
//!   total the target is judged on. Between boots the benchmark waits until the proxy has
//!   seen nothing for 50 ms, so that one boot's background (its coordinator, started after
//!   `boot()` returns on the fast path and stopped when the evolution is dropped) does not land
//!   in the next boot's count.
//!
//! Results: markdown on stdout and `target/bench-results/boot.{json,md}`.

#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use pgevolve::{DeployWindow, Evolve, Evolver};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

use support::db::{Result, Server};
use support::model::User;
use support::proxy::{Counts, Proxy};
use support::report::{self, Table, Target, Verdict, num};
use support::stats::round;

const USAGE: &str = "\
usage: cargo bench --bench boot -- [--boots N] [--selects N]

  --boots N     measured boots per pool (default 30)
  --selects N   measured SELECT 1 (default 2000)
";

/// Round trips the target allows for a boot with nothing pending.
const ROUND_TRIP_TARGET: u64 = 3;

struct Args {
    boots: usize,
    selects: usize,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        boots: 30,
        selects: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut count = |flag: &str| -> std::result::Result<usize, String> {
            let v = it.next().ok_or(format!("{flag} needs a value"))?;
            v.parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{flag}: not a positive number: {v}"))
        };
        match arg.as_str() {
            "--bench" => {}
            "--boots" => args.boots = count("--boots")?,
            "--selects" => args.selects = count("--selects")?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn pool_options() -> PgPoolOptions {
    // sqlx's defaults (test_before_acquire included), as a service would have them.
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(60))
}

/// Median, 90th percentile and minimum of durations, in milliseconds.
fn summary(mut xs: Vec<f64>) -> Value {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    json!({
        "n": xs.len(),
        "min_ms": round(at(0.0), 3),
        "median_ms": round(at(0.5), 3),
        "p90_ms": round(at(0.9), 3),
        "max_ms": round(at(1.0), 3),
    })
}

fn median_u64(mut xs: Vec<u64>) -> u64 {
    xs.sort_unstable();
    xs[xs.len() / 2]
}

/// One measured boot: its time, and the time until its background work finished.
async fn boot_once(pool: &PgPool) -> Result<(f64, f64)> {
    let t = Instant::now();
    let evolution = Evolver::new(pool.clone()).model::<User>().boot().await?;
    let booted = t.elapsed().as_secs_f64() * 1000.0;
    evolution.wait().await?;
    let done = t.elapsed().as_secs_f64() * 1000.0;
    drop(evolution);
    quiet(pool).await?;
    Ok((booted, done))
}

/// Waits (untimed) until no instance is registered: the coordinator of the last boot, which a
/// fast boot starts in the background and which stops when its evolution is dropped, is gone
/// and takes no CPU from the next timed boot (one boot per process, as in a deploy).
async fn quiet(pool: &PgPool) -> Result<()> {
    for _ in 0..1000 {
        let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM pgevolve.instances")
            .fetch_one(pool)
            .await?;
        if registered == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn select_once(pool: &PgPool) -> Result<f64> {
    let t = Instant::now();
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(pool).await?;
    debug_assert_eq!(one, 1);
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Round trips of each boot through the proxy: until `boot()` returned, and until the
/// background work finished.
async fn counted_boots(pool: &PgPool, proxy: &Proxy, n: usize) -> Result<Vec<(Counts, Counts)>> {
    let mut out = Vec::new();
    for _ in 0..n {
        settle(proxy).await;
        let c0 = proxy.counts();
        let evolution = Evolver::new(pool.clone()).model::<User>().boot().await?;
        let c1 = proxy.counts();
        evolution.wait().await?;
        drop(evolution);
        settle(proxy).await;
        out.push((c1.since(c0), proxy.counts().since(c0)));
    }
    Ok(out)
}

/// Lets the previous boot's last messages pass (leader connection closed, pool release pings,
/// and the coordinator the boot started, which stops once its evolution is dropped; after a
/// fast boot it starts in the background, after `boot()` returned): waits until the proxy has
/// counted nothing new for 50 ms, at most 5 s.
async fn settle(proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = proxy.counts();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = proxy.counts();
        if now == last || Instant::now() >= deadline {
            return;
        }
        last = now;
    }
}

/// The statements of one boot, until it returns and then until its background work finished.
async fn recorded_boot(pool: &PgPool, proxy: &Proxy) -> Result<(Vec<String>, Vec<String>)> {
    settle(proxy).await;
    proxy.record();
    let evolution = Evolver::new(pool.clone()).model::<User>().boot().await?;
    let booting = proxy.recorded();
    proxy.record();
    evolution.wait().await?;
    drop(evolution);
    settle(proxy).await;
    Ok((booting, proxy.recorded()))
}

/// What pgevolve itself costs: statements' round trips and connection startups, without the
/// pool's pings.
fn own_round_trips(c: &Counts) -> u64 {
    c.round_trips - c.pings + c.startup_round_trips
}

#[tokio::main]
async fn main() {
    support::main_with(USAGE, parse_args(), run).await;
}

async fn run(args: &Args, server: &mut Server) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run `cargo bench` for optimized figures");
    }
    let machine = report::machine();
    let settings = server.describe().await?;
    let template = server.create_template(10_000).await?;
    let options: PgConnectOptions = server.options(&template.name);

    // Evolve to the end: afterwards every boot of the same model has nothing to do.
    let pool = pool_options().connect_with(options.clone()).await?;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<User>()
        .boot()
        .await?;
    evolution.contract().await?;
    drop(evolution);
    let pending: Vec<String> = User::plan().steps.iter().map(|s| s.describe()).collect();

    // Time, on the plain pool.
    boot_once(&pool).await?;
    let mut boots = Vec::new();
    let mut backgrounds = Vec::new();
    for _ in 0..args.boots {
        let (b, d) = boot_once(&pool).await?;
        boots.push(b);
        backgrounds.push(d);
    }
    for _ in 0..100 {
        select_once(&pool).await?;
    }
    let mut selects = Vec::new();
    for _ in 0..args.selects {
        selects.push(select_once(&pool).await?);
    }
    pool.close().await;

    // Round trips, through the counting proxy.
    let proxy = Proxy::start(options.get_host().to_string(), options.get_port()).await?;
    let proxied = options
        .clone()
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .ssl_mode(PgSslMode::Disable);
    let ppool = pool_options().connect_with(proxied).await?;
    let first = counted_boots(&ppool, &proxy, 1).await?;
    let counted = counted_boots(&ppool, &proxy, args.boots.min(10)).await?;
    let (boot_log, background_log) = recorded_boot(&ppool, &proxy).await?;
    let mut select_counts = Vec::new();
    for _ in 0..20 {
        settle(&proxy).await;
        let c0 = proxy.counts();
        select_once(&ppool).await?;
        settle(&proxy).await;
        select_counts.push(proxy.counts().since(c0));
    }
    ppool.close().await;

    let median_of = |f: &dyn Fn(&Counts) -> u64, which: usize| {
        median_u64(
            counted
                .iter()
                .map(|c| f(if which == 0 { &c.0 } else { &c.1 }))
                .collect(),
        )
    };
    let median_counts = |rows: &[Counts]| Counts {
        connections: median_u64(rows.iter().map(|c| c.connections).collect()),
        startup_round_trips: median_u64(rows.iter().map(|c| c.startup_round_trips).collect()),
        round_trips: median_u64(rows.iter().map(|c| c.round_trips).collect()),
        pings: median_u64(rows.iter().map(|c| c.pings).collect()),
        statements: median_u64(rows.iter().map(|c| c.statements).collect()),
    };
    let select_median_counts = median_counts(&select_counts);
    let own = median_of(&own_round_trips, 0);
    let boot_ms = summary(boots);
    let select_ms = summary(selects);
    let background_ms = summary(backgrounds);
    let boot_median = boot_ms["median_ms"].as_f64().unwrap_or(f64::NAN);
    let select_median = select_ms["median_ms"].as_f64().unwrap_or(f64::NAN);

    let target = Target {
        target: "boot with nothing pending: ≤ 3 round trips".into(),
        measured: format!(
            "{own} round trips until boot() returns (median of {}): {} for statements, {} for connection startups; \
             sqlx's pool pings add {} more",
            counted.len(),
            median_of(&|c| c.round_trips - c.pings, 0),
            median_of(&|c| c.startup_round_trips, 0),
            median_of(&|c| c.pings, 0),
        ),
        verdict: Verdict::of(own <= ROUND_TRIP_TARGET),
        note: if own <= ROUND_TRIP_TARGET {
            String::new()
        } else {
            format!(
                "missed by {} round trips ({}×)",
                own - ROUND_TRIP_TARGET,
                num(own as f64 / ROUND_TRIP_TARGET as f64, 1)
            )
        },
    };

    let mut md = String::new();
    md.push_str("## boot: a boot with nothing pending\n\n");
    md.push_str(&format!(
        "Machine: {} ({} cores), {} build. PostgreSQL {}. Model `User` (steps: {}), every step contracted.\n\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["build"].as_str().unwrap_or("?"),
        settings
            .iter()
            .find(|(k, _)| k == "server_version")
            .map(|(_, v)| v.as_str())
            .unwrap_or("?"),
        pending.join("; "),
    ));
    let mut t = Table::new(&["", "median ms", "p90 ms", "min ms", "× SELECT 1"]);
    for (what, s) in [
        ("`SELECT 1`", &select_ms),
        ("`boot()` until it returns", &boot_ms),
        (
            "`boot()` until its background work finished",
            &background_ms,
        ),
    ] {
        t.row(vec![
            what.to_string(),
            num(s["median_ms"].as_f64().unwrap_or(f64::NAN), 3),
            num(s["p90_ms"].as_f64().unwrap_or(f64::NAN), 3),
            num(s["min_ms"].as_f64().unwrap_or(f64::NAN), 3),
            num(
                s["median_ms"].as_f64().unwrap_or(f64::NAN) / select_median,
                1,
            ),
        ]);
    }
    md.push_str(&t.render());
    md.push_str("\nRound trips (median over the counted boots; the first boot on a fresh pool apart). \
        Pool pings: sqlx's pool sends a lone `Sync` when it hands out an idle connection (waited for) \
        and another when the connection comes back (in the background).\n\n");
    let mut t = Table::new(&[
        "",
        "round trips (statements + startups)",
        "statements' round trips",
        "connection startups",
        "connections opened",
        "pool pings",
        "statements",
    ]);
    let mut row = |what: String, c: Counts| {
        t.row(vec![
            what,
            own_round_trips(&c).to_string(),
            (c.round_trips - c.pings).to_string(),
            c.startup_round_trips.to_string(),
            c.connections.to_string(),
            c.pings.to_string(),
            c.statements.to_string(),
        ]);
    };
    row("`SELECT 1`".into(), select_median_counts);
    let boots_until = |which: usize| -> Vec<Counts> {
        counted
            .iter()
            .map(|c| if which == 0 { c.0 } else { c.1 })
            .collect()
    };
    row(
        "`boot()` until it returns".into(),
        median_counts(&boots_until(0)),
    );
    row(
        "`boot()` until its background work finished".into(),
        median_counts(&boots_until(1)),
    );
    if let Some((b, d)) = first.first() {
        row("first boot on a fresh pool, until it returns".into(), *b);
        row(
            "first boot on a fresh pool, until background finished".into(),
            *d,
        );
    }
    md.push_str(&t.render());
    md.push_str("\nWhat one boot sends, in order (`prepare`: Parse, a round trip of its own the first time a connection sees the statement; `execute`: Bind/Execute of a prepared statement; `simple`: a simple query; `ping`: the pool's):\n\n");
    for line in &boot_log {
        md.push_str(&format!("1. `{line}`\n"));
    }
    md.push_str("\nThen, in the background task:\n\n");
    for line in &background_log {
        md.push_str(&format!("1. `{line}`\n"));
    }
    md.push_str(&format!(
        "\n`boot()` median {} ms = {}× `SELECT 1` ({} ms).\n\n### Target\n\n",
        num(boot_median, 2),
        num(boot_median / select_median, 1),
        num(select_median, 3)
    ));
    md.push_str(&report::targets_table(std::slice::from_ref(&target)));

    let counts_json = |c: &Counts| {
        json!({
            "round_trips_statements_and_startups": own_round_trips(c),
            "all_round_trips": c.all_round_trips(), "round_trips": c.round_trips, "pings": c.pings,
            "connections": c.connections, "startup_round_trips": c.startup_round_trips,
            "statements": c.statements,
        })
    };
    let json = json!({
        "benchmark": "boot",
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine,
        "server": settings.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "model_steps": pending,
        "time": {"select_1": select_ms, "boot": boot_ms, "boot_and_background": background_ms,
                 "boot_vs_select_1": round(boot_median / select_median, 2)},
        "round_trips": {
            "select_1": counts_json(&select_median_counts),
            "statements_of_one_boot": boot_log,
            "statements_of_its_background_work": background_log,
            "boots": counted.iter().map(|(b, d)| json!({"until_boot_returns": counts_json(b),
                "until_background_finished": counts_json(d)})).collect::<Vec<_>>(),
            "first_boot_fresh_pool": first.first().map(|(b, d)| json!({"until_boot_returns": counts_json(b),
                "until_background_finished": counts_json(d)})),
        },
        "targets": [target.json()],
    });
    println!("{md}");
    let (j, m) = report::write_results("boot", &json, &md);
    eprintln!("results: {} and {}", j.display(), m.display());
    Ok(())
}
