//! Errors: what happened, on which step and table, and what to do.

use std::fmt;
use std::sync::Arc;

/// `Result` with pgevolve's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the runtime. [`Error::kind`] tells what went wrong.
#[derive(Debug)]
pub struct Error {
    kind: Box<ErrorKind>,
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.kind)
    }
}

impl<E: Into<ErrorKind>> From<E> for Error {
    fn from(kind: E) -> Self {
        Error {
            kind: Box::new(kind.into()),
        }
    }
}

/// The kinds of [`Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The live database does not match what the plan expects. Nothing was changed.
    #[error("the database does not match the models; nothing was changed:\n{}", list(.0))]
    Drift(Vec<DriftProblem>),

    /// The leader lock was lost while this instance led the background work: it stopped before
    /// its next batch or phase, so that no work runs twice.
    #[error(
        "this instance lost the leader lock: {reason}. It stopped its background work before the \
         next batch; the instance that holds the lock now goes on from the checkpoint"
    )]
    LeadershipLost {
        /// What was found.
        reason: String,
    },

    /// The server is older than PostgreSQL 13; nothing was changed.
    #[error(
        "PostgreSQL {} is not supported: pgevolve needs PostgreSQL 13 or later (13 to 18 are tested). \
         Nothing was changed; upgrade the server",
        version_text(*version)
    )]
    UnsupportedServer {
        /// `server_version_num`, e.g. `120015`.
        version: i32,
    },

    /// The pool's connections go through a transaction pooler, and no direct connection was
    /// given for the runtime's session work ([`Evolver::direct`](crate::Evolver::direct)).
    /// Found before anything was changed.
    #[error(
        "the pool's connections go through a transaction pooler (PgBouncer with pool_mode = \
         transaction or statement, RDS Proxy, ...): {evidence}. The runtime's leader and boot \
         locks, LISTEN and concurrent index builds need server sessions of their own: give it a \
         direct connection to the same database with Evolver::direct(<connect options with the \
         server's own host and port, not the pooler's>), or boot on a pool with direct \
         connections. Nothing was changed"
    )]
    TransactionPooler {
        /// What showed that client connections do not keep their server session.
        evidence: String,
    },

    /// [`Evolver::direct`](crate::Evolver::direct)'s connections reach another database than
    /// the application's pool. Found before anything was changed.
    #[error(
        "Evolver::direct's connections reach database {direct}, but the application's pool \
         reaches {pooled}: give Evolver::direct the direct address of the pool's database. \
         Nothing was changed"
    )]
    DirectElsewhere {
        /// The application's pool's database and its server's start time.
        pooled: String,
        /// The direct connections' database and their server's start time.
        direct: String,
    },

    /// A statement could not get its lock within `lock_timeout` on any attempt, or waited for
    /// long lock holders until `DdlOptions::deadline`.
    #[error(
        "step {step} ({phase}) on table {table}: could not get a lock within lock_timeout after {attempts} attempts \
         and {waited_secs:.1} s in all; nothing of this phase was applied. Held the lock while it waited: {held}. \
         Blocking now: {blockers}. End or wait for the blocking session, then boot again"
    )]
    LockTimeout {
        /// The step.
        step: String,
        /// The phase that was running.
        phase: String,
        /// `schema.table`.
        table: String,
        /// Lock requests made (time spent waiting for long holders costs none).
        attempts: u32,
        /// Seconds spent on the group in all, waiting for long holders included.
        waited_secs: f64,
        /// The sessions holding locks on the table at the last attempt: pid, role and lock
        /// modes always; state, transaction and query start and query text when this role may
        /// see them (its own sessions, or membership in `pg_read_all_stats`), else a note that
        /// they are hidden.
        blockers: String,
        /// Who held (or queued for) a lock on the table while the group waited, the longest
        /// first: pid, what it was, its lock modes, and for how long it held the lock (its
        /// transaction's age when last seen, at least how long it was seen), read whenever
        /// the executor waited for a long holder and after each attempt that timed out, so
        /// holders that were gone by the deadline are named too.
        held: String,
    },

    /// A step's data check failed (e.g. the backfill expression gave NULL for some rows).
    #[error("step {step} ({phase}) on table {table}: {message}")]
    Verification {
        /// The step.
        step: String,
        /// The phase.
        phase: String,
        /// `schema.table`.
        table: String,
        /// What was found and what to do.
        message: String,
    },

    /// A step cannot move to the requested phase yet.
    #[error("step {step} on table {table} is in phase {phase}: {message}")]
    NotReady {
        /// The step.
        step: String,
        /// `schema.table`.
        table: String,
        /// The phase it completed.
        phase: String,
        /// What it is waiting for.
        message: String,
    },

    /// [`BackfillOptions::skip_user_triggers`](crate::BackfillOptions::skip_user_triggers) is on
    /// and a backfill is to run, but the role may not set `session_replication_role`. Checked at
    /// boot before any DDL: nothing was changed.
    #[error(
        "BackfillOptions::skip_user_triggers is on and {tables} has a backfill to run, but role {role} \
         may not set session_replication_role ({reason}); nothing was changed. {remedy}"
    )]
    TriggerSkipDenied {
        /// The role the pool connects as.
        role: String,
        /// The tables with a pending backfill (`schema.table`, comma-separated).
        tables: String,
        /// What PostgreSQL said.
        reason: String,
        /// What to grant, or to turn the option off.
        remedy: String,
    },

    /// The role the pool connects as lacks privileges the plan needs. Checked at boot before
    /// any DDL: nothing was changed. Each entry says which privilege, on what, what for, and
    /// the statement that gives it; the message lists those statements, ready to run in `psql`
    /// as the objects' owner or a superuser.
    #[error(
        "role {} lacks privileges this evolution needs; nothing was changed. Run these statements \
         as the objects' owner or a superuser, then boot again:\n{}",
        crate::ident::Ident(role),
        statements(missing)
    )]
    PrivilegesMissing {
        /// The role the pool connects as.
        role: String,
        /// What it lacks, in the order pgevolve would need it.
        missing: Vec<crate::privileges::MissingPrivilege>,
    },

    /// A statement failed for another reason.
    #[error("step {step} ({phase}) on table {table}: {source}")]
    Statement {
        /// The step.
        step: String,
        /// The phase.
        phase: String,
        /// `schema.table`.
        table: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },

    /// The function of a backfill computed in Rust (`backfill_with`) panicked on a batch. The
    /// batch wrote nothing and the checkpoint stays before it; the background work stops, and
    /// the next boot starts again from the checkpoint.
    #[error(
        "step {step} (backfill) on table {table}: the backfill function {function} panicked on the batch of rows \
         with keys {first_key} to {last_key}: {message}. Nothing of the batch was written and the backfill stopped \
         at its checkpoint; fix the function (or those rows), then deploy and boot again"
    )]
    BackfillFunctionPanicked {
        /// The step.
        step: String,
        /// `schema.table`.
        table: String,
        /// The function's path as written in `backfill_with`.
        function: String,
        /// The first and last primary key of the batch, as text.
        first_key: String,
        /// See `first_key`.
        last_key: String,
        /// The panic's message.
        message: String,
    },

    /// A concurrent index build failed (cancelled, connection lost, ...). What was done with the
    /// INVALID index it left is part of the message.
    #[error("step {step} ({phase}) on table {table}: building index {index} failed: {message}")]
    IndexBuild {
        /// The step.
        step: String,
        /// The phase.
        phase: String,
        /// `schema.table`.
        table: String,
        /// The index.
        index: String,
        /// What happened, and what was done about the INVALID index.
        message: String,
        /// The build's session was lost (or the server was restarting): the background work
        /// tries again by itself (see [`Error::is_transient`]).
        connection_lost: bool,
    },

    /// An accessor ran for a model that no evolution booted in this process.
    #[error(
        "model {model} was not booted in this process for the database of this call, so its accessors cannot \
         tell which columns exist; \
         call Evolver::new(pool).model::<{model}>().boot() at startup"
    )]
    NotBooted {
        /// The struct name.
        model: String,
    },

    /// An accessor call without a pool, while this process evolves the model on several
    /// databases: which one the call is for cannot be told.
    #[error(
        "model {model} is evolved on several databases in this process ({databases}), and this call \
         does not say which one it is for: pass the pool (`&pool`), or tie the connection or \
         transaction to its evolution with `evolution.on(&mut *conn)`"
    )]
    AmbiguousDatabase {
        /// The struct name.
        model: String,
        /// The databases whose evolution knows the model.
        databases: String,
    },

    /// A destructive phase was asked for outside the deploy window; nothing was changed.
    #[error(
        "step {step} on table {table}: {phase} is destructive and the deploy window ({}) is closed now ({}); \
         it {}. Everything else keeps running. For an emergency, use contract_overriding_window(reason)",
        closed.window, closed.now, closed.opens
    )]
    OutsideDeployWindow {
        /// The step.
        step: String,
        /// `schema.table`.
        table: String,
        /// The phase refused.
        phase: String,
        /// When the window opens next.
        closed: crate::window::Closed,
    },

    /// `insert_many` got more rows than one statement can carry.
    #[error(
        "insert_many got {rows} rows but one statement takes at most {max} for this model; split the slice with chunks({max})"
    )]
    TooManyRows {
        /// Rows given.
        rows: usize,
        /// Rows one statement can take.
        max: usize,
    },

    /// No step of the evolution's models has this id.
    #[error("no step {step} in the models of this evolution; see plan() for the step ids")]
    UnknownStep {
        /// The id asked for.
        step: String,
    },

    /// The background work of an evolution failed.
    #[error("the background work of the evolution failed: {0}")]
    Background(Arc<Error>),

    /// A database error outside any step (connecting, reading the catalog or the state store).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// One way the live database differs from what a model expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftProblem {
    /// `schema.table`.
    pub table: String,
    /// The column, when the problem is about one.
    pub column: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for DriftProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "{}.{}: {}", self.table, c, self.message),
            None => write!(f, "{}: {}", self.table, self.message),
        }
    }
}

/// One statement a line, indented, with no list marker: the block pastes into `psql` as it is.
fn statements(missing: &[crate::privileges::MissingPrivilege]) -> String {
    missing
        .iter()
        .map(|m| format!("  {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn list(problems: &[DriftProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `120015` as `12.15`.
fn version_text(version: i32) -> String {
    format!("{}.{}", version / 10_000, version % 10_000)
}
