//! The `const MODEL` literal: one `ToTokens` newtype per runtime spec type.

use super::Private;
use crate::ast::{Field, Model};
use crate::attr::{Check, Index, Typed};
use crate::value::{IndexMethod, OnDelete, References};
use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;

/// `ModelSpec { rust_name, schema, table, columns: &[..], ..ModelSpec::DEFAULT }`.
pub struct QuoteModel<'a> {
    pub model: &'a Model<'a>,
    pub private: &'a Private<'a>,
}

impl ToTokens for QuoteModel<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let QuoteModel { model, private } = *self;
        let rust_name = model.rust_name();
        let schema = model.schema();
        let table = model.table();
        let columns = model.fields.iter().map(|field| QuoteColumn {
            model,
            field,
            private,
        });
        // Field-level indexes and checks first, in field order, then the struct-level ones.
        let indexes: Vec<QuoteIndex> = model
            .fields
            .iter()
            .filter_map(|field| {
                field.attrs.index.as_ref().map(|index| QuoteIndex {
                    index,
                    field: Some(field),
                    private,
                })
            })
            .chain(model.attrs.indexes.iter().map(|index| QuoteIndex {
                index,
                field: None,
                private,
            }))
            .collect();
        let checks: Vec<QuoteCheck> = model
            .fields
            .iter()
            .filter_map(|field| {
                field.attrs.check.as_ref().map(|check| QuoteCheck {
                    check,
                    field: Some(field),
                    private,
                })
            })
            .chain(model.attrs.checks.iter().map(|check| QuoteCheck {
                check,
                field: None,
                private,
            }))
            .collect();
        // Emitted only when present, so expansions of structs without them stay as they were.
        let indexes = (!indexes.is_empty()).then(|| quote!(indexes: &[#(#indexes),*],));
        let checks = (!checks.is_empty()).then(|| quote!(checks: &[#(#checks),*],));
        let dropped: Vec<String> = model
            .attrs
            .dropped
            .iter()
            .flat_map(|d| d.list.iter().map(syn::LitStr::value))
            .collect();
        let dropped = (!dropped.is_empty()).then(|| quote!(dropped: &[#(#dropped),*],));
        let renamed_from = model.attrs.renamed_from.as_ref().map(|from| {
            let from = &from.value;
            quote!(renamed_from: #private::Option::Some(#from),)
        });
        tokens.extend(quote! {
            #private::ModelSpec {
                rust_name: #rust_name,
                schema: #schema,
                table: #table,
                columns: &[#(#columns),*],
                #indexes
                #checks
                #dropped
                #renamed_from
                ..#private::ModelSpec::DEFAULT
            }
        });
    }
}

/// `ColumnSpec { field, name, sql_type, nullable, primary_key, fill, renamed_from, ..ColumnSpec::DEFAULT }`,
/// plus `unique`, `references` and `generated` when set.
struct QuoteColumn<'a> {
    model: &'a Model<'a>,
    field: &'a Field<'a>,
    private: &'a Private<'a>,
}

impl ToTokens for QuoteColumn<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let QuoteColumn {
            model,
            field,
            private,
        } = *self;
        let rust_name = field.rust_name();
        let name = field.column_name();
        let sql_type = QuoteSqlType { field, private };
        // A field whose type derives `EvolveEnum` brings its enum's steps (see `ColumnType::ENUM`).
        let enum_type = match &field.attrs.sql_type {
            Some(_) => quote!(),
            None => {
                let ty = field.ty;
                let private = private.spanned(ty.span());
                quote_spanned!(ty.span()=> enum_type: <#ty as #private::ColumnType>::ENUM,)
            }
        };
        let nullable = field.is_option();
        let primary_key = field.attrs.primary_key.is_some();
        let fill = QuoteFill { field, private };
        let renamed_from = match &field.attrs.renamed_from {
            Some(old) => {
                let old = old.value.value();
                quote!(#private::Option::Some(#old))
            }
            None => quote!(#private::Option::None),
        };
        let type_change = field.attrs.type_from.as_ref().map(|from| {
            let from = from.value.value();
            let using = optional(
                private,
                field
                    .attrs
                    .using
                    .as_ref()
                    .map(|s| s.value.value())
                    .as_deref(),
            );
            let down = optional(
                private,
                field
                    .attrs
                    .down
                    .as_ref()
                    .map(|s| s.value.value())
                    .as_deref(),
            );
            quote! {
                type_change: #private::Option::Some(#private::TypeChange {
                    from: #from,
                    using: #using,
                    down: #down,
                    ..#private::TypeChange::DEFAULT
                }),
            }
        });
        let unique = field.attrs.unique.is_some().then(|| quote!(unique: true,));
        let generated = field
            .attrs
            .generated
            .is_some()
            .then(|| quote!(generated: true,));
        let set_not_null = field.attrs.set_not_null.as_ref().map(|_| {
            let backfill = optional(
                private,
                field
                    .attrs
                    .backfill
                    .as_ref()
                    .map(|b| b.value.value())
                    .as_deref(),
            );
            quote! {
                set_not_null: #private::Option::Some(#private::SetNotNull {
                    backfill: #backfill,
                    ..#private::SetNotNull::DEFAULT
                }),
            }
        });
        let drop_not_null = field
            .attrs
            .drop_not_null
            .is_some()
            .then(|| quote!(drop_not_null: true,));
        let set_default = field.attrs.set_default.as_ref().map(|d| {
            let sql = d.value.value();
            quote!(set_default: #private::Option::Some(#sql),)
        });
        let computed = super::computed::spec(model, field, private);
        let references = field.attrs.references.as_ref().and_then(Typed::get).map(
            |References {
                 schema,
                 table,
                 column,
             }| {
                let schema = optional(private, schema.as_deref());
                let on_delete = match field.attrs.on_delete.as_ref().and_then(Typed::get) {
                    Some(OnDelete::Cascade) => quote!(Cascade),
                    Some(OnDelete::Restrict) => quote!(Restrict),
                    Some(OnDelete::SetNull) => quote!(SetNull),
                    Some(OnDelete::NoAction) | None => quote!(NoAction),
                };
                quote! {
                    references: #private::Option::Some(#private::ForeignKeySpec {
                        schema: #schema,
                        table: #table,
                        column: #column,
                        on_delete: #private::OnDelete::#on_delete,
                        ..#private::ForeignKeySpec::DEFAULT
                    }),
                }
            },
        );
        tokens.extend(quote! {
            #private::ColumnSpec {
                field: #rust_name,
                name: #name,
                sql_type: #sql_type,
                nullable: #nullable,
                primary_key: #primary_key,
                fill: #fill,
                renamed_from: #renamed_from,
                #unique
                #references
                #generated
                #set_not_null
                #drop_not_null
                #set_default
                #type_change
                #computed
                #enum_type
                ..#private::ColumnSpec::DEFAULT
            }
        });
    }
}

/// The `sql_type` string as written, or `<T as ColumnType>::SQL_TYPE` spanned at the field's
/// type, so an unsupported type is reported there (through `ColumnType`'s
/// `#[diagnostic::on_unimplemented]`).
struct QuoteSqlType<'a> {
    field: &'a Field<'a>,
    private: &'a Private<'a>,
}

impl ToTokens for QuoteSqlType<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let QuoteSqlType { field, private } = *self;
        match &field.attrs.sql_type {
            Some(sql_type) => sql_type.value.value().to_tokens(tokens),
            None => {
                let ty = field.ty;
                let span = ty.span();
                let private = private.spanned(span);
                tokens.extend(quote_spanned! {span=>
                    <#ty as #private::ColumnType>::SQL_TYPE
                });
            }
        }
    }
}

/// `Fill::None`, `Fill::Backfill("..")` or `Fill::Default("..")`.
struct QuoteFill<'a> {
    field: &'a Field<'a>,
    private: &'a Private<'a>,
}

impl ToTokens for QuoteFill<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let QuoteFill { field, private } = *self;
        let attrs = &field.attrs;
        tokens.extend(match (&attrs.backfill, &attrs.default) {
            // With `set_not_null`, `backfill` fills the NULL rows of an existing column.
            (Some(_), _) if attrs.set_not_null.is_some() => quote!(#private::Fill::None),
            (Some(backfill), _) => {
                let sql = backfill.value.value();
                quote!(#private::Fill::Backfill(#sql))
            }
            (None, Some(default)) => {
                let sql = default.value.value();
                quote!(#private::Fill::Default(#sql))
            }
            (None, None) => quote!(#private::Fill::None),
        });
    }
}

/// `IndexSpec { name, columns, unique, method, predicate, include, ..IndexSpec::DEFAULT }`; a
/// field-level index indexes the field's column.
struct QuoteIndex<'a> {
    index: &'a Index,
    field: Option<&'a Field<'a>>,
    private: &'a Private<'a>,
}

impl ToTokens for QuoteIndex<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let QuoteIndex {
            index,
            field,
            private,
        } = *self;
        let name = optional(private, index.name.as_ref().map(|n| n.value.value()));
        let columns: Vec<String> = match (field, &index.columns) {
            (Some(field), _) => vec![field.column_name()],
            (None, Some(columns)) => columns.list.iter().map(|c| c.value()).collect(),
            (None, None) => Vec::new(),
        };
        let include: Vec<String> = index
            .include
            .iter()
            .flat_map(|c| c.list.iter().map(|c| c.value()))
            .collect();
        let unique = index.unique.is_some();
        let method = match index.method.as_ref().and_then(Typed::get) {
            Some(IndexMethod::Hash) => quote!(Hash),
            Some(IndexMethod::Gin) => quote!(Gin),
            Some(IndexMethod::Gist) => quote!(Gist),
            Some(IndexMethod::Brin) => quote!(Brin),
            Some(IndexMethod::Btree) | None => quote!(Btree),
        };
        let predicate = optional(private, index.predicate.as_ref().map(|p| p.value.value()));
        tokens.extend(quote! {
            #private::IndexSpec {
                name: #name,
                columns: &[#(#columns),*],
                unique: #unique,
                method: #private::IndexMethod::#method,
                predicate: #predicate,
                include: &[#(#include),*],
                ..#private::IndexSpec::DEFAULT
            }
        });
    }
}

/// `CheckSpec { name, column, expr, ..CheckSpec::DEFAULT }`.
struct QuoteCheck<'a> {
    check: &'a Check,
    field: Option<&'a Field<'a>>,
    private: &'a Private<'a>,
}

impl ToTokens for QuoteCheck<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let QuoteCheck {
            check,
            field,
            private,
        } = *self;
        let name = optional(private, check.name.as_ref().map(|n| n.value.value()));
        let column = optional(private, field.map(|f| f.column_name()));
        let expr = check
            .expr
            .as_ref()
            .map(|e| e.value.value())
            .unwrap_or_default();
        tokens.extend(quote! {
            #private::CheckSpec {
                name: #name,
                column: #column,
                expr: #expr,
                ..#private::CheckSpec::DEFAULT
            }
        });
    }
}

/// `Option::Some("..")` or `Option::None`.
fn optional(private: &Private, value: Option<impl ToTokens>) -> TokenStream {
    match value {
        Some(value) => quote!(#private::Option::Some(#value)),
        None => quote!(#private::Option::None),
    }
}
