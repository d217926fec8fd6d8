//! Rules that can be decided at compile time, run after parsing and before any token is emitted.
//!
//! Each rule records its error in the [`Ctxt`] on the most specific token and the others still
//! run, so the user sees every mistake of the struct in one build.

use crate::ast::{Field, Model, Style};
use crate::attr::{Check, Index, Setting, Typed};
use crate::ctxt::Ctxt;
use crate::symbol;
use crate::value::{IndexMethod, OnDelete, References};
use pgevolve_naming::{MAX_IDENTIFIER_BYTES, normalized_type};
use quote::ToTokens;
use std::collections::{HashMap, HashSet};
use syn::{GenericParam, LitStr};

pub fn check(cx: &Ctxt, model: &Model) {
    if model.style != Style::Named {
        return;
    }
    check_generics(cx, model);
    check_table(cx, model);
    for field in &model.fields {
        check_field(cx, field);
    }
    check_duplicate_columns(cx, model);
    check_backfill_has_primary_key(cx, model);
    check_backfill_with(cx, model);
    check_renamed_twice(cx, model);
    check_indexes(cx, model);
    check_constraints(cx, model);
    check_dropped(cx, model);
    check_table_rename(cx, model);
}

/// `renamed_from = ".."` on the struct: a valid table name, other than the table's, and not
/// with a column rename (the old build names neither the new table nor the new column).
fn check_table_rename(cx: &Ctxt, model: &Model) {
    let Some(from) = &model.attrs.renamed_from else {
        return;
    };
    let name = from.value.value();
    if let Some(problem) = identifier_problem(&name) {
        let msg = if name.is_empty() {
            "the table's old name is empty; write it, like `renamed_from = \"clients\"`, or remove `renamed_from`"
                .to_string()
        } else {
            format!("invalid old table name `{name}`: {problem}")
        };
        cx.error_spanned_by(&from.value, msg);
        return;
    }
    if let Some(table) = &model.attrs.table
        && table.value.value() == name
    {
        cx.error_spanned_by(
            &from.value,
            format!(
                "the table is renamed from `{name}` to itself; write the table's previous name in \
                 `renamed_from`, or remove `renamed_from` if the table keeps its name"
            ),
        );
    }
    // What drops a column at its contract: the view reads every column until the table
    // rename's contract, and PostgreSQL refuses to drop a column a view depends on.
    let mut later: Vec<(&syn::Path, &str)> = Vec::new();
    for field in &model.fields {
        if let Some(column) = &field.attrs.renamed_from {
            later.push((&column.key, "a column rename"));
        }
        if let Some(change) = &field.attrs.type_from {
            later.push((&change.key, "a column type change"));
        }
    }
    for dropped in &model.attrs.dropped {
        later.push((&dropped.key, "a dropped column"));
    }
    for (key, what) in later {
        cx.error_spanned_by(
            key,
            format!(
                "{what} cannot ship with the table rename (`renamed_from = \"{name}\"` on the struct): \
                 the view under the old table name reads every column until the rename's contract, so \
                 the old column could not be dropped; deploy the table rename first and {what} in a later release"
            ),
        );
    }
}

/// `dropped(..)`: each name a valid column name, listed once, and not a column the struct still
/// maps (a field's column, or the old column of a rename, which the rename itself drops).
fn check_dropped(cx: &Ctxt, model: &Model) {
    let mut seen: HashSet<String> = HashSet::new();
    for dropped in &model.attrs.dropped {
        if dropped.list.is_empty() {
            cx.error_spanned_by(
                dropped.tokens(),
                "`dropped()` is empty; list the columns to drop, like `dropped(\"legacy_flag\")`, or remove it",
            );
        }
        for name_lit in &dropped.list {
            let name = name_lit.value();
            if name.is_empty() {
                cx.error_spanned_by(
                    name_lit,
                    "dropped column name is empty; write the name of the column to drop, like `dropped(\"legacy_flag\")`",
                );
                continue;
            }
            if let Some(problem) = identifier_problem(&name) {
                cx.error_spanned_by(
                    name_lit,
                    format!("invalid dropped column name `{name}`: {problem}"),
                );
                continue;
            }
            if let Some(field) = model.fields.iter().find(|f| f.column_name() == name) {
                cx.error_spanned_by(
                    name_lit,
                    format!(
                        "column `{name}` is marked dropped but field `{}` maps to it; remove the field \
                         to drop the column, or remove `{name}` from `dropped`",
                        field.rust_name()
                    ),
                );
                continue;
            }
            if let Some(field) = model.fields.iter().find(|f| {
                f.attrs
                    .renamed_from
                    .as_ref()
                    .is_some_and(|old| old.value.value() == name)
            }) {
                cx.error_spanned_by(
                    name_lit,
                    format!(
                        "column `{name}` is marked dropped but field `{}` is renamed from it, and the \
                         rename drops it at its contract; remove `{name}` from `dropped`",
                        field.rust_name()
                    ),
                );
                continue;
            }
            if !seen.insert(name.clone()) {
                cx.error_spanned_by(
                    name_lit,
                    format!("column `{name}` is marked dropped twice; list it once"),
                );
            }
        }
    }
}

/// Every index: options that PostgreSQL would reject, columns that are not columns of the
/// struct, and two indexes that would get the same name.
fn check_indexes(cx: &Ctxt, model: &Model) {
    let mut unnamed: HashSet<Vec<String>> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    let mut each = |index: &Index, field: Option<&Field>| {
        check_index_options(cx, model, index);
        let columns: Vec<String> = match (field, &index.columns) {
            (Some(field), _) => vec![field.column_name()],
            (None, Some(columns)) => {
                if columns.list.is_empty() {
                    cx.error_spanned_by(
                        columns.tokens(),
                        "`columns()` is empty; list the indexed columns in order, like `columns(\"email\")`",
                    );
                }
                for column in &columns.list {
                    check_is_column(cx, model, column);
                }
                columns.list.iter().map(LitStr::value).collect()
            }
            (None, None) => {
                let msg = match (&index.unique, &index.predicate) {
                    (Some(_), Some(predicate)) => format!(
                        "a unique partial index needs `columns(...)`: the columns that must be unique where \
                         `{}`, like `index(columns(\"email\"), unique, where = \"...\")`",
                        predicate.value.value()
                    ),
                    _ => "`index(...)` on the struct needs `columns(\"a\", ...)`, the indexed columns in order; \
                          to index one column, write `#[evolve(index)]` on its field"
                        .to_owned(),
                };
                cx.error_spanned_by(&index.key, msg);
                return;
            }
        };
        match &index.name {
            Some(name) => {
                check_identifier(cx, "index", name);
                if !names.insert(name.value.value()) {
                    cx.error_spanned_by(
                        &name.value,
                        format!(
                            "two indexes are named `{}`; give each index its own name",
                            name.value.value()
                        ),
                    );
                }
            }
            None if !columns.is_empty() && !unnamed.insert(columns.clone()) => {
                cx.error_spanned_by(
                    &index.key,
                    format!(
                        "another index on ({}) has no name either, so both would be named alike; give one of \
                         them `name = \"...\"`",
                        columns.join(", ")
                    ),
                );
            }
            None => {}
        }
    };
    for field in &model.fields {
        if let Some(index) = &field.attrs.index {
            each(index, Some(field));
        }
    }
    for index in &model.attrs.indexes {
        each(index, None);
    }
}

/// The options of one index that do not depend on its columns.
fn check_index_options(cx: &Ctxt, model: &Model, index: &Index) {
    let method = match index.method.as_ref().map(|m| &m.parsed) {
        Some(Ok(method)) => *method,
        Some(Err(err)) => {
            cx.syn_error(err.clone());
            return;
        }
        None => IndexMethod::Btree,
    };
    if let Some(unique) = &index.unique
        && method != IndexMethod::Btree
    {
        cx.error_spanned_by(
            unique,
            format!(
                "PostgreSQL builds unique indexes only with `btree`, not `{}`; remove `method` or `unique`",
                method.as_str()
            ),
        );
    }
    if let Some(include) = &index.include {
        if !matches!(method, IndexMethod::Btree | IndexMethod::Gist) {
            cx.error_spanned_by(
                &include.key,
                format!(
                    "`include` needs a `btree` or `gist` index, and this one is `{}`; remove `include` or \
                     `method`",
                    method.as_str()
                ),
            );
        }
        if include.list.is_empty() {
            cx.error_spanned_by(
                include.tokens(),
                "`include()` is empty; list the covered columns, like `include(\"name\")`, or remove it",
            );
        }
        for column in &include.list {
            check_is_column(cx, model, column);
        }
    }
    if let Some(predicate) = &index.predicate
        && predicate.value.value().trim().is_empty()
    {
        cx.error_spanned_by(
            &predicate.value,
            "`where` is empty; write the predicate of the partial index, like `where = \"deleted_at IS NULL\"`, \
             or remove it",
        );
    }
}

/// Reports a column name (in `columns(..)` or `include(..)`) that no field maps to.
fn check_is_column(cx: &Ctxt, model: &Model, column: &LitStr) {
    let name = column.value();
    if model.fields.iter().any(|f| f.column_name() == name) {
        return;
    }
    let columns: Vec<String> = model
        .fields
        .iter()
        .map(|f| format!("`{}`", f.column_name()))
        .collect();
    let mut msg = format!(
        "`{name}` is not a column of `{}`; expected one of {}",
        model.rust_name(),
        columns.join(", ")
    );
    if let Some(field) = model.fields.iter().find(|f| f.rust_name() == name) {
        msg = format!(
            "`{name}` is a field of `{}` but its column is `{}`; write the column name, `\"{}\"`",
            model.rust_name(),
            field.column_name(),
            field.column_name()
        );
    } else if let Some(near) = model
        .fields
        .iter()
        .map(|f| f.column_name())
        .find(|c| crate::attr::is_typo(&name, c))
    {
        msg.push_str(&format!("; did you mean `{near}`?"));
    }
    cx.error_spanned_by(column, msg);
}

/// `unique`, `references` with `on_delete`, and every `check`.
fn check_constraints(cx: &Ctxt, model: &Model) {
    let mut names: HashSet<String> = HashSet::new();
    let mut check_one = |check: &Check| {
        match &check.expr {
            Some(expr) if expr.value.value().trim().is_empty() => cx.error_spanned_by(
                &expr.value,
                "`check` is empty; write a boolean SQL expression over the row, like `check = \"price >= 0\"`",
            ),
            Some(_) => {}
            None => cx.error_spanned_by(
                &check.key,
                "`check(...)` needs `expr = \"<SQL boolean expression>\"`, like `check(name = \"positive_price\", \
                 expr = \"price >= 0\")`",
            ),
        }
        if let Some(name) = &check.name {
            check_identifier(cx, "constraint", name);
            if !names.insert(name.value.value()) {
                cx.error_spanned_by(
                    &name.value,
                    format!(
                        "two checks are named `{}`; give each check its own name",
                        name.value.value()
                    ),
                );
            }
        }
    };
    for check in &model.attrs.checks {
        check_one(check);
    }
    for field in &model.fields {
        let attrs = &field.attrs;
        if let Some(check) = &attrs.check {
            check_one(check);
        }
        if let Some(unique) = &attrs.unique {
            if attrs.primary_key.is_some()
                && model
                    .fields
                    .iter()
                    .filter(|f| f.attrs.primary_key.is_some())
                    .count()
                    == 1
            {
                cx.error_spanned_by(unique, "the primary key is already unique; remove `unique`");
            }
            if let Some(index) = &attrs.index {
                cx.error_spanned_by(
                    &index.key,
                    format!(
                        "`unique` already builds an index on `{}`; remove `index` (or write `index(unique)` for a \
                         unique index without a constraint)",
                        field.column_name()
                    ),
                );
            }
        }
        match (&attrs.references, &attrs.on_delete) {
            (Some(references), on_delete) => {
                check_references(cx, references);
                if let Some(on_delete) = on_delete {
                    check_on_delete(cx, field, on_delete);
                }
            }
            (None, Some(on_delete)) => cx.error_spanned_by(
                &on_delete.key,
                "`on_delete` needs `references = \"table(column)\"` on the same field, naming the row this \
                 column points to",
            ),
            (None, None) => {}
        }
    }
}

fn check_references(cx: &Ctxt, references: &Typed<References>) {
    let References {
        schema,
        table,
        column,
    } = match &references.parsed {
        Ok(parsed) => parsed,
        Err(err) => {
            cx.syn_error(err.clone());
            return;
        }
    };
    for (what, name) in [
        ("schema", schema.as_deref()),
        ("table", Some(&**table)),
        ("column", Some(&**column)),
    ] {
        if let Some(name) = name
            && let Some(problem) = identifier_problem(name)
        {
            cx.error_spanned_by(
                &references.value,
                format!("invalid {what} name `{name}` in `references`: {problem}"),
            );
        }
    }
}

fn check_on_delete(cx: &Ctxt, field: &Field, on_delete: &Typed<OnDelete>) {
    match &on_delete.parsed {
        Err(err) => cx.syn_error(err.clone()),
        Ok(OnDelete::SetNull) if !field.is_option() => cx.error_spanned_by(
            &on_delete.value,
            format!(
                "`on_delete = \"set null\"` sets `{}` to NULL when the referenced row is deleted, but the field is \
                 not an `Option`; make it `Option<_>`, or use `cascade` or `restrict`",
                field.rust_name()
            ),
        ),
        Ok(_) => {}
    }
}

fn check_generics(cx: &Ctxt, model: &Model) {
    let generics = &model.original.generics;
    let Some(param) = generics.params.first() else {
        return;
    };
    let what = match param {
        GenericParam::Lifetime(_) => "lifetime parameters",
        GenericParam::Type(_) => "type parameters",
        GenericParam::Const(_) => "const parameters",
    };
    cx.error_spanned_by(
        generics,
        format!(
            "`Evolve` is not supported yet on structs with {what}; \
             derive it on a struct without generics, one per table",
        ),
    );
}

fn check_table(cx: &Ctxt, model: &Model) {
    match &model.attrs.table {
        Some(table) => check_identifier(cx, "table", table),
        // An unknown or malformed struct key was already reported; it may have been the table.
        None if model.attrs.malformed => {}
        None => cx.error_spanned_by(
            model.ident,
            format!(
                "missing table name: add `#[evolve(table = \"...\")]` to `{}`, \
                 naming the PostgreSQL table it maps to",
                model.rust_name(),
            ),
        ),
    }
    if let Some(schema) = &model.attrs.schema {
        check_identifier(cx, "schema", schema);
        if schema.value.value().starts_with("pg_") {
            cx.error_spanned_by(
                &schema.value,
                "schema names starting with `pg_` are reserved by PostgreSQL for system schemas; \
                 use another name",
            );
        }
    }
}

fn check_field(cx: &Ctxt, field: &Field) {
    let attrs = &field.attrs;
    let name = field.rust_name();
    let fills = [
        (symbol::BACKFILL, &attrs.backfill),
        (symbol::DEFAULT, &attrs.default),
    ];

    match &attrs.column {
        Some(column) => check_identifier(cx, "column", column),
        None => {
            if let Some(problem) = identifier_problem(&name) {
                cx.error_spanned_by(
                    field.ident,
                    format!(
                        "field name `{name}` cannot be used as a column name: {problem}; \
                         name the column with `#[evolve(column = \"...\")]`",
                    ),
                );
            }
        }
    }

    if let Some(sql_type) = &attrs.sql_type
        && sql_type.value.value().trim().is_empty()
    {
        cx.error_spanned_by(
            &sql_type.value,
            "`sql_type` is empty; write the PostgreSQL column type, like \
             `sql_type = \"numeric(12,2)\"`, or remove it for a type pgevolve knows",
        );
    }

    if let (Some(_), Some(default)) = (&attrs.backfill, &attrs.default) {
        cx.error_spanned_by(
            &default.key,
            "`backfill` and `default` cannot be combined: `backfill` computes each existing row's \
             value from its other columns, `default` gives every row one constant; keep one",
        );
    }

    for (kind, fill) in fills {
        let Some(fill) = fill else {
            continue;
        };
        let key = &fill.key;
        if fill.value.value().trim().is_empty() {
            let example = match kind {
                symbol::BACKFILL => "`backfill = \"lower(email)\"`",
                _ => "`default = \"0\"`",
            };
            cx.error_spanned_by(
                &fill.value,
                format!(
                    "`{kind}` is empty; write the SQL expression that gives existing rows their \
                     value, like {example}",
                ),
            );
        }
        if attrs.generated.is_some() {
            // `check_generated` reports the combination, saying what `generated` means for it.
            continue;
        }
        if attrs.primary_key.is_some() {
            let msg = match kind {
                symbol::BACKFILL => {
                    "the primary key cannot have `backfill`: backfill batches walk the primary key, \
                     so it must exist first; remove `backfill` (the primary key is created with \
                     the table, pgevolve does not add one to an existing table)"
                }
                _ => {
                    "the primary key cannot have `default`: `default` fills existing rows when a \
                     column is added, and pgevolve does not add a primary key to an existing \
                     table; remove `default` (the primary key is created with the table)"
                }
            };
            cx.error_spanned_by(key, msg);
        } else if field.is_option() {
            cx.error_spanned_by(
                key,
                format!(
                    "`{kind}` makes a NOT NULL column, but `{name}` is an `Option`; remove `Option` \
                     from its type, or remove `{kind}`: an `Option` field is added as a plain \
                     nullable column",
                ),
            );
        }
    }

    if let Some(old) = &attrs.renamed_from {
        check_renamed_from(cx, field, old);
    }

    check_column_changes(cx, field);
    check_type_change(cx, field);

    if attrs.generated.is_some() {
        check_generated(cx, field);
    }

    if attrs.primary_key.is_some() && field.is_option() {
        cx.error_spanned_by(
            field.ty,
            format!(
                "primary key field `{name}` cannot be an `Option`: primary key columns are NOT NULL; \
                 remove `Option` from its type",
            ),
        );
    }
}

/// `set_not_null`, `drop_not_null` and `set_default` change an existing column: each one alone
/// with what would make the same column new, renamed or database-assigned, and on the right
/// kind of field.
fn check_column_changes(cx: &Ctxt, field: &Field) {
    let attrs = &field.attrs;
    let name = field.rust_name();
    if let (Some(_), Some(second)) = (&attrs.drop_not_null, &attrs.set_not_null) {
        cx.error_spanned_by(
            second,
            "`set_not_null` and `drop_not_null` contradict each other; keep the one that matches the field's type \
             (`set_not_null` on a `T`, `drop_not_null` on an `Option<T>`)",
        );
        return;
    }
    if let Some(key) = &attrs.set_not_null {
        if field.is_option() {
            cx.error_spanned_by(
                key,
                format!(
                    "`set_not_null` makes the column NOT NULL, but `{name}` is an `Option`; remove `Option` from its \
                     type, or remove `set_not_null`",
                ),
            );
        }
        if let Some(default) = &attrs.default {
            cx.error_spanned_by(
                &default.key,
                "`default` adds a new column, but `set_not_null` changes an existing one; give the NULL rows their \
                 value with `backfill = \"...\"`, and change the column's default with `set_default = \"...\"`",
            );
        }
    }
    if let Some(key) = &attrs.drop_not_null
        && !field.is_option()
    {
        cx.error_spanned_by(
            key,
            format!(
                "`drop_not_null` makes the column nullable, but `{name}` is not an `Option`; make its type \
                 `Option<_>`, or remove `drop_not_null`",
            ),
        );
    }
    if let Some(set_default) = &attrs.set_default {
        if set_default.value.value().trim().is_empty() {
            cx.error_spanned_by(
                &set_default.value,
                "`set_default` is empty; write the SQL expression of the column's new default, like \
                 `set_default = \"'pending'\"`",
            );
        }
        if let Some(default) = &attrs.default {
            cx.error_spanned_by(
                &default.key,
                "`default` and `set_default` cannot be combined: `default` gives a new column its default when it \
                 is added, `set_default` changes the default of an existing column; keep one",
            );
        }
    }
    let changes = [
        (symbol::SET_NOT_NULL, attrs.set_not_null.as_ref()),
        (symbol::DROP_NOT_NULL, attrs.drop_not_null.as_ref()),
        (
            symbol::SET_DEFAULT,
            attrs.set_default.as_ref().map(|s| &s.key),
        ),
    ];
    for (kind, key) in changes {
        let Some(key) = key else { continue };
        let conflict = if attrs.renamed_from.is_some() {
            "`renamed_from`: rename in one deploy and change the column in another"
        } else if attrs.generated.is_some() {
            "`generated`: the database assigns the column from its sequence"
        } else if attrs.primary_key.is_some() {
            "`primary_key`: primary key columns are NOT NULL and keep their values"
        } else {
            continue;
        };
        cx.error_spanned_by(key, format!("`{kind}` cannot be combined with {conflict}"));
    }
}

/// `generated`: an integer the database assigns, so nothing else may give it a value.
fn check_generated(cx: &Ctxt, field: &Field) {
    let attrs = &field.attrs;
    let name = field.rust_name();
    if !field.is_sequence_integer() {
        cx.error_spanned_by(
            field.ty,
            format!(
                "`generated` needs an integer field: the database assigns `{name}` from a sequence (an identity \
                 or `serial` column), which gives `smallint`, `integer` or `bigint` values; make its type `i16`, \
                 `i32` or `i64` (or an `Option` of one), or remove `generated` and choose the values in the \
                 application",
            ),
        );
    }
    if let Some(backfill) = &attrs.backfill {
        cx.error_spanned_by(
            &backfill.key,
            format!(
                "`backfill` cannot be combined with `generated`: the database assigns `{name}` from its sequence, \
                 for new rows only; remove `backfill`, or remove `generated` to compute the column from the row",
            ),
        );
    }
    if let Some(default) = &attrs.default {
        cx.error_spanned_by(
            &default.key,
            format!(
                "`default` cannot be combined with `generated`: the sequence is the default of `{name}`; remove \
                 `default`, or remove `generated` to give every row one constant",
            ),
        );
    }
    if let Some(old) = &attrs.renamed_from {
        cx.error_spanned_by(
            &old.key,
            "`renamed_from` cannot be combined with `generated`: pgevolve creates identity columns only with \
             their table, and a rename adds a new column; keep the old name with \
             `#[evolve(column = \"old_name\", generated)]` instead",
        );
    }
}

/// The key of a setting as written (`using`), for messages.
fn key_name(key: &syn::Path) -> String {
    key.get_ident().map(|i| i.to_string()).unwrap_or_default()
}

/// `type_from`, `using`, `down`: a type change of an existing column.
fn check_type_change(cx: &Ctxt, field: &Field) {
    let attrs = &field.attrs;
    let name = field.rust_name();
    let Some(from) = &attrs.type_from else {
        for expr in [&attrs.using, &attrs.down].into_iter().flatten() {
            let key = key_name(&expr.key);
            cx.error_spanned_by(
                &expr.key,
                format!(
                    "`{key}` needs `type_from`: it converts the column's values in a type change; add \
                     `type_from = \"<the column's current type>\"` to `{name}`, or remove `{key}`",
                ),
            );
        }
        return;
    };
    let from_name = from.value.value();
    if from_name.trim().is_empty() {
        cx.error_spanned_by(
            &from.value,
            "`type_from` is empty; write the column's current PostgreSQL type, like `type_from = \"integer\"`",
        );
    } else if let Some(bad) = from_name
        .chars()
        .find(|c| !(c.is_alphanumeric() || " _,.()[]\"".contains(*c)))
    {
        cx.error_spanned_by(
            &from.value,
            format!(
                "`type_from = \"{from_name}\"` is not a PostgreSQL type name (`{bad}`); write the column's current type, \
                 like `integer`, `varchar(20)` or `numeric(10,2)`",
            ),
        );
    } else if let Some(to) = field.known_sql_type()
        && normalized_type(&to) == normalized_type(&from_name)
    {
        cx.error_spanned_by(
            &from.value,
            format!(
                "`type_from = \"{from_name}\"` is the type field `{name}` already has (`{to}`); remove `type_from`, \
                 or write the column's previous type",
            ),
        );
    }
    for expr in [&attrs.using, &attrs.down].into_iter().flatten() {
        if expr.value.value().trim().is_empty() {
            let key = key_name(&expr.key);
            cx.error_spanned_by(
                &expr.value,
                format!(
                    "`{key}` is empty; write the SQL expression over the column `{}` that converts its value, \
                     or remove `{key}` for a plain cast",
                    field.column_name()
                ),
            );
        }
    }
    if attrs.primary_key.is_some() {
        // A key is only widened (integer to bigint), by a plain cast both ways: its values and
        // every foreign key's stay what they are.
        let to = field.known_sql_type().map(|t| normalized_type(&t));
        if !matches!(normalized_type(&from_name).as_str(), "integer" | "smallint")
            || to.as_deref() != Some("bigint")
        {
            cx.error_spanned_by(
                &from.value,
                format!(
                    "a primary key's type can only be widened from `integer` (or `smallint`) to `bigint` (an `i64` field), \
                     with every foreign key that references it; `type_from = \"{from_name}\"` on field `{name}` is not that: \
                     keep the key's type, or change it by hand",
                ),
            );
        }
        for expr in [&attrs.using, &attrs.down].into_iter().flatten() {
            let key = key_name(&expr.key);
            cx.error_spanned_by(
                &expr.key,
                format!(
                    "`{key}` cannot be combined with `type_from` on a primary key: a key is widened by a plain cast, \
                     so that every foreign key that references it keeps matching; remove `{key}`",
                ),
            );
        }
    }
    if attrs.primary_key.is_none()
        && attrs.references.is_some()
        && matches!(normalized_type(&from_name).as_str(), "integer" | "smallint")
        && field
            .known_sql_type()
            .map(|t| normalized_type(&t))
            .as_deref()
            == Some("bigint")
    {
        // A reference widened with the key it references: the key's step widens it, by the
        // same plain cast as the key.
        for expr in [&attrs.using, &attrs.down].into_iter().flatten() {
            let key = key_name(&expr.key);
            cx.error_spanned_by(
                &expr.key,
                format!(
                    "`{key}` cannot be combined with `type_from` on a reference widened with its key: the key's \
                     widening converts it by a plain cast, so that it keeps matching the key; remove `{key}`",
                ),
            );
        }
    }
    let conflicts = [
        (
            &attrs.renamed_from,
            "rename and change the type in two deploys: rename first, then change the type",
        ),
        (
            &attrs.backfill,
            "a type change takes its values from the column itself (`using` converts them)",
        ),
        (
            &attrs.default,
            "a type change keeps the column's default (carried over to the new type)",
        ),
    ];
    for (other, why) in conflicts {
        if let Some(other) = other {
            let key = key_name(&other.key);
            cx.error_spanned_by(
                &other.key,
                format!("`{key}` cannot be combined with `type_from`: {why}"),
            );
        }
    }
    if let Some(set_default) = &attrs.set_default {
        cx.error_spanned_by(
            &set_default.key,
            "`set_default` cannot be combined with `type_from`: a type change carries the column's default over \
             to the new type; change the default in another deploy",
        );
    }
    for (key, flag) in [
        (symbol::SET_NOT_NULL, &attrs.set_not_null),
        (symbol::DROP_NOT_NULL, &attrs.drop_not_null),
    ] {
        if let Some(flag) = flag {
            cx.error_spanned_by(
                flag,
                format!(
                    "`{key}` cannot be combined with `type_from`: change the type in one deploy and NOT NULL \
                     in another"
                ),
            );
        }
    }
    if let Some(generated) = attrs
        .generated
        .as_ref()
        .filter(|_| attrs.primary_key.is_none())
    {
        cx.error_spanned_by(
            generated,
            "`generated` cannot be combined with `type_from`: pgevolve creates identity columns only with their table",
        );
    }
}

fn check_renamed_from(cx: &Ctxt, field: &Field, old: &crate::attr::Setting) {
    let attrs = &field.attrs;
    let old_name = old.value.value();
    check_identifier(cx, "column", old);
    if old_name == field.column_name() {
        cx.error_spanned_by(
            &old.value,
            format!(
                "`renamed_from = \"{old_name}\"` names the column this field already maps to; \
                 remove `renamed_from`, or write the column's previous name",
            ),
        );
    }
    // With `generated`, `check_generated` reports `renamed_from` itself.
    if attrs.primary_key.is_some() && attrs.generated.is_none() {
        cx.error_spanned_by(
            &old.key,
            "renaming a primary key column is not supported yet: its new column would need its \
             own unique index and every foreign key moved to it; keep the old name with \
             `#[evolve(column = \"old_name\")]` on the renamed field instead",
        );
    }
    for fill in [&attrs.backfill, &attrs.default].into_iter().flatten() {
        cx.error_spanned_by(
            &fill.key,
            format!(
                "`{}` cannot be combined with `renamed_from`: a renamed column takes its values \
                 from the old column; rename in one deploy and change the values in another",
                key_name(&fill.key)
            ),
        );
    }
}

fn check_renamed_twice(cx: &Ctxt, model: &Model) {
    let mut seen: HashMap<String, &Field> = HashMap::new();
    for field in &model.fields {
        let Some(old) = &field.attrs.renamed_from else {
            continue;
        };
        let old_name = old.value.value();
        if let Some(first) = seen.get(&old_name) {
            cx.error_spanned_by(
                &old.value,
                format!(
                    "fields `{}` and `{}` are both renamed from column `{old_name}`; a column can \
                     be renamed to one name only: keep `renamed_from` on one field and add the \
                     other as a new column (`backfill = \"{old_name}\"`)",
                    first.rust_name(),
                    field.rust_name(),
                ),
            );
        } else {
            seen.insert(old_name, field);
        }
    }
}

fn check_duplicate_columns(cx: &Ctxt, model: &Model) {
    let mut seen: HashMap<String, &Field> = HashMap::new();
    for field in &model.fields {
        let column = field.column_name();
        match seen.get(&column) {
            Some(first) => {
                let span: &dyn ToTokens = match &field.attrs.column {
                    Some(setting) => &setting.value,
                    None => field.ident,
                };
                cx.error_spanned_by(
                    span,
                    format!(
                        "fields `{}` and `{}` both map to column `{column}`; give one of them \
                         another name with `#[evolve(column = \"...\")]`",
                        first.rust_name(),
                        field.rust_name(),
                    ),
                );
            }
            None => {
                seen.insert(column, field);
            }
        }
    }
}

fn check_backfill_has_primary_key(cx: &Ctxt, model: &Model) {
    if model.has_primary_key() {
        return;
    }
    for field in &model.fields {
        if let Some(backfill) = &field.attrs.backfill {
            cx.error_spanned_by(
                &backfill.key,
                "`backfill` needs a primary key: existing rows are filled in batches that walk \
                 the primary key; add `#[evolve(primary_key)]` to the key field(s)",
            );
        }
        if let Some(with) = &field.attrs.backfill_with {
            cx.error_spanned_by(
                &with.key,
                "`backfill_with` needs a primary key: existing rows are computed in batches that walk \
                 the primary key; add `#[evolve(primary_key)]` to the key field(s)",
            );
        }
    }
}

/// `backfill_with = "path", inputs(..)`: a path, a new NOT NULL column and nothing else about
/// it, and inputs that are existing columns the struct maps.
fn check_backfill_with(cx: &Ctxt, model: &Model) {
    for field in &model.fields {
        let attrs = &field.attrs;
        let name = field.rust_name();
        let Some(with) = &attrs.backfill_with else {
            if let Some(inputs) = &attrs.inputs {
                cx.error_spanned_by(
                    &inputs.key,
                    "`inputs(..)` names the columns a `backfill_with` function takes, and this field has no \
                     `backfill_with`; add `backfill_with = \"path::to::function\"`, or remove `inputs`",
                );
            }
            continue;
        };
        if let Err(e) = &with.parsed {
            cx.syn_error(e.clone());
        }
        let conflicts = [
            (
                symbol::BACKFILL,
                attrs.backfill.as_ref().map(|s| s.key.to_token_stream()),
            ),
            (
                symbol::DEFAULT,
                attrs.default.as_ref().map(|s| s.key.to_token_stream()),
            ),
            (
                symbol::RENAMED_FROM,
                attrs.renamed_from.as_ref().map(|s| s.key.to_token_stream()),
            ),
            (
                symbol::SET_NOT_NULL,
                attrs.set_not_null.as_ref().map(|p| p.to_token_stream()),
            ),
            (
                symbol::DROP_NOT_NULL,
                attrs.drop_not_null.as_ref().map(|p| p.to_token_stream()),
            ),
            (
                symbol::TYPE_FROM,
                attrs.type_from.as_ref().map(|s| s.key.to_token_stream()),
            ),
            (
                symbol::GENERATED,
                attrs.generated.as_ref().map(|p| p.to_token_stream()),
            ),
            (
                symbol::PRIMARY_KEY,
                attrs.primary_key.as_ref().map(|p| p.to_token_stream()),
            ),
        ];
        for (other, tokens) in conflicts {
            let Some(tokens) = tokens else { continue };
            let msg = match other {
                symbol::BACKFILL => "`backfill_with` and `backfill` cannot be combined: both give existing rows their \
                                     value; keep `backfill = \"...\"` for a SQL expression, or `backfill_with` for a Rust function"
                    .to_string(),
                symbol::DEFAULT => "`backfill_with` and `default` cannot be combined: `default` gives every row one \
                                    constant, `backfill_with` computes each row's value in Rust; keep one"
                    .to_string(),
                symbol::TYPE_FROM => "`backfill_with` and `type_from` cannot be combined: `backfill_with` adds a new \
                                      column, `type_from` changes the type of one that exists; change the type in one \
                                      deploy (`using = \"...\"` converts the values) and add a computed column in another"
                    .to_string(),
                _ => format!(
                    "`backfill_with` adds a new column computed in Rust and cannot be combined with `{other}`; \
                     remove `{other}`, or use `backfill = \"...\"` with it where that is allowed"
                ),
            };
            cx.error_spanned_by(tokens, msg);
        }
        if field.is_option() {
            cx.error_spanned_by(
                &with.key,
                format!(
                    "`backfill_with` makes a NOT NULL column, but `{name}` is an `Option`; remove `Option` from its \
                     type, or remove `backfill_with`: an `Option` field is added as a plain nullable column"
                ),
            );
        }
        let Some(inputs) = &attrs.inputs else {
            cx.error_spanned_by(
                &with.key,
                "`backfill_with` needs `inputs(\"column\", ...)`: the columns its function takes, in the order \
                 of its arguments, like `backfill_with = \"crate::fill::email_normalized\", inputs(\"email\")`",
            );
            continue;
        };
        if inputs.list.is_empty() {
            cx.error_spanned_by(
                inputs.tokens(),
                "`inputs()` is empty; name the columns the function takes, like `inputs(\"email\")`",
            );
        }
        for input in &inputs.list {
            let column = input.value();
            let source = model.fields.iter().find(|f| f.column_name() == column);
            match source {
                None => cx.error_spanned_by(
                    input,
                    format!(
                        "`inputs` names column `{column}`, which no field of `{}` maps; name a column of \
                         another field (the function gets that field's type)",
                        model.rust_name()
                    ),
                ),
                Some(f) if std::ptr::eq(f, field) => cx.error_spanned_by(
                    input,
                    format!("`inputs` names `{column}`, the column `backfill_with` computes; name the columns it is computed from"),
                ),
                Some(f)
                    if f.attrs.backfill.is_some()
                        || f.attrs.default.is_some()
                        || f.attrs.backfill_with.is_some()
                        || f.attrs.renamed_from.is_some() =>
                {
                    cx.error_spanned_by(
                        input,
                        format!(
                            "`inputs` names `{column}`, which this build adds or renames, so old builds do not write it; \
                             name columns that exist before this build"
                        ),
                    )
                }
                Some(_) => {}
            }
        }
    }
}

/// Reports a `table`/`schema`/`column` value that is not a plain PostgreSQL identifier.
fn check_identifier(cx: &Ctxt, what: &str, setting: &Setting) {
    let name = setting.value.value();
    if let Some(problem) = identifier_problem(&name) {
        let msg = if name.is_empty() {
            format!("{what} name is empty; write the name, like `{what} = \"...\"`")
        } else {
            format!("invalid {what} name `{name}`: {problem}")
        };
        cx.error_spanned_by(&setting.value, msg);
    }
}

/// `None` for a name matching `^[A-Za-z_][A-Za-z0-9_]*$` within [`MAX_IDENTIFIER_BYTES`];
/// otherwise what is wrong with it and what to write instead.
fn identifier_problem(name: &str) -> Option<String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !name.chars().all(valid_char) {
        let rule = "a name must start with an ASCII letter or `_` and contain only ASCII \
                    letters, digits and `_`";
        let fixed: String = name
            .chars()
            .map(|c| if valid_char(c) { c } else { '_' })
            .collect();
        let fixed_is_valid = fixed
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && fixed.len() <= MAX_IDENTIFIER_BYTES;
        return Some(if fixed_is_valid {
            format!("{rule}, like `{fixed}`")
        } else {
            rule.to_owned()
        });
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Some(format!(
            "it is {} bytes long and PostgreSQL identifiers are at most {MAX_IDENTIFIER_BYTES} \
             bytes; use a shorter name",
            name.len(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{MAX_IDENTIFIER_BYTES, identifier_problem};

    #[test]
    fn identifiers() {
        for ok in ["users", "_x", "User_2", &"a".repeat(MAX_IDENTIFIER_BYTES)] {
            assert_eq!(identifier_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "1st",
            "user-accounts",
            "e mail",
            "café",
            "a.b",
            &"a".repeat(MAX_IDENTIFIER_BYTES + 1),
        ] {
            assert!(identifier_problem(bad).is_some(), "{bad}");
        }
        let dash = identifier_problem("user-accounts").unwrap_or_default();
        assert!(dash.ends_with("like `user_accounts`"), "{dash}");
        // No suggestion that would itself be invalid.
        let digit = identifier_problem("1-st").unwrap_or_default();
        assert!(!digit.contains("like"), "{digit}");
    }
}
