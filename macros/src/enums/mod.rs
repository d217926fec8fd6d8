//! `#[derive(EvolveEnum)]`: a Rust enum mapped to a PostgreSQL enum type. Parse (with the
//! checks, `ast`) → expand (here): an `impl ColumnType` whose `ENUM` is the type's static spec,
//! so a struct field of the enum's type brings the type's steps into its model with no
//! attribute. No SQL: the runtime renders the statements from the spec.

mod ast;
mod case;

use crate::ctxt::Ctxt;
use crate::expand::{Private, wrap};
use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let parsed = ast::parse(&cx, input);
    let private = Private::new(None);
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    match cx.check() {
        Ok(()) => {
            let rust_name = ident.to_string();
            let schema = &parsed.schema;
            let name = &parsed.type_name;
            // As `format_type` prints it: unqualified in `public`.
            let sql_type = if schema == "public" {
                name.clone()
            } else {
                format!("{schema}.{name}")
            };
            let labels = &parsed.labels;
            wrap(quote! {
                #[automatically_derived]
                impl #impl_generics #private::ColumnType for #ident #ty_generics #where_clause {
                    const SQL_TYPE: &'static str = #sql_type;
                    const ENUM: #private::Option<&'static #private::EnumSpec> =
                        #private::Option::Some(&#private::EnumSpec {
                            rust_name: #rust_name,
                            schema: #schema,
                            name: #name,
                            labels: &[#(#labels),*],
                        });
                }
            })
        }
        // The errors, plus an impl so that fields of the type raise no second error.
        Err(errors) => {
            let errors = errors.into_compile_error();
            let stub = wrap(quote! {
                #[automatically_derived]
                impl #impl_generics #private::ColumnType for #ident #ty_generics #where_clause {
                    const SQL_TYPE: &'static str = "";
                }
            });
            quote!(#errors #stub)
        }
    }
}
