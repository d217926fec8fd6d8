//! Shared by the benchmarks (`under_load`, `boot`): the server and its databases, the live
//! workload, per-phase statistics, a round-trip counting proxy, and the reports.

pub mod db;
pub mod proxy;
pub mod report;
pub mod stats;
pub mod waits;
pub mod workload;

/// The hot table and its evolution, the very file the `hot_table` example builds on.
#[path = "../../examples/hot_table/src/model.rs"]
pub mod model;

/// The `main` of a benchmark: arguments (or the usage text), logs on stderr, a server, the run,
/// and the server's clean-up whatever the run's outcome.
pub async fn main_with<A>(
    usage: &str,
    args: std::result::Result<A, String>,
    run: impl AsyncFnOnce(&A, &mut db::Server) -> db::Result<()>,
) {
    main_with_server(usage, args, |_| None, run).await
}

/// [`main_with`], on a durable server of its own when `durable(&args)` returns the settings to
/// add to the durable ones (see [`db::Server::start_durable`]); `None`: the testkit's server.
pub async fn main_with_server<A>(
    usage: &str,
    args: std::result::Result<A, String>,
    durable: impl FnOnce(&A) -> Option<Vec<String>>,
    run: impl AsyncFnOnce(&A, &mut db::Server) -> db::Result<()>,
) {
    let args = match args {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}\n");
            }
            eprint!("{usage}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut server = match db::Server::start_durable(durable(&args)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("no PostgreSQL server: {e}");
            std::process::exit(1);
        }
    };
    let outcome = run(&args, &mut server).await;
    server.cleanup().await;
    if let Err(e) = outcome {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}
