//! `pgevolve`: the operator's view of a pgevolve evolution, from the state store alone (no
//! application code needed). See the README's section "Operating a migration: the `pgevolve`
//! CLI" for every command, the exit codes, and how requests reach the instances.
//!
//! Exit codes: 0 done; 1 the operation failed (a request failed on its instance, `doctor`
//! found a failing check); 2 usage, connection, no state store, unknown step; 3 a request was
//! not finished within `--timeout`.

mod doctor;
mod error;
mod render;
mod request;
mod status;
mod store;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use error::CliError;
use store::Store;

/// Operate pgevolve migrations: status, plan, history, pause/resume, switch, contract, abort,
/// watch, doctor.
#[derive(Debug, Parser)]
#[command(name = "pgevolve", version, about, long_about = None)]
struct Cli {
    /// The database the application evolves.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    url: Option<String>,

    /// The schema of pgevolve's state store (the application's `Evolver::state_schema`).
    #[arg(
        long,
        env = "PGEVOLVE_STATE_SCHEMA",
        default_value = "pgevolve",
        global = true
    )]
    state_schema: String,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every step with its phase and progress, the leader, live instances and their
    /// acknowledgements, and anything blocking.
    Status {
        /// Seconds over which a running backfill's rate is measured (0: no rate, no wait).
        #[arg(long, default_value_t = 1.0)]
        sample: f64,
    },
    /// The recorded plan: every step's phases with their SQL and the lock each takes.
    Plan {
        /// Only this step (id or unique prefix).
        step: Option<String>,
    },
    /// The journal: who did what to which step, and when (oldest first).
    History {
        /// Only this step (id or unique prefix).
        #[arg(long)]
        step: Option<String>,
        /// The last N entries.
        #[arg(long, default_value_t = 200)]
        limit: i64,
    },
    /// Stop the background work before its next backfill batch or phase (every step, or one).
    Pause {
        /// The step (id or unique prefix); every step when left out.
        step: Option<String>,
        /// Why, for the journal.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Lift a pause (every pause, or the pause of one step).
    Resume {
        /// The step (id or unique prefix); every pause when left out.
        step: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Move reads to the new shape (a rename's switch phase), for every validated step or one.
    Switch {
        /// The step (id or unique prefix); every step when left out.
        step: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Run the destructive contract phase (inside the deploy window, or overriding it).
    Contract {
        /// The step (id or unique prefix); every validated step when left out.
        step: Option<String>,
        /// Run outside the deploy window; the reason is recorded in the journal.
        #[arg(long, value_name = "REASON")]
        override_window: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Undo a step that has not been contracted; the table goes back to what it was.
    Abort {
        /// The step (id or unique prefix).
        step: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Live progress bars until the background work is done.
    Watch {
        /// Seconds between two looks.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Checks of the server and the role: version, privileges, poolers, long transactions,
    /// INVALID indexes, replication lag.
    Doctor {
        /// A transaction open longer than this many seconds is reported.
        #[arg(long, default_value_t = 60)]
        long_transaction: u64,
        /// Replication lag above this many seconds is reported.
        #[arg(long, default_value_t = 10)]
        max_lag: u64,
    },
}

/// How a request command waits for its outcome.
#[derive(Debug, Clone, Args)]
struct Wait {
    /// Return once the request is recorded, without waiting for an instance.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for an instance to carry the request out.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Who asks, for the journal (default: the OS user and the database role).
    #[arg(long)]
    requested_by: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::FAILED);
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(error::OK),
        Err(e) => {
            eprintln!("error: {e}");
            // A failed request printed its outcome already.
            if json && !matches!(e, CliError::RequestFailed { .. }) {
                println!(
                    "{}",
                    serde_json::json!({"error": e.to_string(), "exit_code": e.exit_code()})
                );
            }
            ExitCode::from(e.exit_code())
        }
    }
}

async fn connect(cli: &Cli) -> Result<Store, CliError> {
    let url = cli.url.as_deref().ok_or(CliError::NoUrl)?;
    let options: PgConnectOptions = url.parse().map_err(|source| CliError::BadUrl { source })?;
    let options = options.application_name("pgevolve cli");
    let conn = tokio::time::timeout(Duration::from_secs(10), options.connect())
        .await
        .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
        .map_err(|source| CliError::Connect { source })?;
    Ok(Store {
        conn,
        schema: cli.state_schema.clone(),
    })
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let mut store = connect(&cli).await?;
    let json = cli.json;
    match &cli.command {
        Command::Status { sample } => status::status(&mut store, *sample, json).await,
        Command::Plan { step } => status::plan(&mut store, step.as_deref(), json).await,
        Command::History { step, limit } => {
            status::history(&mut store, step.as_deref(), *limit, json).await
        }
        Command::Watch { interval } => status::watch(&mut store, *interval, json).await,
        Command::Doctor {
            long_transaction,
            max_lag,
        } => {
            let options = cli.url.as_deref().unwrap_or_default().parse().ok();
            doctor::doctor(&mut store, options, *long_transaction, *max_lag, json).await
        }
        Command::Pause { step, reason, wait } => {
            let asked = request::Asked::pause(step.as_deref(), reason.as_deref());
            request::request(&mut store, asked, wait, json).await
        }
        Command::Resume { step, wait } => {
            let asked = request::Asked::resume(step.as_deref());
            request::request(&mut store, asked, wait, json).await
        }
        Command::Switch { step, wait } => {
            let asked = request::Asked::switch(step.as_deref());
            request::request(&mut store, asked, wait, json).await
        }
        Command::Contract {
            step,
            override_window,
            wait,
        } => {
            let asked = request::Asked::contract(step.as_deref(), override_window.as_deref());
            request::request(&mut store, asked, wait, json).await
        }
        Command::Abort { step, wait } => {
            let asked = request::Asked::abort(step);
            request::request(&mut store, asked, wait, json).await
        }
    }
}
