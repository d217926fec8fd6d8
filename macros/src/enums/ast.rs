//! `#[derive(EvolveEnum)]` input: the enum's attributes (`#[evolve(..)]` and the
//! `#[sqlx(type_name, rename_all)]` / `#[sqlx(rename)]` it must agree with) and its variants'
//! labels, every problem recorded at its own token.

use super::case;
use crate::ctxt::Ctxt;
use pgevolve_naming::MAX_IDENTIFIER_BYTES;
use syn::{Data, DeriveInput, Fields, LitStr};

/// The enum as the derive sees it.
pub struct EnumInput {
    pub schema: String,
    /// The type's name; empty when missing (an error was recorded).
    pub type_name: String,
    /// The labels, in variant order.
    pub labels: Vec<String>,
    /// `(new, old)` for each variant with `#[evolve(renamed_from = "old")]`.
    pub renamed: Vec<(String, String)>,
}

const SAFE_REMOVAL: &str = "PostgreSQL cannot remove a value from an enum type, and rows may still hold it; \
    to retire a value, move the column to a new type without it: a new `#[derive(EvolveEnum)]` enum with another \
    `type_name` (say `order_status_v2`), and on the field `#[evolve(type_from = \"<old type>\", using = \"CASE ... END\")]`, \
    which copies every row through the mapping you write, kept in sync while old builds run";

pub fn parse(cx: &Ctxt, input: &DeriveInput) -> EnumInput {
    let mut out = EnumInput {
        schema: "public".into(),
        type_name: String::new(),
        labels: Vec::new(),
        renamed: Vec::new(),
    };
    // Each old label with its literal, for the checks once every label is known.
    let mut old_labels: Vec<(usize, LitStr)> = Vec::new();
    let data = match &input.data {
        Data::Enum(data) => data,
        Data::Struct(s) => {
            cx.error_spanned_by(
                s.struct_token,
                "`EvolveEnum` maps a Rust enum to a PostgreSQL enum type; for a struct that maps to a table, \
                 derive `Evolve`",
            );
            return out;
        }
        Data::Union(u) => {
            cx.error_spanned_by(
                u.union_token,
                "`EvolveEnum` maps a Rust enum to a PostgreSQL enum type; a union has no labels",
            );
            return out;
        }
    };
    let mut evolve_name: Option<LitStr> = None;
    let mut sqlx_name: Option<LitStr> = None;
    let mut rename_all: Option<LitStr> = None;
    for attr in &input.attrs {
        if attr.path().is_ident("evolve") {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("type_name") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if evolve_name.is_some() {
                        cx.error_spanned_by(&meta.path, "duplicate evolve attribute `type_name`");
                    }
                    check_identifier(cx, &lit, "type_name");
                    evolve_name = Some(lit);
                } else if meta.path.is_ident("schema") {
                    let lit: LitStr = meta.value()?.parse()?;
                    check_identifier(cx, &lit, "schema");
                    out.schema = lit.value();
                } else if meta.path.is_ident("removed") {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let labels = content.parse_terminated(
                        <LitStr as syn::parse::Parse>::parse,
                        syn::Token![,],
                    )?;
                    for label in &labels {
                        cx.error_spanned_by(
                            label,
                            format!("removing label `{}` is refused: {SAFE_REMOVAL}", label.value()),
                        );
                    }
                } else {
                    cx.error_spanned_by(
                        &meta.path,
                        format!(
                            "unknown evolve attribute `{}` on an enum; expected `type_name = \"...\"` or `schema = \"...\"`",
                            meta.path.get_ident().map(|i| i.to_string()).unwrap_or_default()
                        ),
                    );
                    if meta.input.peek(syn::Token![=]) {
                        let _: syn::Expr = meta.value()?.parse()?;
                    }
                }
                Ok(())
            });
            if let Err(e) = parsed {
                cx.syn_error(e);
            }
        } else if attr.path().is_ident("sqlx") {
            // Only the keys that decide labels; sqlx reports its own mistakes.
            let _ = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("type_name") {
                    sqlx_name = Some(meta.value()?.parse()?);
                } else if meta.path.is_ident("rename_all") {
                    rename_all = Some(meta.value()?.parse()?);
                } else if meta.input.peek(syn::Token![=]) {
                    let _: syn::Expr = meta.value()?.parse()?;
                }
                Ok(())
            });
        }
    }
    match (&evolve_name, &sqlx_name) {
        (Some(ours), Some(theirs)) if ours.value() != theirs.value() => cx.error_spanned_by(
            ours,
            format!(
                "`type_name = \"{}\"` differs from `#[sqlx(type_name = \"{}\")]`: sqlx would encode values for \
                 another type than the one pgevolve creates; write one name (the `evolve` one may be left out)",
                ours.value(),
                theirs.value()
            ),
        ),
        (Some(name), _) => out.type_name = name.value(),
        (None, Some(name)) => {
            check_identifier(cx, name, "type_name");
            out.type_name = name.value();
        }
        (None, None) => cx.error_spanned_by(
            &input.ident,
            "name the PostgreSQL enum type: `#[evolve(type_name = \"order_status\")]`, or sqlx's \
             `#[sqlx(type_name = \"order_status\")]`, which pgevolve reads too",
        ),
    }
    if let Some(rule) = &rename_all
        && !case::RULES.contains(&rule.value().as_str())
    {
        cx.error_spanned_by(
            rule,
            format!(
                "unknown `rename_all` rule; sqlx accepts {}",
                case::RULES.join(", ")
            ),
        );
    }
    if data.variants.is_empty() {
        cx.error_spanned_by(
            &input.ident,
            "an enum type needs at least one label; add a variant",
        );
    }
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            cx.error_spanned_by(
                &variant.fields,
                "a PostgreSQL enum label carries no data; make the variant a unit variant, or map the data to \
                 columns of a struct that derives `Evolve`",
            );
        }
        let mut label = match &rename_all {
            Some(rule) => case::apply(&rule.value(), &variant.ident.to_string()),
            None => variant.ident.to_string(),
        };
        let mut label_span: &dyn quote::ToTokens = &variant.ident;
        let mut renamed: Option<LitStr> = None;
        let mut renamed_from: Option<LitStr> = None;
        for attr in &variant.attrs {
            if attr.path().is_ident("sqlx") {
                let _ = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("rename") {
                        renamed = Some(meta.value()?.parse()?);
                    } else if meta.input.peek(syn::Token![=]) {
                        let _: syn::Expr = meta.value()?.parse()?;
                    }
                    Ok(())
                });
            } else if attr.path().is_ident("evolve") {
                let parsed = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("renamed_from") {
                        let lit: LitStr = meta.value()?.parse()?;
                        if renamed_from.is_some() {
                            cx.error_spanned_by(&meta.path, "duplicate evolve attribute `renamed_from`");
                        }
                        renamed_from = Some(lit);
                    } else if meta.path.is_ident("removed") {
                        cx.error_spanned_by(
                            &meta.path,
                            format!("`removed` is refused: {SAFE_REMOVAL}"),
                        );
                    } else {
                        cx.error_spanned_by(
                            &meta.path,
                            format!(
                                "unknown evolve attribute `{}` on an enum variant; expected `renamed_from = \"...\"` (the \
                                 label it had); the variant's label comes from its name, `#[sqlx(rename = \"...\")]` or \
                                 `#[sqlx(rename_all = \"...\")]`",
                                meta.path.get_ident().map(|i| i.to_string()).unwrap_or_default()
                            ),
                        );
                        if meta.input.peek(syn::Token![=]) {
                            let _: syn::Expr = meta.value()?.parse()?;
                        }
                    }
                    Ok(())
                });
                if let Err(e) = parsed {
                    cx.syn_error(e);
                }
            }
        }
        if let Some(lit) = &renamed {
            label = lit.value();
        }
        if let Some(lit) = &renamed {
            label_span = lit;
        }
        if label.is_empty() || label.len() > MAX_IDENTIFIER_BYTES {
            cx.error_spanned_by(
                label_span,
                format!(
                    "PostgreSQL enum labels are 1 to {MAX_IDENTIFIER_BYTES} bytes; `{label}` is {} bytes: \
                     write a shorter one with `#[sqlx(rename = \"...\")]`",
                    label.len()
                ),
            );
        }
        if out.labels.contains(&label) {
            cx.error_spanned_by(
                label_span,
                format!(
                    "label `{label}` is already taken by an earlier variant; give this one another with \
                     `#[sqlx(rename = \"...\")]`"
                ),
            );
        }
        if let Some(lit) = renamed_from {
            old_labels.push((out.labels.len(), lit));
        }
        out.labels.push(label);
    }
    for (at, lit) in &old_labels {
        let (old, new) = (lit.value(), &out.labels[*at]);
        if old.is_empty() || old.len() > MAX_IDENTIFIER_BYTES {
            cx.error_spanned_by(
                lit,
                format!("PostgreSQL enum labels are 1 to {MAX_IDENTIFIER_BYTES} bytes; `{old}` cannot be a label"),
            );
        } else if &old == new {
            cx.error_spanned_by(
                lit,
                format!("`renamed_from = \"{old}\"` is the variant's own label; remove it, or name the label it had"),
            );
        } else if out.labels.contains(&old) {
            cx.error_spanned_by(
                lit,
                format!(
                    "label `{old}` is another variant's label, so it cannot be renamed to `{new}`; a label can \
                     move to one new name only, and the old name is gone once renamed"
                ),
            );
        } else if out.renamed.iter().any(|(_, o)| *o == old) {
            cx.error_spanned_by(
                lit,
                format!("label `{old}` is already renamed by an earlier variant; a label gets one new name"),
            );
        } else {
            out.renamed.push((new.clone(), old));
        }
    }
    out
}

/// A name pgevolve writes into the `SQL_TYPE` of the enum: a plain lowercase identifier, so
/// that it reads the same quoted or not, as sqlx looks it up.
fn check_identifier(cx: &Ctxt, lit: &LitStr, key: &str) {
    let value = lit.value();
    let plain = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain || value.len() > MAX_IDENTIFIER_BYTES {
        cx.error_spanned_by(
            lit,
            format!(
                "`{key} = \"{value}\"` must be a plain lowercase identifier of at most {MAX_IDENTIFIER_BYTES} bytes \
                 (letters, digits, `_`), the form sqlx finds the type by; like `order_status`"
            ),
        );
    }
}
