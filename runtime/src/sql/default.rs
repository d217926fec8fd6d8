//! The statement of a changed default (`#[evolve(set_default = "...")]`): metadata only, no
//! rewrite and no scan, whatever the expression (a default applies to rows written later).

use super::{Statement, table};
use crate::ident::Ident;
use crate::spec::ModelSpec;

/// `ALTER COLUMN ... SET DEFAULT`: a brief ACCESS EXCLUSIVE lock, under lock_timeout.
pub(crate) fn set_default(model: &ModelSpec, column: &str, expr: &str) -> Vec<Statement> {
    vec![Statement::always(format!(
        "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {expr}",
        table(model),
        Ident(column)
    ))]
}
