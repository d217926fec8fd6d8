//! pgevolve: zero-downtime schema evolution for PostgreSQL, declared on Rust structs.

pub use pgevolve_macros::{Evolve, EvolveEnum};
pub use pgevolve_runtime::*;

#[doc(hidden)]
pub use pgevolve_runtime::__private;
