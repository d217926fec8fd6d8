//! Token generation. Runs only on input that passed validation; never reports errors itself.

mod access;
mod computed;
mod spec;

use crate::ast::Model;
use crate::ctxt::Ctxt;
use crate::{fallback, validate};
use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::DeriveInput;

/// parse → validate → expand; on any error, the errors plus a stub impl (see `fallback`).
pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let model = Model::from_ast(&cx, input);
    validate::check(&cx, &model);
    match cx.check() {
        Ok(()) => impl_evolve(&model),
        Err(errors) => fallback::expand(input, model.attrs.krate.as_ref(), errors),
    }
}

fn impl_evolve(model: &Model) -> TokenStream {
    let private = Private::new(model.attrs.krate.as_ref());
    let ident = model.ident;
    let spec = spec::QuoteModel {
        model,
        private: &private,
    };
    let accessors = access::impl_accessors(model, &private);
    let adapters = computed::adapters(model, &private);
    wrap(quote! {
        #adapters

        #[automatically_derived]
        // `needless_update`: spec literals end with `..DEFAULT` even when every field is written.
        #[allow(unused_qualifications, non_upper_case_globals, clippy::needless_update)]
        impl #private::Evolve for #ident {
            const MODEL: #private::ModelSpec = #spec;

            fn model() -> &'static #private::ModelSpec {
                static __PGEVOLVE_MODEL: #private::ModelSpec = <#ident as #private::Evolve>::MODEL;
                &__PGEVOLVE_MODEL
            }
        }

        #accessors
    })
}

/// Puts the generated items in an anonymous const, so nothing they name leaks into user scope.
pub fn wrap(items: TokenStream) -> TokenStream {
    quote! {
        const _: () = {
            #items
        };
    }
}

/// The path generated code reaches the runtime through: `::pgevolve::__private`, or
/// `<crate>::__private` with `#[evolve(crate = "..")]`.
pub struct Private<'a> {
    krate: Option<&'a syn::Path>,
    span: Span,
}

impl<'a> Private<'a> {
    pub fn new(krate: Option<&'a syn::Path>) -> Self {
        Private {
            krate,
            span: Span::call_site(),
        }
    }

    /// The same path with every token at `span`, for code whose errors should point there.
    pub fn spanned(&self, span: Span) -> Self {
        Private {
            krate: self.krate,
            span,
        }
    }
}

impl ToTokens for Private<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let span = self.span;
        match self.krate {
            Some(path) => {
                let path = respan(path.to_token_stream(), span);
                tokens.extend(quote_spanned!(span=> #path::__private));
            }
            None => tokens.extend(quote_spanned!(span=> ::pgevolve::__private)),
        }
    }
}

fn respan(stream: TokenStream, span: Span) -> TokenStream {
    stream
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut group = Group::new(group.delimiter(), respan(group.stream(), span));
                group.set_span(span);
                token = TokenTree::Group(group);
            }
            token.set_span(span);
            token
        })
        .collect()
}
