//! The accessors: `insert`, `insert_returning` (models with a generated field), `insert_many`,
//! `update`, `delete`, `find`, `fetch_all`, `select` and the column helpers. They carry no SQL:
//! each asks the runtime for the statement that is right in the current phases of the database
//! it runs on (`model_sql_in`, with the scope the executor gives: a pool's database, or an
//! evolution's handle) and binds the fields by position.

use super::Private;
use crate::ast::Model;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

/// Binds field `f` of `value`. Without `sql_type`, an enum that renames a label is sent as
/// its label in text (`__private::as_text`); the paths name `ColumnType` exactly as the spec
/// does, so an unsupported type gets one error for it, not one per accessor.
fn bind(f: &crate::ast::Field, value: &TokenStream, private: &Private) -> TokenStream {
    let (name, ty) = (f.ident, f.ty);
    let private = private.spanned(ty.span());
    let bind =
        quote_spanned!(ty.span()=> <#ty as #private::BindField>::bind_to(&#value.#name, query));
    match &f.attrs.sql_type {
        Some(_) => quote_spanned!(ty.span()=> query = #bind;),
        None => quote_spanned!(ty.span()=>
            query = if #private::as_text(<#ty as #private::ColumnType>::ENUM) {
                #private::bind_label(<#ty as #private::ColumnType>::enum_label(&#value.#name), query)
            } else {
                #bind
            };
        ),
    }
}

pub fn impl_accessors(model: &Model, private: &Private) -> TokenStream {
    let ident = model.ident;
    // Binding and reading go through traits with their own messages, spanned at each field's
    // type, so an unsupported type reads as one clear error per field, not sqlx internals.
    let binds = |value: TokenStream| -> Vec<TokenStream> {
        model
            .fields
            .iter()
            .map(|f| bind(f, &value, private))
            .collect()
    };
    let row = format_ident!("__pgevolve_row");
    let self_binds = binds(quote!(self));
    let generated: Vec<String> = model
        .fields
        .iter()
        .filter(|f| f.attrs.generated.is_some())
        .map(|f| format!("`{}`", f.rust_name()))
        .collect();
    // Only for models with a generated field: elsewhere `insert` already does all it would.
    let insert_returning = if generated.is_empty() {
        quote! {}
    } else {
        let written: Vec<TokenStream> = model
            .fields
            .iter()
            .filter(|f| f.attrs.generated.is_none())
            .map(|f| bind(f, &quote!(self), private))
            .collect();
        let doc = format!(
            "Inserts this row and lets the database assign {} (`#[evolve(generated)]`): the value in `self` \
             is not sent. Returns the row as stored, read like `find` reads it, so the result carries the \
             assigned value. Every other column that must be written in the current phases is written, as \
             `insert` does. To choose the value yourself (e.g. copying rows), use `insert`; a `GENERATED \
             ALWAYS` identity column refuses that.",
            generated.join(", ")
        );
        quote! {
            #[doc = #doc]
            pub async fn insert_returning<'e, E>(&self, executor: E) -> #private::Result<Self, #private::Error>
            where
                E: #private::EvolvedExecutor<'e>,
            {
                let (__pgevolve_scope, executor) = #private::EvolvedExecutor::into_parts(executor);
                let sql = #private::model_sql_in(<Self as #private::Evolve>::model(), &__pgevolve_scope)?;
                let mut query = #private::query(&sql.insert_returning);
                #( #written )*
                let #row = sql.fetch_one(#private::Accessor::InsertReturning, query, executor).await?;
                #private::Ok(<Self as #private::FromEvolvedRow>::from_evolved_row(&#row)?)
            }
        }
    };
    let row_binds = binds(quote!(r));
    let reads: Vec<TokenStream> = model
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if let Some(read) = super::computed::read(model, f, i, private) {
                return read;
            }
            let (name, ty) = (f.ident, f.ty);
            let private = private.spanned(ty.span());
            match &f.attrs.sql_type {
                Some(_) => quote_spanned!(ty.span()=> #name: <#ty as #private::ReadField>::read_from(__pgevolve_row, #i)?),
                // Through its `ColumnType`: an enum renaming a label is read as text.
                None => quote_spanned!(ty.span()=>
                    #name: if #private::as_text(<#ty as #private::ColumnType>::ENUM) {
                        <#ty as #private::ReadField>::read_unchecked(__pgevolve_row, #i)?
                    } else {
                        <#ty as #private::ReadField>::read_from(__pgevolve_row, #i)?
                    }
                ),
            }
        })
        .collect();
    let keys: Vec<_> = model
        .fields
        .iter()
        .filter(|f| f.attrs.primary_key.is_some())
        .collect();
    let key_params: Vec<TokenStream> = keys
        .iter()
        .map(|f| {
            let (name, ty) = (f.ident, f.ty);
            quote!(#name: &#ty)
        })
        .collect();
    let key_names: Vec<&syn::Ident> = keys.iter().map(|f| f.ident).collect();
    let key_doc = keys
        .iter()
        .map(|f| format!("`{}`", f.rust_name()))
        .collect::<Vec<_>>()
        .join(", ");
    let by_key = if keys.is_empty() {
        quote! {}
    } else {
        let find_doc = format!(
            "The row with this primary key ({key_doc}), read from the columns that are authoritative now."
        );
        let delete_doc = format!(
            "Deletes the row with this primary key ({key_doc}); returns the rows deleted (0 or 1)."
        );
        quote! {
            #[doc = "Updates every non-key column of the row with this primary key, writing every column that must stay in sync now; returns the rows updated (0 or 1)."]
            pub async fn update<'e, E>(&self, executor: E) -> #private::Result<u64, #private::Error>
            where
                E: #private::EvolvedExecutor<'e>,
            {
                let (__pgevolve_scope, executor) = #private::EvolvedExecutor::into_parts(executor);
                let sql = #private::model_sql_in(<Self as #private::Evolve>::model(), &__pgevolve_scope)?;
                let mut query = #private::query(&sql.update);
                #( #self_binds )*
                let done = sql.execute(#private::Accessor::Update, query, executor).await?;
                #private::Ok(done.rows_affected())
            }

            #[doc = #delete_doc]
            pub async fn delete<'e, E>(#(#key_params,)* executor: E) -> #private::Result<u64, #private::Error>
            where
                E: #private::EvolvedExecutor<'e>,
            {
                let (__pgevolve_scope, executor) = #private::EvolvedExecutor::into_parts(executor);
                let sql = #private::model_sql_in(<Self as #private::Evolve>::model(), &__pgevolve_scope)?;
                let query = #private::query(&sql.delete)
                    #( .bind(#key_names) )*;
                let done = sql.execute(#private::Accessor::Delete, query, executor).await?;
                #private::Ok(done.rows_affected())
            }

            #[doc = #find_doc]
            pub async fn find<'e, E>(#(#key_params,)* executor: E) -> #private::Result<#private::Option<Self>, #private::Error>
            where
                E: #private::EvolvedExecutor<'e>,
            {
                let (__pgevolve_scope, executor) = #private::EvolvedExecutor::into_parts(executor);
                let sql = #private::model_sql_in(<Self as #private::Evolve>::model(), &__pgevolve_scope)?;
                let query = #private::query(&sql.find)
                    #( .bind(#key_names) )*;
                let #row = sql.fetch_optional(#private::Accessor::Find, query, executor).await?;
                match #row {
                    #private::Some(#row) => #private::Ok(#private::Some(
                        <Self as #private::FromEvolvedRow>::from_evolved_row(&#row)?,
                    )),
                    #private::None => #private::Ok(#private::None),
                }
            }
        }
    };
    quote! {
        #[automatically_derived]
        #[allow(unused_qualifications)]
        impl #private::FromEvolvedRow for #ident {
            fn from_evolved_row(#row: &#private::PgRow) -> #private::Result<Self, #private::SqlxError> {
                #private::Ok(Self {
                    #( #reads, )*
                })
            }
        }

        #[automatically_derived]
        #[allow(unused_qualifications, dead_code)]
        impl #ident {
            #[doc = "Inserts this row, writing every column that must be written in the current phases (both names mid-rename, the new column as soon as it exists)."]
            pub async fn insert<'e, E>(&self, executor: E) -> #private::Result<(), #private::Error>
            where
                E: #private::EvolvedExecutor<'e>,
            {
                let (__pgevolve_scope, executor) = #private::EvolvedExecutor::into_parts(executor);
                let sql = #private::model_sql_in(<Self as #private::Evolve>::model(), &__pgevolve_scope)?;
                let mut query = #private::query(&sql.insert);
                #( #self_binds )*
                sql.execute(#private::Accessor::Insert, query, executor).await?;
                #private::Ok(())
            }

            #insert_returning

            #[doc = "Inserts the rows in one statement; returns the rows inserted. Errors, inserting nothing, when the slice needs more than PostgreSQL's 65,535 bind parameters: split it with `chunks`."]
            pub async fn insert_many<'e, E>(rows: &[Self], executor: E) -> #private::Result<u64, #private::Error>
            where
                E: #private::EvolvedExecutor<'e>,
            {
                if rows.is_empty() {
                    return #private::Ok(0);
                }
                let (__pgevolve_scope, executor) = #private::EvolvedExecutor::into_parts(executor);
                let sql = #private::model_sql_in(<Self as #private::Evolve>::model(), &__pgevolve_scope)?;
                #private::check_insert_many(&sql, rows.len())?;
                let mut query = #private::query(&sql.insert_many(rows.len()));
                for r in rows {
                    #( #row_binds )*
                }
                let done = sql.execute(#private::Accessor::InsertMany(rows.len()), query, executor).await?;
                #private::Ok(done.rows_affected())
            }

            #by_key

            #[doc = "Every row, read from the columns that are authoritative now."]
            pub async fn fetch_all<'e, E>(executor: E) -> #private::Result<#private::Vec<Self>, #private::Error>
            where
                E: #private::EvolvedExecutor<'e>,
            {
                Self::select().fetch_all(executor).await
            }

            #[doc = "A query with a hand-written predicate: `{field}` in `filter` and `order_by` stands for the SQL that reads that field now."]
            pub fn select() -> #private::Select<Self> {
                #private::Select::new()
            }

            #[doc = "The select list (`expr AS \"column\", ...`, in field order) for hand-written queries, right for the current phases."]
            pub fn select_list() -> #private::Result<#private::String, #private::Error> {
                #private::Ok(#private::model_sql(<Self as #private::Evolve>::model())?.select_list.clone())
            }

            #[doc = "The SQL expression that reads the field named `field` in the current phases, e.g. `COALESCE(\"full_name\", \"name\")` mid-rename; `None` for an unknown field."]
            pub fn read_expr(field: &str) -> #private::Result<#private::Option<#private::String>, #private::Error> {
                #private::read_expr(<Self as #private::Evolve>::model(), field)
            }
        }
    }
}
