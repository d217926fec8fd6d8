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
pub const DROPPED: Symbol = Symbol("dropped");

// Field level.
pub const PRIMARY_KEY: Symbol = Symbol("primary_key");
pub const COLUMN: Symbol = Symbol("column");
pub const SQL_TYPE: Symbol = Symbol("sql_type");
pub const BACKFILL: Symbol = Symbol("backfill");
pub const DEFAULT: Symbol = Symbol("default");
pub const RENAMED_FROM: Symbol = Symbol("renamed_from");
pub const GENERATED: Symbol = Symbol("generated");
pub const SET_NOT_NULL: Symbol = Symbol("set_not_null");
pub const DROP_NOT_NULL: Symbol = Symbol("drop_not_null");
pub const SET_DEFAULT: Symbol = Symbol("set_default");
pub const TYPE_FROM: Symbol = Symbol("type_from");
pub const USING: Symbol = Symbol("using");
pub const DOWN: Symbol = Symbol("down");
pub const BACKFILL_WITH: Symbol = Symbol("backfill_with");
pub const INPUTS: Symbol = Symbol("inputs");

// Indexes and constraints: `index` and `check` on both levels, the rest on fields.
pub const INDEX: Symbol = Symbol("index");
pub const CHECK: Symbol = Symbol("check");
pub const UNIQUE: Symbol = Symbol("unique");
pub const REFERENCES: Symbol = Symbol("references");
pub const ON_DELETE: Symbol = Symbol("on_delete");

// Inside `index(..)` and `check(..)`.
pub const NAME: Symbol = Symbol("name");
pub const COLUMNS: Symbol = Symbol("columns");
pub const METHOD: Symbol = Symbol("method");
pub const WHERE: Symbol = Symbol("where");
pub const INCLUDE: Symbol = Symbol("include");
pub const EXPR: Symbol = Symbol("expr");

/// Keys accepted on the struct, in the order error messages list them.
pub const STRUCT_KEYS: &[Symbol] = &[TABLE, SCHEMA, CRATE, INDEX, CHECK, DROPPED, RENAMED_FROM];

/// Keys accepted on a field, in the order error messages list them.
pub const FIELD_KEYS: &[Symbol] = &[
    PRIMARY_KEY,
    GENERATED,
    COLUMN,
    SQL_TYPE,
    BACKFILL,
    BACKFILL_WITH,
    INPUTS,
    DEFAULT,
    RENAMED_FROM,
    SET_NOT_NULL,
    DROP_NOT_NULL,
    SET_DEFAULT,
    TYPE_FROM,
    USING,
    DOWN,
    INDEX,
    UNIQUE,
    REFERENCES,
    ON_DELETE,
    CHECK,
];

/// Keys of `index(..)` on the struct.
pub const STRUCT_INDEX_KEYS: &[Symbol] = &[NAME, COLUMNS, UNIQUE, METHOD, WHERE, INCLUDE];

/// Keys of `index(..)` on a field (the field is the column).
pub const FIELD_INDEX_KEYS: &[Symbol] = &[NAME, UNIQUE, METHOD, WHERE, INCLUDE];

/// Keys of `check(..)`.
pub const CHECK_KEYS: &[Symbol] = &[NAME, EXPR];

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
