//! The `const MODEL` literal: one `ToTokens` newtype per runtime spec type.

use super::Private;
use crate::ast::{Field, Model};
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
        let columns = model
            .fields
            .iter()
            .map(|field| QuoteColumn { field, private });
        tokens.extend(quote! {
            #private::ModelSpec {
                rust_name: #rust_name,
                schema: #schema,
                table: #table,
                columns: &[#(#columns),*],
                ..#private::ModelSpec::DEFAULT
            }
        });
    }
}

/// `ColumnSpec { field, name, sql_type, nullable, primary_key, fill, ..ColumnSpec::DEFAULT }`.
struct QuoteColumn<'a> {
    field: &'a Field<'a>,
    private: &'a Private<'a>,
}

impl ToTokens for QuoteColumn<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let QuoteColumn { field, private } = *self;
        let rust_name = field.rust_name();
        let name = field.column_name();
        let sql_type = QuoteSqlType { field, private };
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
        tokens.extend(quote! {
            #private::ColumnSpec {
                field: #rust_name,
                name: #name,
                sql_type: #sql_type,
                nullable: #nullable,
                primary_key: #primary_key,
                fill: #fill,
                renamed_from: #renamed_from,
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
