//! Snapshots of prettyplease-formatted expansions (the input is stored as the snapshot's
//! description). Refresh with `INSTA_UPDATE=always cargo test -p pgevolve-macros` and review
//! the diff; the compile-fail behaviour is covered by the root `tests/ui.rs`.

use proc_macro2::TokenStream;
use quote::quote;

fn pretty(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(err) => panic!("expansion is not a valid Rust file: {err}\n{tokens}"),
    }
}

macro_rules! expansion_snapshot {
    ($(#[$doc:meta])* $name:ident, { $($input:tt)* }) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            let input = quote!($($input)*);
            let output = pretty(crate::derive_evolve_inner(input.clone()));
            insta::with_settings!({
                description => pretty(input),
                omit_expression => true,
                prepend_module_to_snapshot => false,
            }, {
                insta::assert_snapshot!(stringify!($name), output);
            });
        }
    };
}

expansion_snapshot!(
    /// Every attribute on the struct from the design document's example.
    user,
    {
        #[evolve(table = "users")]
        pub struct User {
            #[evolve(primary_key)]
            pub id: i64,
            #[evolve(column = "mail")]
            pub email: String,
            #[evolve(backfill = "lower(email)")]
            pub email_normalized: String,
            #[evolve(default = "0")]
            pub score: i32,
            #[evolve(sql_type = "numeric(12,2)")]
            pub balance: MyDecimal,
            pub nickname: Option<String>,
        }
    }
);

expansion_snapshot!(
    /// `crate = ".."` replaces `::pgevolve` everywhere; `schema` and raw identifiers.
    crate_path_schema_raw_identifiers,
    {
        #[evolve(table = "matches", schema = "app", crate = "my_lib::pgevolve")]
        struct r#Match {
            #[evolve(primary_key)]
            r#type: uuid::Uuid,
            r#loop: ::core::option::Option<serde_json::Value>,
        }
    }
);

expansion_snapshot!(
    /// Errors come out all at once, followed by a stub impl and no spec.
    errors_and_stub,
    {
        #[evolve(tabel = "users")]
        pub struct User {
            #[evolve(primary_key)]
            pub id: Option<i64>,
            #[evolve(backfill = "lower(email)", default = "''")]
            pub email_normalized: String,
        }
    }
);

expansion_snapshot!(
    /// The stub impl keeps the generics, so it type-checks for any input.
    generic_stub,
    {
        #[evolve(table = "users", crate = "my_lib::pgevolve")]
        pub struct User<'a, T: Clone> where T: Default {
            #[evolve(primary_key)]
            pub id: &'a T,
        }
    }
);

expansion_snapshot!(
    /// `generated` on one part of a composite key: `generated: true` in the spec, and
    /// `insert_returning` binding every field but that one.
    generated_key_part,
    {
        #[evolve(table = "orders")]
        pub struct Order {
            #[evolve(primary_key)]
            pub tenant_id: i32,
            #[evolve(primary_key, generated)]
            pub id: i64,
            pub total: i64,
        }
    }
);

expansion_snapshot!(
    /// Every index method and `on_delete` action, `references` with and without a schema:
    /// the typed values the spec carries.
    indexes_and_foreign_keys,
    {
        #[evolve(table = "posts", schema = "blog")]
        #[evolve(index(columns("tags"), method = "gin"))]
        #[evolve(index(columns("body"), method = "hash"))]
        #[evolve(index(name = "posts_area", columns("area"), method = "gist", include("id")))]
        #[evolve(index(columns("created"), method = "brin"))]
        #[evolve(index(columns("id", "created"), method = "btree", unique))]
        pub struct Post {
            #[evolve(primary_key)]
            pub id: i64,
            #[evolve(references = " authors ( id ) ", on_delete = "CASCADE")]
            pub author_id: i64,
            #[evolve(references = "app.users(id)", on_delete = "Set  Null")]
            pub editor_id: Option<i64>,
            #[evolve(references = "app . teams(id)", on_delete = "restrict")]
            pub team_id: i64,
            #[evolve(references = "labels(id)", on_delete = "no action")]
            pub label_id: i64,
            #[evolve(references = "series(id)", index(method = "hash"))]
            pub series_id: i64,
            pub tags: Vec<String>,
            pub body: String,
            pub area: String,
            pub created: i64,
        }
    }
);

expansion_snapshot!(
    /// Value errors come out in rule order among the others, each at its literal.
    value_errors_in_order,
    {
        #[evolve(index(columns("a"), method = "bitmap", unique))]
        pub struct Post {
            #[evolve(primary_key)]
            pub id: i64,
            #[evolve(references = "authors.id", on_delete = "set_null")]
            pub a: i64,
            #[evolve(references = "1st(id)", on_delete = "set null")]
            pub b: i64,
            #[evolve(on_delete = "drop", index(method = "gin", unique, include("a")))]
            pub c: Option<i64>,
        }
    }
);

/// `#[derive(EvolveEnum)]` with a renamed label (the spec's `renamed`, the label of each
/// variant for the accessors) and sqlx's `rename_all` on an acronym.
#[test]
fn enum_with_a_renamed_label() {
    let input = quote! {
        #[sqlx(type_name = "order_status", rename_all = "snake_case")]
        pub enum OrderStatus {
            Pending,
            #[evolve(renamed_from = "shipped_out")]
            Shipped,
            HTTPError,
        }
    };
    let output = pretty(crate::enums::derive(&syn::parse2(input.clone()).unwrap()));
    insta::with_settings!({
        description => pretty(input),
        omit_expression => true,
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("enum_with_a_renamed_label", output);
    });
}
