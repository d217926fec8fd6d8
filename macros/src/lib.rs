//! The `#[derive(Evolve)]` macro of [pgevolve](https://docs.rs/pgevolve). Use it through the
//! `pgevolve` crate, which re-exports it next to the runtime the generated code calls into.
//!
//! Pipeline: `ast` (typed view of the input, attributes parsed by `attr`, the values with a
//! syntax of their own by `value`) → `validate`
//! (compile-time rules) → `expand` (tokens). Errors go to a `ctxt::Ctxt` so that one build
//! reports all of them; on error `fallback` emits them with a stub impl.

mod ast;
mod attr;
mod ctxt;
mod enums;
mod expand;
mod fallback;
mod symbol;
mod validate;
mod value;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Derives `pgevolve::Evolve`: the table a struct maps to, as a `const` spec the runtime plans
/// from. See the `pgevolve` crate for the attribute reference.
///
/// `#[evolve(dropped("legacy_flag", ...))]` on the struct (repeatable) names columns the table
/// has and the struct no longer maps, to drop: NOT NULL is relaxed at boot (so inserts that
/// leave the column out work), the column is dropped at contract once every live instance runs
/// a build without it. Removing a field alone never drops its column. A dropped name must be a
/// valid identifier of at most 63 bytes, and neither a field's column nor the old column of a
/// rename.
///
/// `#[evolve(primary_key, type_from = "integer")]` on an `i64` key widens an `integer` (or
/// `smallint`) primary key to `bigint` with every column that references it through a
/// single-column foreign key, found in the catalog. A field of another model (or the same one)
/// whose column references such a key is declared `i64` with `type_from = "integer"` and
/// `references = "table(key)"`: the key's step widens it, and its accessors follow that step
/// (`using` and `down` are refused on it). Any other declaration of such a column is reported
/// at boot, before any DDL, with the one to write. A multi-column foreign key to the key and a
/// partitioned key or referencing table are refused at boot, before any DDL.
///
/// `#[evolve(backfill_with = "path::to::function", inputs("a", "b"))]` on a `T` field adds a
/// NOT NULL column whose value, for existing rows and rows old builds write, is computed in Rust:
/// `function(a, b) -> T`, each argument with its field's type, in the order of `inputs`. The
/// derive emits an adapter the runtime's backfill calls over batches of rows, and the accessors
/// call the function themselves for a row whose column is still `NULL`. A function whose
/// arguments or result do not match is reported at the `backfill_with` literal. See "Backfills
/// computed in Rust" in the `pgevolve` README for how rows old builds write are covered.
#[proc_macro_derive(Evolve, attributes(evolve))]
pub fn derive_evolve(input: TokenStream) -> TokenStream {
    derive_evolve_inner(input.into()).into()
}

/// The derive on `proc_macro2` tokens, callable from unit tests.
fn derive_evolve_inner(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    match syn::parse2::<syn::DeriveInput>(input) {
        Ok(input) => expand::derive(&input),
        Err(err) => err.into_compile_error(),
    }
}

/// Derives `pgevolve::ColumnType` for a Rust enum mapped to a PostgreSQL enum type, so that a
/// field of its type in a struct deriving `Evolve` brings the type's steps with it: the type
/// created when missing (before the table or column), each label it lacks added at boot with
/// `ALTER TYPE ... ADD VALUE IF NOT EXISTS ... AFTER ...`.
///
/// The type's name is `#[evolve(type_name = "...")]` or sqlx's `#[sqlx(type_name = "...")]`
/// (the same, when both are written); its schema `#[evolve(schema = "...")]` (default
/// `public`). Labels are the variants' names under sqlx's `rename_all` and `rename`, in variant
/// order, so they are the labels sqlx encodes. Removing a value (`#[evolve(removed("x"))]`) is
/// refused with the safe alternative: a new type through a type change.
#[proc_macro_derive(EvolveEnum, attributes(evolve))]
pub fn derive_evolve_enum(input: TokenStream) -> TokenStream {
    match syn::parse::<syn::DeriveInput>(input) {
        Ok(input) => enums::derive(&input).into(),
        Err(err) => err.into_compile_error().into(),
    }
}
