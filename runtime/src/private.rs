//! Not public API: the only items `#[derive(Evolve)]` expansions may name. No semver guarantees;
//! the facade pins this crate with an exact version so a mismatched pair fails to compile.

pub use crate::column_type::ColumnType;
pub use crate::model::Evolve;
pub use crate::spec::{
    CheckSpec, ColumnSpec, Fill, ForeignKeySpec, IndexMethod, IndexSpec, ModelSpec, OnDelete,
};
pub use ::core::option::Option;
