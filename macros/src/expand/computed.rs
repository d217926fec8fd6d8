//! `backfill_with = "f", inputs(..)`: the adapter that computes a batch of values with the
//! user's function (the runtime reads the rows and writes the values; no SQL here), and the
//! value an accessor computes for a row the backfill has not reached yet.
//!
//! The function is called as `f(input0, input1, ..)`, each input read with its field's type,
//! with every token of the call spanned at the `backfill_with` literal: a function with the
//! wrong arguments or return type is reported there.

use super::Private;
use crate::ast::{Field, Model};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;

/// The name of the adapter of `field`.
pub fn adapter_name(field: &Field) -> syn::Ident {
    format_ident!("__pgevolve_compute_{}", field.ident.unraw())
}

/// The user's function path, every token at the literal's span; `None` when it did not parse
/// (validation reported it).
fn function(field: &Field) -> Option<(TokenStream, Span)> {
    let with = field.attrs.backfill_with.as_ref()?;
    let path = with.get()?;
    let span = with.value.span();
    Some((super::respan(path.to_token_stream(), span), span))
}

/// The fields `inputs(..)` names, in order.
fn inputs<'m>(model: &'m Model, field: &Field) -> Vec<(usize, &'m Field<'m>)> {
    let Some(inputs) = &field.attrs.inputs else {
        return Vec::new();
    };
    inputs
        .list
        .iter()
        .filter_map(|lit| {
            let column = lit.value();
            model
                .fields
                .iter()
                .enumerate()
                .find(|(_, f)| f.column_name() == column)
        })
        .collect()
}

/// The adapters of every computed field of the model.
pub fn adapters(model: &Model, private: &Private) -> TokenStream {
    let mut out = TokenStream::new();
    for field in &model.fields {
        let Some((path, span)) = function(field) else {
            continue;
        };
        let name = adapter_name(field);
        let ty = field.ty;
        let (locals, reads) = arguments(
            model,
            field,
            span,
            |n, _, input_ty| quote!(#private::read_input::<#input_ty>(__pgevolve_row, #n)?),
        );
        let call = quote_spanned!(span=> #path(#(#locals),*));
        out.extend(quote! {
            #[allow(non_snake_case)]
            fn #name(
                __pgevolve_rows: &[#private::PgRow],
                query: #private::ComputeQuery,
            ) -> #private::Result<#private::ComputeQuery, #private::SqlxError> {
                let mut __pgevolve_values: #private::Vec<#ty> =
                    #private::Vec::with_capacity(__pgevolve_rows.len());
                for __pgevolve_row in __pgevolve_rows {
                    #(#reads)*
                    let __pgevolve_value: #ty = #call;
                    __pgevolve_values.push(__pgevolve_value);
                }
                #private::Ok(#private::bind_values(query, __pgevolve_values))
            }
        });
    }
    out
}

/// The `computed: Some(Computed { .. })` of a computed field's `ColumnSpec`, if it is one.
pub fn spec(model: &Model, field: &Field, private: &Private) -> TokenStream {
    let Some(with) = &field.attrs.backfill_with else {
        return TokenStream::new();
    };
    if with.get().is_none() {
        return TokenStream::new();
    }
    let function = with.value.value();
    let inputs: Vec<String> = inputs(model, field)
        .into_iter()
        .map(|(_, f)| f.column_name())
        .collect();
    let adapter = adapter_name(field);
    quote! {
        computed: #private::Option::Some(#private::Computed {
            function: #function,
            inputs: &[#(#inputs),*],
            compute: #adapter,
        }),
    }
}

/// How `from_evolved_row` reads a computed field at select-list position `index`: the column,
/// or, while it is `NULL` (a row the backfill has not reached, or before expand), the value
/// the function computes from the row's inputs as read now.
pub fn read(model: &Model, field: &Field, index: usize, private: &Private) -> Option<TokenStream> {
    let (path, span) = function(field)?;
    let ty = field.ty;
    let (locals, reads) = arguments(
        model,
        field,
        span,
        |_, i, input_ty| quote!(<#input_ty as #private::ReadField>::read_from(__pgevolve_row, #i)?),
    );
    let call = quote_spanned!(span=> #path(#(#locals),*));
    let name = field.ident;
    Some(quote! {
        #name: match <#private::Option<#ty> as #private::ReadField>::read_from(__pgevolve_row, #index)? {
            #private::Some(__pgevolve_value) => __pgevolve_value,
            #private::None => {
                #(#reads)*
                #call
            }
        }
    })
}

/// The call's arguments: one local per input (named at the literal's span, so a wrong argument
/// type is reported at the `backfill_with` literal), and the statements that read them with
/// their fields' types (`read(n, select-list index, type)`).
fn arguments(
    model: &Model,
    field: &Field,
    span: Span,
    read: impl Fn(usize, usize, &syn::Type) -> TokenStream,
) -> (Vec<syn::Ident>, Vec<TokenStream>) {
    inputs(model, field)
        .into_iter()
        .enumerate()
        .map(|(n, (i, input))| {
            let local = format_ident!("__pgevolve_in{}", n, span = span);
            let input_ty = input.ty;
            let value = read(n, i, input_ty);
            let statement = quote!(let #local: #input_ty = #value;);
            (local, statement)
        })
        .unzip()
}
