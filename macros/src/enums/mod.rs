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
            let (new_labels, old_labels): (Vec<&String>, Vec<&String>) =
                parsed.renamed.iter().map(|(n, o)| (n, o)).unzip();
            let variants = data_variants(input);
            let variant_labels = parsed.labels.iter();
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
                            renamed: &[#((#new_labels, #old_labels)),*],
                        });

                    fn enum_label(&self) -> #private::Option<&'static str> {
                        #private::Option::Some(match self {
                            #(Self::#variants => #variant_labels,)*
                        })
                    }
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

/// The variants' names (a unit enum: `parse` refused anything else).
fn data_variants(input: &DeriveInput) -> Vec<&syn::Ident> {
    match &input.data {
        syn::Data::Enum(data) => data.variants.iter().map(|v| &v.ident).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    fn expand(input: proc_macro2::TokenStream) -> String {
        super::derive(&syn::parse2(input).unwrap()).to_string()
    }

    /// Labels and the type name come from sqlx's attributes when `evolve` leaves them out, so
    /// pgevolve creates the labels `#[derive(sqlx::Type)]` encodes.
    #[test]
    fn sqlx_attributes_decide_the_labels_and_the_type() {
        let out = expand(quote! {
            #[derive(sqlx::Type, EvolveEnum)]
            #[sqlx(type_name = "order_status", rename_all = "snake_case")]
            enum OrderStatus {
                Pending,
                InTransit,
                #[sqlx(rename = "done")]
                Delivered,
            }
        });
        assert!(
            out.contains("const SQL_TYPE : & 'static str = \"order_status\""),
            "{out}"
        );
        assert!(
            out.contains("labels : & [\"pending\" , \"in_transit\" , \"done\"]"),
            "{out}"
        );
    }

    #[test]
    fn a_type_name_that_differs_from_sqlxs_is_refused() {
        let out = expand(quote! {
            #[sqlx(type_name = "order_status")]
            #[evolve(type_name = "order_state")]
            enum OrderStatus { Pending }
        });
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("differs from"), "{out}");
    }

    #[test]
    fn labels_that_collide_under_rename_all_are_refused() {
        let out = expand(quote! {
            #[sqlx(type_name = "order_status", rename_all = "lowercase")]
            enum OrderStatus { InTransit, Intransit }
        });
        assert!(out.contains("already taken by an earlier variant"), "{out}");
    }

    #[test]
    fn a_schema_qualifies_the_sql_type() {
        let out = expand(quote! {
            #[evolve(type_name = "order_status", schema = "shop")]
            enum OrderStatus { Pending }
        });
        assert!(out.contains("\"shop.order_status\""), "{out}");
    }
}
