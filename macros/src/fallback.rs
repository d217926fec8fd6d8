//! What the derive emits when the input has errors: the errors, plus a stub impl so that code
//! using the type (`User::plan()`, `Evolver::model::<User>()`) still type-checks and the user sees
//! only the real mistakes, not a cascade of "trait `Evolve` is not implemented" errors.

use crate::expand::{Private, wrap};
use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

pub fn expand(input: &DeriveInput, krate: Option<&syn::Path>, errors: syn::Error) -> TokenStream {
    let errors = errors.into_compile_error();
    let private = Private::new(krate);
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let stub = wrap(quote! {
        #[automatically_derived]
        #[allow(unused_qualifications, non_upper_case_globals)]
        impl #impl_generics #private::Evolve for #ident #ty_generics #where_clause {
            const MODEL: #private::ModelSpec = #private::ModelSpec::DEFAULT;

            fn model() -> &'static #private::ModelSpec {
                static __PGEVOLVE_MODEL: #private::ModelSpec = #private::ModelSpec::DEFAULT;
                &__PGEVOLVE_MODEL
            }
        }
    });
    quote! {
        #errors
        #stub
    }
}
