//! Every keyword of `#[evolve(..)]`, so no attribute name is spelled twice in the crate.

use std::fmt::{self, Display};
use syn::{Ident, Path};

/// An attribute keyword, comparable with the `Ident`/`Path` a user wrote.
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct Symbol(&'static str);

/// The attribute namespace: `#[evolve(..)]`.
pub const EVOLVE: Symbol = Symbol("evolve");

// Struct level.
pub const TABLE: Symbol = Symbol("table");
pub const SCHEMA: Symbol = Symbol("schema");
pub const CRATE: Symbol = Symbol("crate");

// Field level.
pub const PRIMARY_KEY: Symbol = Symbol("primary_key");
pub const COLUMN: Symbol = Symbol("column");
pub const SQL_TYPE: Symbol = Symbol("sql_type");
pub const BACKFILL: Symbol = Symbol("backfill");
pub const DEFAULT: Symbol = Symbol("default");
pub const RENAMED_FROM: Symbol = Symbol("renamed_from");

/// Keys accepted on the struct, in the order error messages list them.
pub const STRUCT_KEYS: &[Symbol] = &[TABLE, SCHEMA, CRATE];

/// Keys accepted on a field, in the order error messages list them.
pub const FIELD_KEYS: &[Symbol] = &[
    PRIMARY_KEY,
    COLUMN,
    SQL_TYPE,
    BACKFILL,
    DEFAULT,
    RENAMED_FROM,
];

impl Symbol {
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for &Ident {
    fn eq(&self, word: &Symbol) -> bool {
        *self == word.0
    }
}

impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl PartialEq<Symbol> for &Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl Display for Symbol {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(self.0)
    }
}

/// "`a`, `b` or `c`", for "expected one of" messages.
pub fn list(symbols: &[Symbol]) -> String {
    let quoted: Vec<String> = symbols.iter().map(|s| format!("`{s}`")).collect();
    quoted.join(", ")
}
