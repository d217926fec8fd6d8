//! The syntax of `#[evolve(..)]`: which keys exist at each level and what their values look like.
//!
//! Parsing records every problem in the [`Ctxt`] and goes on with the next key, so one build
//! reports all attribute mistakes. Meaning (conflicts, preconditions) is checked in `validate`.

use crate::ctxt::Ctxt;
use crate::symbol::{self, Symbol};
use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::{Attribute, LitStr, Path, Token};

/// A `key = "value"` setting. Both tokens are kept: some errors point at the key, others at the
/// value.
pub struct Setting {
    pub key: Path,
    pub value: LitStr,
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
}

impl Level {
    fn noun(self) -> &'static str {
        match self {
            Level::Struct => "struct",
            Level::Field => "field",
        }
    }

    fn keys(self) -> &'static [Symbol] {
        match self {
            Level::Struct => symbol::STRUCT_KEYS,
            Level::Field => symbol::FIELD_KEYS,
        }
    }

    fn other(self) -> Level {
        match self {
            Level::Struct => Level::Field,
            Level::Field => Level::Struct,
        }
    }
}

/// `#[evolve(..)]` on the struct.
pub struct Container {
    pub table: Option<Setting>,
    pub schema: Option<Setting>,
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
            } else {
                return Err(unknown_key(meta, level));
            }
            Ok(())
        });

        Container {
            table: table.get(),
            schema: schema.get(),
            krate: krate.get(),
            malformed: !parsed,
        }
    }
}

/// `#[evolve(..)]` on one field.
pub struct Field {
    /// The `primary_key` keyword, for spans.
    pub primary_key: Option<Path>,
    pub column: Option<Setting>,
    pub sql_type: Option<Setting>,
    pub backfill: Option<Setting>,
    pub default: Option<Setting>,
    pub renamed_from: Option<Setting>,
}

impl Field {
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let level = Level::Field;
        let mut primary_key = Attr::none(cx, symbol::PRIMARY_KEY, level);
        let mut column = Attr::none(cx, symbol::COLUMN, level);
        let mut sql_type = Attr::none(cx, symbol::SQL_TYPE, level);
        let mut backfill = Attr::none(cx, symbol::BACKFILL, level);
        let mut default = Attr::none(cx, symbol::DEFAULT, level);
        let mut renamed_from = Attr::none(cx, symbol::RENAMED_FROM, level);

        for_each_key(cx, attrs, level, |meta| {
            if meta.path == symbol::PRIMARY_KEY {
                flag(cx, meta)?;
                primary_key.set(&meta.path, meta.path.clone());
            } else if meta.path == symbol::COLUMN {
                column.set(&meta.path, setting(meta, "name")?);
            } else if meta.path == symbol::SQL_TYPE {
                sql_type.set(&meta.path, setting(meta, "numeric(12,2)")?);
            } else if meta.path == symbol::BACKFILL {
                backfill.set(&meta.path, setting(meta, "SQL expression")?);
            } else if meta.path == symbol::DEFAULT {
                default.set(&meta.path, setting(meta, "SQL constant")?);
            } else if meta.path == symbol::RENAMED_FROM {
                renamed_from.set(&meta.path, setting(meta, "old_column")?);
            } else {
                return Err(unknown_key(meta, level));
            }
            Ok(())
        });

        Field {
            primary_key: primary_key.get(),
            column: column.get(),
            sql_type: sql_type.get(),
            backfill: backfill.get(),
            default: default.get(),
            renamed_from: renamed_from.get(),
        }
    }
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
fn is_typo(written: &str, known: &str) -> bool {
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
