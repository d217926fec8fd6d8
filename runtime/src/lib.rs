//! Runtime of [pgevolve](https://docs.rs/pgevolve): turns the model a struct declares into phased,
//! lock-safe steps and walks them against a live PostgreSQL while the application keeps serving.
//!
//! Data flows one way: [`ModelSpec`] (emitted by `#[derive(Evolve)]`) → [`Plan`] (steps, phases,
//! SQL) → executor (statements under `lock_timeout`, with retries) → state store (schema
//! `pgevolve`) → [`Evolution`] (progress, contract). Use it through the `pgevolve` facade crate.

mod access;
mod backfill;
mod batch_gate;
mod catalog;
mod clock;
mod column_type;
mod computed;
mod concurrent;
mod constraints;
mod coordinator;
mod error;
pub mod estimate;
mod evolver;
mod executor;
mod failpoint;
mod health;
mod health_follower;
mod ident;
mod kinds;
mod lease;
mod model;
mod options;
mod paced_count;
mod pacing;
mod plan;
mod pooler;
mod privileges;
mod progress;
mod registry;
mod resolve;
mod spec;
mod sql;
mod state;
mod statement;
mod step;
pub mod telemetry;
mod transient;
mod window;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use access::{EvolvedExecutor, FromEvolvedRow, On, RunStatement, Scope, Select};
pub use clock::{Clock, NOW_ENV, ParseClockError, PinnedClock, SystemClock, default_clock};
pub use column_type::ColumnType;
pub use coordinator::DEFAULT_HEARTBEAT_TIMEOUT;
pub use error::{DriftProblem, Error, ErrorKind, Result};
pub use estimate::{BackfillEstimate, FillRate};
pub use evolver::{Evolution, Evolver};
pub use model::Evolve;
pub use options::{BackfillOptions, DdlOptions, HealthBounds};
pub use plan::{BatchTriggers, Plan, PlannedPhase, PlannedStep, UserTrigger};
pub use privileges::{MissingPrivilege, ObjectKind, Privilege};
pub use progress::StepProgress;
pub use spec::{
    CheckSpec, ColumnSpec, ComputeFn, Computed, EnumSpec, Fill, ForeignKeySpec, IndexMethod,
    IndexSpec, ModelSpec, OnDelete, SetNotNull, TypeChange,
};
pub use state::{JournalEntry, StepStatus};
pub use step::{Phase, StepId, StepKind};
pub use window::{Closed, DeployWindow, ParseWeekdayError, Weekday};
