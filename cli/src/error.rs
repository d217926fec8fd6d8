//! What can go wrong, each with what happened, where, and what to do; and the exit code it
//! gives (see [`CliError::exit_code`]).

use thiserror::Error;

/// Exit code: the command did what it was asked.
pub const OK: u8 = 0;
/// Exit code: the operation failed (a request failed on the instance that ran it, `doctor`
/// found a failing check, a query of the state store failed).
pub const FAILED: u8 = 1;
/// Exit code: bad usage, no connection, no state store, or a step that does not exist.
pub const USAGE: u8 = 2;
/// Exit code: a request was not finished within `--timeout` (no live instance took it, or the
/// one that took it is still working).
pub const NOT_DONE: u8 = 3;

/// An error of the `pgevolve` CLI, shown with its `Display` text.
#[derive(Debug, Error)]
pub enum CliError {
    /// No `--url` and no `DATABASE_URL`.
    #[error(
        "no database given: pass --url postgres://... or set DATABASE_URL (the database the application evolves)"
    )]
    NoUrl,

    /// The URL does not parse.
    #[error("the database URL does not parse: {source}")]
    BadUrl {
        /// Why.
        source: sqlx::Error,
    },

    /// The server cannot be reached.
    #[error(
        "cannot connect to the database: {source}; check --url (or DATABASE_URL) and that the server runs"
    )]
    Connect {
        /// Why.
        source: sqlx::Error,
    },

    /// No state store in the schema.
    #[error(
        "no pgevolve state store in schema \"{schema}\" of this database: no application using pgevolve has booted \
         against it yet, or it uses another state schema (pass --state-schema)"
    )]
    NoStateStore {
        /// The schema looked in.
        schema: String,
    },

    /// A state store of a version without the tables a command needs.
    #[error(
        "the state store in schema \"{schema}\" has no {table} table: it was created by an older pgevolve; \
         boot the application with this version once (the boot upgrades the store), then try again"
    )]
    OldStateStore {
        /// The schema.
        schema: String,
        /// The missing table.
        table: &'static str,
    },

    /// A query failed.
    #[error("reading {what} failed: {source}")]
    Query {
        /// What was being read or written.
        what: &'static str,
        /// Why.
        source: sqlx::Error,
    },

    /// No recorded step matches.
    #[error(
        "no step matches \"{given}\" in the state store; `pgevolve status` lists the steps and their ids"
    )]
    UnknownStep {
        /// What was given.
        given: String,
    },

    /// Several recorded steps match a prefix.
    #[error("\"{given}\" matches several steps ({matches}); give more of the id")]
    AmbiguousStep {
        /// What was given.
        given: String,
        /// The ids it matches.
        matches: String,
    },

    /// The instance that carried a request out reported a failure.
    #[error("request #{id} ({action}) failed on instance {instance}: {message}")]
    RequestFailed {
        /// The request.
        id: i64,
        /// Its action.
        action: String,
        /// The instance that ran it.
        instance: String,
        /// The error's `Display` text, as the instance recorded it.
        message: String,
    },

    /// No live instance took a request within the timeout; it was cancelled.
    #[error(
        "no live instance picked up request #{id} ({action}) within {waited} s; is the application running? \
         {what_now}"
    )]
    NotPickedUp {
        /// The request.
        id: i64,
        /// Its action.
        action: String,
        /// Seconds waited.
        waited: u64,
        /// What became of the request.
        what_now: &'static str,
    },

    /// An instance took a request but has not finished it within the timeout.
    #[error(
        "request #{id} ({action}) is still being carried out by instance {instance} after {waited} s \
         (a contract waits for the background work and for every live instance's acknowledgement); \
         follow it with `pgevolve history` or `pgevolve status`"
    )]
    StillRunning {
        /// The request.
        id: i64,
        /// Its action.
        action: String,
        /// The instance working on it.
        instance: String,
        /// Seconds waited.
        waited: u64,
    },

    /// `doctor` found failing checks.
    #[error("doctor: {failed} check(s) failed: {names}")]
    DoctorFailed {
        /// How many.
        failed: usize,
        /// Their names.
        names: String,
    },
}

impl CliError {
    /// The process's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NoUrl
            | CliError::BadUrl { .. }
            | CliError::Connect { .. }
            | CliError::NoStateStore { .. }
            | CliError::OldStateStore { .. }
            | CliError::UnknownStep { .. }
            | CliError::AmbiguousStep { .. } => USAGE,
            CliError::NotPickedUp { .. } | CliError::StillRunning { .. } => NOT_DONE,
            CliError::Query { .. }
            | CliError::RequestFailed { .. }
            | CliError::DoctorFailed { .. } => FAILED,
        }
    }
}

/// Wraps a query error with what was being read.
pub trait Reading<T> {
    /// `Err` becomes [`CliError::Query`] naming `what`.
    fn reading(self, what: &'static str) -> Result<T, CliError>;
}

impl<T> Reading<T> for Result<T, sqlx::Error> {
    fn reading(self, what: &'static str) -> Result<T, CliError> {
        self.map_err(|source| CliError::Query { what, source })
    }
}
