//! Not public API: the only items `#[derive(Evolve)]` expansions may name. No semver guarantees;
//! the facade pins this crate with an exact version so a mismatched pair fails to compile.

pub use crate::column_type::ColumnType;
pub use crate::model::Evolve;
pub use crate::spec::{ColumnSpec, Fill, ModelSpec};
pub use ::core::option::Option;
