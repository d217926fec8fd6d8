//! The syntax of `#[evolve(..)]`: which keys exist at each level and what their values look like.
//!
//! Parsing records every problem in the [`Ctxt`] and goes on with the next key, so one build
//! reports all attribute mistakes. Meaning (conflicts, preconditions) is checked in `validate`.

use crate::ctxt::Ctxt;
use crate::symbol::{self, Symbol};
use crate::value::{IndexMethod, OnDelete, References};
use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Attribute, LitStr, Path, Token};

/// A `key = "value"` setting. Both tokens are kept: some errors point at the key, others at the
/// value.
pub struct Setting {
    pub key: Path,
    pub value: LitStr,
}

/// A setting whose string has a syntax of its own ([`crate::value`]), parsed once when the
/// attribute is read.
pub struct Typed<T> {
    pub key: Path,
    pub value: LitStr,
    /// The value, or the error at `value` saying what is wrong with it. `validate` reports it in
    /// its turn, so errors come out in rule order like every other.
    pub parsed: syn::Result<T>,
}

impl<T> Typed<T> {
    fn parse(setting: Setting, parse: fn(&str) -> Result<T, String>) -> Self {
        let parsed =
            parse(&setting.value.value()).map_err(|msg| syn::Error::new(setting.value.span(), msg));
        Typed {
            key: setting.key,
            value: setting.value,
            parsed,
        }
    }

    /// The value, if it parsed.
    pub fn get(&self) -> Option<&T> {
        self.parsed.as_ref().ok()
    }
}

/// Holds one attribute's value and rejects a second occurrence.
struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: Symbol,
    level: Level,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    fn none(cx: &'c Ctxt, name: Symbol, level: Level) -> Self {
        Attr {
            cx,
            name,
            level,
            value: None,
        }
    }

    /// Stores `value`, or reports a duplicate at `obj` (the second occurrence's key).
    fn set<A: ToTokens>(&mut self, obj: A, value: T) {
        if self.value.is_some() {
            self.cx.error_spanned_by(
                obj,
                format!(
                    "duplicate evolve attribute `{}`: it is already set on this {}, keep only one",
                    self.name,
                    self.level.noun(),
                ),
            );
        } else {
            self.value = Some(value);
        }
    }

    fn get(self) -> Option<T> {
        self.value
    }
}

/// Where an attribute is written; decides which keys are valid.
#[derive(Copy, Clone)]
enum Level {
    Struct,
    Field,
    /// Inside `index(..)` on the struct.
    StructIndex,
    /// Inside `index(..)` on a field.
    FieldIndex,
    /// Inside `check(..)`.
    Check,
}

impl Level {
    fn noun(self) -> &'static str {
        match self {
            Level::Struct => "struct",
            Level::Field => "field",
            Level::StructIndex | Level::FieldIndex => "index",
            Level::Check => "check",
        }
    }

    fn keys(self) -> &'static [Symbol] {
        match self {
            Level::Struct => symbol::STRUCT_KEYS,
            Level::Field => symbol::FIELD_KEYS,
            Level::StructIndex => symbol::STRUCT_INDEX_KEYS,
            Level::FieldIndex => symbol::FIELD_INDEX_KEYS,
            Level::Check => symbol::CHECK_KEYS,
        }
    }

    fn other(self) -> Level {
        match self {
            Level::Struct => Level::Field,
            Level::Field => Level::Struct,
            Level::StructIndex => Level::FieldIndex,
            Level::FieldIndex => Level::StructIndex,
            Level::Check => Level::Check,
        }
    }
}

/// `index` or `index(..)`: on a field (its column), or on the struct (`columns(..)`).
pub struct Index {
    /// The `index` keyword, for spans.
    pub key: Path,
    pub name: Option<Setting>,
    pub columns: Option<Columns>,
    /// The `unique` keyword, for spans.
    pub unique: Option<Path>,
    pub method: Option<Typed<IndexMethod>>,
    /// `where = ".."`.
    pub predicate: Option<Setting>,
    pub include: Option<Columns>,
}

/// `columns("a", "b")` or `include("c")`.
pub struct Columns {
    pub key: Path,
    /// The parentheses, so an empty list can be pointed at.
    pub group: Group,
    pub list: Vec<LitStr>,
}

impl Columns {
    /// The key and its list, for errors about the whole thing.
    pub fn tokens(&self) -> TokenStream {
        let mut tokens = self.key.to_token_stream();
        tokens.extend([TokenTree::Group(self.group.clone())]);
        tokens
    }
}

/// `check = ".."` or `check(name = "..", expr = "..")`.
pub struct Check {
    /// The `check` keyword, for spans.
    pub key: Path,
    pub name: Option<Setting>,
    pub expr: Option<Setting>,
}

/// `#[evolve(..)]` on the struct.
pub struct Container {
    pub table: Option<Setting>,
    pub schema: Option<Setting>,
    /// `index(..)`, any number.
    pub indexes: Vec<Index>,
    /// `check = ".."` / `check(..)`, any number.
    pub checks: Vec<Check>,
    /// `dropped("a", "b")`, any number: columns the table has and the struct no longer maps,
    /// which pgevolve drops (never a column merely missing from the struct).
    pub dropped: Vec<Columns>,
    /// `renamed_from = "old"`: the table's previous name (a table rename).
    pub renamed_from: Option<Setting>,
    /// `crate = "path"`: where generated code finds pgevolve (default `::pgevolve`).
    pub krate: Option<Path>,
    /// Some struct-level key could not be parsed (unknown or malformed). The table may be the
    /// key that was misspelled, so "missing table" would only repeat that error.
    pub malformed: bool,
}

impl Container {
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let level = Level::Struct;
        let mut table = Attr::none(cx, symbol::TABLE, level);
        let mut schema = Attr::none(cx, symbol::SCHEMA, level);
        let mut krate = Attr::none(cx, symbol::CRATE, level);
        let mut indexes = Vec::new();
        let mut checks = Vec::new();
        let mut dropped = Vec::new();
        let mut renamed_from = Attr::none(cx, symbol::RENAMED_FROM, level);

        let parsed = for_each_key(cx, attrs, level, |meta| {
            if meta.path == symbol::TABLE {
                table.set(&meta.path, setting(meta, "name")?);
            } else if meta.path == symbol::SCHEMA {
                schema.set(&meta.path, setting(meta, "name")?);
            } else if meta.path == symbol::CRATE {
                let Setting { value, .. } = setting(meta, "path::to::pgevolve")?;
                let path = value.parse::<Path>().map_err(|_| {
                    syn::Error::new(
                        value.span(),
                        "expected a path to the pgevolve crate, like `crate = \"my_lib::pgevolve\"`",
                    )
                })?;
                krate.set(&meta.path, path);
            } else if meta.path == symbol::INDEX {
                indexes.push(index(cx, meta, Level::StructIndex)?);
            } else if meta.path == symbol::CHECK {
                checks.push(check(cx, meta)?);
            } else if meta.path == symbol::DROPPED {
                dropped.push(column_list(meta)?);
            } else if meta.path == symbol::RENAMED_FROM {
                renamed_from.set(&meta.path, setting(meta, "old_table")?);
            } else {
                return Err(unknown_key(meta, level));
            }
            Ok(())
        });

        Container {
            table: table.get(),
            schema: schema.get(),
            indexes,
            checks,
            dropped,
            renamed_from: renamed_from.get(),
            krate: krate.get(),
            malformed: !parsed,
        }
    }
}

/// `#[evolve(..)]` on one field.
pub struct Field {
    /// The `primary_key` keyword, for spans.
    pub primary_key: Option<Path>,
    /// The `generated` keyword (the database assigns the value), for spans.
    pub generated: Option<Path>,
    pub column: Option<Setting>,
    pub sql_type: Option<Setting>,
    pub backfill: Option<Setting>,
    /// `backfill_with = "path::to::function"`: the value computed in Rust.
    pub backfill_with: Option<Typed<syn::Path>>,
    /// `inputs("a", "b")`: the columns `backfill_with`'s function takes, in order.
    pub inputs: Option<Columns>,
    pub default: Option<Setting>,
    pub renamed_from: Option<Setting>,
    /// The `set_not_null` keyword (an existing nullable column made NOT NULL), for spans.
    pub set_not_null: Option<Path>,
    /// The `drop_not_null` keyword (an existing NOT NULL column made nullable), for spans.
    pub drop_not_null: Option<Path>,
    /// `set_default = ".."`: the new default of an existing column.
    pub set_default: Option<Setting>,
    /// `type_from = "integer"`: the column's type today (a type change).
    pub type_from: Option<Setting>,
    /// `using = "<SQL over the column>"`: the new value from the old one.
    pub using: Option<Setting>,
    /// `down = "<SQL over the column>"`: the old value from the new one.
    pub down: Option<Setting>,
    pub index: Option<Index>,
    /// The `unique` keyword, for spans.
    pub unique: Option<Path>,
    /// `references = "table(column)"`.
    pub references: Option<Typed<References>>,
    pub on_delete: Option<Typed<OnDelete>>,
    pub check: Option<Check>,
}

impl Field {
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let level = Level::Field;
        let mut primary_key = Attr::none(cx, symbol::PRIMARY_KEY, level);
        let mut generated = Attr::none(cx, symbol::GENERATED, level);
        let mut column = Attr::none(cx, symbol::COLUMN, level);
        let mut sql_type = Attr::none(cx, symbol::SQL_TYPE, level);
        let mut backfill = Attr::none(cx, symbol::BACKFILL, level);
        let mut backfill_with = Attr::none(cx, symbol::BACKFILL_WITH, level);
        let mut inputs = Attr::none(cx, symbol::INPUTS, level);
        let mut default = Attr::none(cx, symbol::DEFAULT, level);
        let mut renamed_from = Attr::none(cx, symbol::RENAMED_FROM, level);
        let mut set_not_null = Attr::none(cx, symbol::SET_NOT_NULL, level);
        let mut drop_not_null = Attr::none(cx, symbol::DROP_NOT_NULL, level);
        let mut set_default = Attr::none(cx, symbol::SET_DEFAULT, level);
        let mut type_from = Attr::none(cx, symbol::TYPE_FROM, level);
        let mut using = Attr::none(cx, symbol::USING, level);
        let mut down = Attr::none(cx, symbol::DOWN, level);
        let mut index_attr = Attr::none(cx, symbol::INDEX, level);
        let mut unique = Attr::none(cx, symbol::UNIQUE, level);
        let mut references = Attr::none(cx, symbol::REFERENCES, level);
        let mut on_delete = Attr::none(cx, symbol::ON_DELETE, level);
        let mut check_attr = Attr::none(cx, symbol::CHECK, level);

        for_each_key(cx, attrs, level, |meta| {
            if meta.path == symbol::PRIMARY_KEY {
                flag(cx, meta)?;
                primary_key.set(&meta.path, meta.path.clone());
            } else if meta.path == symbol::GENERATED {
                flag(cx, meta)?;
                generated.set(&meta.path, meta.path.clone());
            } else if meta.path == symbol::COLUMN {
                column.set(&meta.path, setting(meta, "name")?);
            } else if meta.path == symbol::SQL_TYPE {
                sql_type.set(&meta.path, setting(meta, "numeric(12,2)")?);
            } else if meta.path == symbol::BACKFILL {
                backfill.set(&meta.path, setting(meta, "SQL expression")?);
            } else if meta.path == symbol::BACKFILL_WITH {
                backfill_with.set(
                    &meta.path,
                    Typed::parse(
                        setting(meta, "path::to::function")?,
                        crate::value::function_path,
                    ),
                );
            } else if meta.path == symbol::INPUTS {
                inputs.set(&meta.path, column_list(meta)?);
            } else if meta.path == symbol::DEFAULT {
                default.set(&meta.path, setting(meta, "SQL constant")?);
            } else if meta.path == symbol::RENAMED_FROM {
                renamed_from.set(&meta.path, setting(meta, "old_column")?);
            } else if meta.path == symbol::SET_NOT_NULL {
                flag(cx, meta)?;
                set_not_null.set(&meta.path, meta.path.clone());
            } else if meta.path == symbol::DROP_NOT_NULL {
                flag(cx, meta)?;
                drop_not_null.set(&meta.path, meta.path.clone());
            } else if meta.path == symbol::SET_DEFAULT {
                set_default.set(&meta.path, setting(meta, "SQL expression")?);
            } else if meta.path == symbol::TYPE_FROM {
                type_from.set(&meta.path, setting(meta, "integer")?);
            } else if meta.path == symbol::USING {
                using.set(&meta.path, setting(meta, "SQL expression over the column")?);
            } else if meta.path == symbol::DOWN {
                down.set(&meta.path, setting(meta, "SQL expression over the column")?);
            } else if meta.path == symbol::INDEX {
                index_attr.set(&meta.path, index(cx, meta, Level::FieldIndex)?);
            } else if meta.path == symbol::UNIQUE {
                flag(cx, meta)?;
                unique.set(&meta.path, meta.path.clone());
            } else if meta.path == symbol::REFERENCES {
                references.set(
                    &meta.path,
                    Typed::parse(setting(meta, "table(column)")?, References::parse),
                );
            } else if meta.path == symbol::ON_DELETE {
                on_delete.set(
                    &meta.path,
                    Typed::parse(setting(meta, "cascade")?, OnDelete::parse),
                );
            } else if meta.path == symbol::CHECK {
                check_attr.set(&meta.path, check(cx, meta)?);
            } else {
                return Err(unknown_key(meta, level));
            }
            Ok(())
        });

        Field {
            primary_key: primary_key.get(),
            generated: generated.get(),
            column: column.get(),
            sql_type: sql_type.get(),
            backfill: backfill.get(),
            backfill_with: backfill_with.get(),
            inputs: inputs.get(),
            default: default.get(),
            renamed_from: renamed_from.get(),
            set_not_null: set_not_null.get(),
            drop_not_null: drop_not_null.get(),
            set_default: set_default.get(),
            type_from: type_from.get(),
            using: using.get(),
            down: down.get(),
            index: index_attr.get(),
            unique: unique.get(),
            references: references.get(),
            on_delete: on_delete.get(),
            check: check_attr.get(),
        }
    }
}

/// Parses `index` (on a field) or `index(..)` (`level` says where).
fn index(cx: &Ctxt, meta: &ParseNestedMeta, level: Level) -> syn::Result<Index> {
    let on_field = matches!(level, Level::FieldIndex);
    let mut name = Attr::none(cx, symbol::NAME, level);
    let mut columns = Attr::none(cx, symbol::COLUMNS, level);
    let mut unique = Attr::none(cx, symbol::UNIQUE, level);
    let mut method = Attr::none(cx, symbol::METHOD, level);
    let mut predicate = Attr::none(cx, symbol::WHERE, level);
    let mut include = Attr::none(cx, symbol::INCLUDE, level);
    if meta.input.peek(syn::token::Paren) {
        nested(cx, meta, |inner| {
            if inner.path == symbol::NAME {
                name.set(&inner.path, setting(inner, "index_name")?);
            } else if inner.path == symbol::COLUMNS && !on_field {
                columns.set(&inner.path, column_list(inner)?);
            } else if inner.path == symbol::COLUMNS {
                return Err(syn::Error::new_spanned(
                    &inner.path,
                    "`columns` does not go in the `index(...)` of a field: the field is the indexed column; \
                     to index several columns, write `#[evolve(index(columns(\"a\", \"b\")))]` on the struct",
                ));
            } else if inner.path == symbol::UNIQUE {
                flag(cx, inner)?;
                unique.set(&inner.path, inner.path.clone());
            } else if inner.path == symbol::METHOD {
                method.set(
                    &inner.path,
                    Typed::parse(setting(inner, "btree")?, IndexMethod::parse),
                );
            } else if inner.path == symbol::WHERE {
                predicate.set(&inner.path, setting(inner, "SQL predicate")?);
            } else if inner.path == symbol::INCLUDE {
                include.set(&inner.path, column_list(inner)?);
            } else {
                return Err(unknown_option(inner, level));
            }
            Ok(())
        })?;
    } else if on_field {
        flag(cx, meta)?;
    } else {
        return Err(meta.error(
            "`index` on the struct takes a list: `index(columns(\"a\", \"b\"))`, with the indexed columns in \
             order; to index one column, write `#[evolve(index)]` on its field",
        ));
    }
    Ok(Index {
        key: meta.path.clone(),
        name: name.get(),
        columns: columns.get(),
        unique: unique.get(),
        method: method.get(),
        predicate: predicate.get(),
        include: include.get(),
    })
}

/// Parses `check = ".."` or `check(name = "..", expr = "..")`.
fn check(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Check> {
    let level = Level::Check;
    let mut name = Attr::none(cx, symbol::NAME, level);
    let mut expr = Attr::none(cx, symbol::EXPR, level);
    if meta.input.peek(syn::token::Paren) {
        nested(cx, meta, |inner| {
            if inner.path == symbol::NAME {
                name.set(&inner.path, setting(inner, "constraint_name")?);
            } else if inner.path == symbol::EXPR {
                expr.set(&inner.path, setting(inner, "SQL boolean expression")?);
            } else {
                return Err(unknown_option(inner, level));
            }
            Ok(())
        })?;
    } else if meta.input.peek(Token![=]) {
        expr.set(&meta.path, setting(meta, "SQL boolean expression")?);
    } else {
        return Err(meta.error(
            "expected `check = \"<SQL boolean expression>\"`, or `check(name = \"...\", expr = \"...\")` to name the constraint",
        ));
    }
    Ok(Check {
        key: meta.path.clone(),
        name: name.get(),
        expr: expr.get(),
    })
}

/// Parses the `(..)` after `meta`'s key like `for_each_key` does: each error is recorded and
/// its value skipped, so the next option is still parsed.
fn nested(
    cx: &Ctxt,
    meta: &ParseNestedMeta,
    mut each: impl FnMut(&ParseNestedMeta) -> syn::Result<()>,
) -> syn::Result<()> {
    meta.parse_nested_meta(|inner| {
        if let Err(err) = each(&inner) {
            cx.syn_error(err);
            take_value(inner.input)?;
        }
        Ok(())
    })
}

/// Parses `key("a", "b")`.
fn column_list(meta: &ParseNestedMeta) -> syn::Result<Columns> {
    let key = display_path(&meta.path);
    let expected =
        format!("expected `{key}(\"column\", ...)`, with column names as string literals");
    let group = match meta.input.parse::<TokenTree>() {
        Ok(TokenTree::Group(group)) if group.delimiter() == Delimiter::Parenthesis => group,
        Ok(other) => return Err(syn::Error::new_spanned(other, expected)),
        Err(_) => return Err(meta.error(expected)),
    };
    let list = Punctuated::<LitStr, Token![,]>::parse_terminated
        .parse2(group.stream())
        .map_err(|e| syn::Error::new(e.span(), expected.clone()))?;
    Ok(Columns {
        key: meta.path.clone(),
        group,
        list: list.into_iter().collect(),
    })
}

fn unknown_option(meta: &ParseNestedMeta, level: Level) -> syn::Error {
    let key = display_path(&meta.path);
    let mut msg = format!(
        "unknown `{}` option `{key}`, expected one of {}",
        level.noun(),
        symbol::list(level.keys()),
    );
    if let Some(near) = level.keys().iter().find(|s| is_typo(&key, s.as_str())) {
        msg.push_str(&format!("; did you mean `{near}`?"));
    }
    syn::Error::new_spanned(&meta.path, msg)
}

/// Runs `each` on every key of every `#[evolve(..)]` in `attrs`; `false` if any failed.
///
/// An error from `each` is recorded and its value skipped, so the next key is still parsed.
/// Only a syntax error between keys (a missing comma) ends the attribute early.
fn for_each_key(
    cx: &Ctxt,
    attrs: &[Attribute],
    level: Level,
    mut each: impl FnMut(&ParseNestedMeta) -> syn::Result<()>,
) -> bool {
    let mut clean = true;
    for attr in attrs {
        if attr.path() != symbol::EVOLVE {
            continue;
        }
        if !matches!(attr.meta, syn::Meta::List(_)) {
            cx.error_spanned_by(
                &attr.meta,
                format!(
                    "expected `#[evolve(...)]` with one or more of {}",
                    symbol::list(level.keys()),
                ),
            );
            clean = false;
            continue;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if let Err(err) = each(&meta) {
                cx.syn_error(err);
                clean = false;
                take_value(meta.input)?;
            }
            Ok(())
        });
        if let Err(err) = parsed {
            cx.syn_error(err);
            clean = false;
        }
    }
    clean
}

/// Parses `key = "string"`. `placeholder` shows the expected form in messages.
fn setting(meta: &ParseNestedMeta, placeholder: &str) -> syn::Result<Setting> {
    let key = display_path(&meta.path);
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(format!("expected `{key} = \"{placeholder}\"`")));
    }
    let input = meta.value()?;
    if input.peek(LitStr) {
        return Ok(Setting {
            key: meta.path.clone(),
            value: input.parse()?,
        });
    }
    let tokens = take_value(input)?;
    // Echo a single bare token back inside quotes: `default = 0` → `default = "0"`.
    let suggestion = match tokens.clone().into_iter().collect::<Vec<_>>().as_slice() {
        [TokenTree::Ident(ident)] => ident.to_string(),
        [TokenTree::Literal(lit)] if !lit.to_string().contains(['"', '\'']) => lit.to_string(),
        _ => placeholder.to_owned(),
    };
    let msg = format!("expected a string literal: `{key} = \"{suggestion}\"`");
    Err(if tokens.is_empty() {
        meta.error(msg)
    } else {
        syn::Error::new_spanned(tokens, msg)
    })
}

/// Accepts a bare keyword (`primary_key`). A value or a list after it is reported, but the
/// flag still counts as set: the intent is clear, and later rules should not cascade from it.
fn flag(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.is_empty() || meta.input.peek(Token![,]) {
        return Ok(());
    }
    let key = display_path(&meta.path);
    let tokens = take_value(meta.input)?;
    cx.error_spanned_by(
        tokens,
        format!("`{key}` takes no value: write `#[evolve({key})]`"),
    );
    Ok(())
}

fn unknown_key(meta: &ParseNestedMeta, level: Level) -> syn::Error {
    let key = display_path(&meta.path);
    let mut msg = format!(
        "unknown evolve attribute `{key}`, expected one of {}",
        symbol::list(level.keys()),
    );
    let other = level.other();
    if other.keys().iter().any(|s| meta.path == *s) {
        msg.push_str(&format!(
            "; `{key}` goes on the {}, not on the {}",
            other.noun(),
            level.noun(),
        ));
    } else if let Some(near) = level.keys().iter().find(|s| is_typo(&key, s.as_str())) {
        msg.push_str(&format!("; did you mean `{near}`?"));
    }
    syn::Error::new_spanned(&meta.path, msg)
}

/// Whether `written` is one small slip away from `known`: at most two single-character edits
/// (insert, delete, replace, or swap two neighbours), and fewer than half of its characters.
pub fn is_typo(written: &str, known: &str) -> bool {
    let a: Vec<char> = written.chars().collect();
    let b: Vec<char> = known.chars().collect();
    // Optimal string alignment distance.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    let distance = d[a.len()][b.len()];
    distance <= 2 && distance * 2 < b.len()
}

/// Consumes the tokens of the current key's value, up to the next top-level comma.
fn take_value(input: ParseStream) -> syn::Result<TokenStream> {
    input.step(|cursor| {
        let mut rest = *cursor;
        let mut tokens = TokenStream::new();
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            tokens.extend([tt]);
            rest = next;
        }
        Ok((tokens, rest))
    })
}

/// `a::b` as written, without the spaces `ToTokens` would put around `::`.
fn display_path(path: &Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let prefix = if path.leading_colon.is_some() {
        "::"
    } else {
        ""
    };
    format!("{prefix}{}", segments.join("::"))
}

#[cfg(test)]
mod tests {
    use super::is_typo;

    #[test]
    fn typos_are_near_misses_only() {
        assert!(is_typo("tabel", "table"));
        assert!(is_typo("primarykey", "primary_key"));
        assert!(is_typo("primary_keys", "primary_key"));
        assert!(is_typo("colum", "column"));
        assert!(is_typo("sqltype", "sql_type"));
        assert!(!is_typo("index", "default"));
        assert!(!is_typo("renamed", "default"));
        assert!(!is_typo("crat", "table"));
        assert!(!is_typo("foo", "crate"));
    }
}
