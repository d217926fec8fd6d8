//! The must-compile cases of `#[derive(Evolve)]` and `#[derive(EvolveEnum)]`: code that must
//! compile, each with the spec the derive builds from it. Ordinary tests of the workspace build
//! (the compile-fail cases stay in `tests/ui.rs`, trybuild, which then only checks them and
//! builds no binary). One module a case; the generated code expands inside the module, so a
//! path the case names with `crate::` goes through it.

mod all_types {
    // Every Rust type pgevolve maps on its own, plain and in `Option` (the facade enables the uuid,
    // chrono, time and json features by default).
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "everything")]
    pub struct Everything {
        #[evolve(primary_key)]
        pub id: uuid::Uuid,
        pub small: i16,
        pub int: i32,
        pub big: i64,
        pub real: f32,
        pub double: f64,
        pub flag: bool,
        pub text: String,
        pub bytes: Vec<u8>,
        pub utc: chrono::DateTime<chrono::Utc>,
        pub naive: chrono::NaiveDateTime,
        pub day: chrono::NaiveDate,
        pub offset: time::OffsetDateTime,
        pub primitive: time::PrimitiveDateTime,
        pub date: time::Date,
        pub json: serde_json::Value,
        pub maybe_small: Option<i16>,
        pub maybe_text: core::option::Option<String>,
        pub maybe_uuid: ::std::option::Option<uuid::Uuid>,
        pub maybe_json: std::option::Option<serde_json::Value>,
    }

    #[test]
    fn every_mapped_type_gets_its_sql_type_plain_and_nullable_in_option() {
        let types: Vec<(&str, &str, bool)> = Everything::MODEL
            .columns
            .iter()
            .map(|c| (c.name, c.sql_type, c.nullable))
            .collect();
        assert_eq!(
            types,
            [
                ("id", "uuid", false),
                ("small", "smallint", false),
                ("int", "integer", false),
                ("big", "bigint", false),
                ("real", "real", false),
                ("double", "double precision", false),
                ("flag", "boolean", false),
                ("text", "text", false),
                ("bytes", "bytea", false),
                ("utc", "timestamp with time zone", false),
                ("naive", "timestamp without time zone", false),
                ("day", "date", false),
                ("offset", "timestamp with time zone", false),
                ("primitive", "timestamp without time zone", false),
                ("date", "date", false),
                ("json", "jsonb", false),
                ("maybe_small", "smallint", true),
                ("maybe_text", "text", true),
                ("maybe_uuid", "uuid", true),
                ("maybe_json", "jsonb", true),
            ],
        );
    }
}

mod attributes {
    // Every attribute, and the spec the derive builds from them.
    use pgevolve::{ColumnSpec, Evolve, Fill, ModelSpec};

    /// A type pgevolve does not map: `sql_type` names its column type, and the accessors need the
    /// usual sqlx traits, delegated here to `String` (PostgreSQL sends numeric as text).
    pub struct MyDecimal(String);

    impl sqlx::Type<sqlx::Postgres> for MyDecimal {
        fn type_info() -> sqlx::postgres::PgTypeInfo {
            sqlx::postgres::PgTypeInfo::with_name("numeric")
        }
    }

    impl sqlx::Encode<'_, sqlx::Postgres> for MyDecimal {
        fn encode_by_ref(
            &self,
            buf: &mut sqlx::postgres::PgArgumentBuffer,
        ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
            <String as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.0, buf)
        }
    }

    impl<'r> sqlx::Decode<'r, sqlx::Postgres> for MyDecimal {
        fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
            <String as sqlx::Decode<sqlx::Postgres>>::decode(value).map(MyDecimal)
        }
    }

    #[derive(Evolve)]
    #[evolve(table = "users", schema = "app")]
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
        #[evolve(sql_type = "numeric(12,2)")]
        pub limit: Option<MyDecimal>,
    }

    // Several `#[evolve]` attributes on one item add up.
    #[derive(Evolve)]
    #[evolve(table = "tags")]
    #[evolve(schema = "app")]
    pub struct Tag {
        #[evolve(primary_key)]
        #[evolve(column = "tag_id")]
        pub id: i32,
    }

    const fn column(field: &'static str, sql_type: &'static str) -> ColumnSpec {
        ColumnSpec {
            field,
            name: field,
            sql_type,
            ..ColumnSpec::DEFAULT
        }
    }

    const EXPECTED: ModelSpec = ModelSpec {
        rust_name: "User",
        schema: "app",
        table: "users",
        columns: &[
            ColumnSpec {
                primary_key: true,
                ..column("id", "bigint")
            },
            ColumnSpec {
                name: "mail",
                ..column("email", "text")
            },
            ColumnSpec {
                fill: Fill::Backfill("lower(email)"),
                ..column("email_normalized", "text")
            },
            ColumnSpec {
                fill: Fill::Default("0"),
                ..column("score", "integer")
            },
            column("balance", "numeric(12,2)"),
            ColumnSpec {
                nullable: true,
                ..column("nickname", "text")
            },
            ColumnSpec {
                nullable: true,
                ..column("limit", "numeric(12,2)")
            },
        ],
        ..ModelSpec::DEFAULT
    };

    #[test]
    fn every_attribute_builds_the_expected_model_spec_and_repeated_attributes_add_up() {
        assert_eq!(User::MODEL, EXPECTED);

        assert_eq!(Tag::MODEL.schema, "app");
        assert_eq!(Tag::MODEL.columns[0].name, "tag_id");
        assert!(Tag::MODEL.columns[0].primary_key);

        // The trait's provided methods are there.
        let _plan: fn() -> pgevolve::Plan = User::plan;
    }
}

mod backfill_with {
    //! `backfill_with`: a function by path, inputs of several types (an `Option` among them), a
    //! composite key, a raw identifier field.
    use pgevolve::Evolve;

    mod fill {
        pub fn label(sku: String, line: i32, note: Option<String>) -> String {
            format!("{sku}-{line}-{}", note.unwrap_or_default())
        }

        pub fn weight(line: i32) -> i64 {
            i64::from(line) * 10
        }
    }

    #[derive(Evolve)]
    #[evolve(table = "order_lines")]
    pub struct OrderLine {
        #[evolve(primary_key)]
        pub order_id: i64,
        #[evolve(primary_key)]
        pub line: i32,
        pub sku: String,
        pub note: Option<String>,
        #[evolve(
            backfill_with = "crate::backfill_with::fill::label",
            inputs("sku", "line", "note")
        )]
        pub label: String,
        #[evolve(backfill_with = "fill::weight", inputs("line"))]
        pub r#type: i64,
    }

    #[test]
    fn backfill_with_records_the_function_path_and_its_inputs() {
        let spec = <OrderLine as pgevolve::__private::Evolve>::model();
        let computed = spec.columns[4].computed.unwrap();
        assert_eq!(computed.function, "crate::backfill_with::fill::label");
        assert_eq!(computed.inputs, ["sku", "line", "note"]);
    }
}

mod column_changes {
    // NOT NULL on and off and a changed default, and the spec the derive builds from them.
    use pgevolve::{ColumnSpec, Evolve, Fill, SetNotNull};

    #[derive(Evolve)]
    #[evolve(table = "tickets")]
    pub struct Ticket {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(set_not_null, backfill = "'p' || id")]
        pub priority: String,
        #[evolve(set_not_null)]
        pub total: i64,
        #[evolve(drop_not_null)]
        pub assignee: Option<String>,
        #[evolve(set_default = "'open'", set_not_null, backfill = "'open'")]
        pub state: String,
    }

    #[test]
    fn set_not_null_drop_not_null_and_set_default_build_their_column_specs() {
        let columns = Ticket::MODEL.columns;
        assert_eq!(
            columns[1],
            ColumnSpec {
                field: "priority",
                name: "priority",
                sql_type: "text",
                set_not_null: Some(SetNotNull {
                    backfill: Some("'p' || id"),
                }),
                ..ColumnSpec::DEFAULT
            }
        );
        // With `set_not_null`, `backfill` fills the NULL rows: no new column is filled.
        assert_eq!(columns[1].fill, Fill::None);
        assert_eq!(columns[2].set_not_null, Some(SetNotNull::DEFAULT));
        assert!(columns[3].drop_not_null && columns[3].nullable);
        assert_eq!(columns[4].set_default, Some("'open'"));
    }
}

mod crate_path {
    // `#[evolve(crate = "..")]` for code that reaches pgevolve through a re-export, with the
    // generated code never naming `::pgevolve` itself (a local module of that name cannot break it).
    mod reexport {
        pub use ::pgevolve as evolve;
    }

    #[allow(dead_code)]
    mod pgevolve {}

    use reexport::evolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "accounts", crate = "crate::crate_path::reexport::evolve")]
    pub struct Account {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: Option<String>,
    }

    #[test]
    fn a_crate_path_through_a_reexport_compiles_beside_a_local_pgevolve_module() {
        assert_eq!(Account::MODEL.table, "accounts");
        assert_eq!(Account::MODEL.columns[1].sql_type, "text");
        assert!(Account::MODEL.columns[1].nullable);
    }
}

mod enum_renamed_value {
    use pgevolve::{Evolve, EvolveEnum};

    // A label renamed (`Shipped` → `Dispatched`), on a field and an optional one.
    #[derive(EvolveEnum)]
    #[evolve(type_name = "order_status")]
    pub enum OrderStatus {
        Pending,
        #[evolve(renamed_from = "Shipped")]
        Dispatched,
    }

    impl sqlx::Type<sqlx::Postgres> for OrderStatus {
        fn type_info() -> sqlx::postgres::PgTypeInfo {
            sqlx::postgres::PgTypeInfo::with_name("order_status")
        }
    }

    impl<'q> sqlx::Encode<'q, sqlx::Postgres> for OrderStatus {
        fn encode_by_ref(
            &self,
            buf: &mut sqlx::postgres::PgArgumentBuffer,
        ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
            let label = match self {
                OrderStatus::Pending => "Pending",
                OrderStatus::Dispatched => "Dispatched",
            };
            <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode(label, buf)
        }
    }

    impl<'r> sqlx::Decode<'r, sqlx::Postgres> for OrderStatus {
        fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
            match <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)? {
                "Pending" => Ok(OrderStatus::Pending),
                "Dispatched" => Ok(OrderStatus::Dispatched),
                other => Err(format!("unknown label {other}").into()),
            }
        }
    }

    #[derive(Evolve)]
    #[evolve(table = "orders")]
    pub struct Order {
        #[evolve(primary_key)]
        pub id: i64,
        pub status: OrderStatus,
        pub previous: Option<OrderStatus>,
    }

    #[test]
    fn a_renamed_label_on_a_field_and_an_optional_one_is_recorded_in_the_enum_spec() {
        let spec = <OrderStatus as pgevolve::__private::ColumnType>::ENUM.unwrap();
        assert_eq!(spec.renamed, &[("Dispatched", "Shipped")]);
    }
}

mod generated {
    // Keys the database assigns: every integer width, `Option`s, a composite key with one
    // generated part, a generated column that is not a key, and `insert_returning` on each.
    use pgevolve::Evolve;

    #[derive(Evolve, Debug)]
    #[evolve(table = "orders")]
    pub struct Order {
        #[evolve(primary_key)]
        pub tenant_id: i32,
        #[evolve(primary_key, generated)]
        pub id: core::primitive::i64,
        #[evolve(generated)]
        pub number: Option<i32>,
        pub total: i64,
    }

    #[derive(Evolve, Debug)]
    #[evolve(table = "tags")]
    pub struct Tag {
        #[evolve(generated, primary_key, column = "tag_id")]
        pub id: i16,
        pub label: String,
    }

    async fn create(pool: &sqlx::PgPool) -> Result<(Order, Tag), pgevolve::Error> {
        let order = Order {
            tenant_id: 7,
            id: 0,
            number: None,
            total: 100,
        }
        .insert_returning(pool)
        .await?;
        let tag = Tag {
            id: 0,
            label: "new".into(),
        }
        .insert_returning(pool)
        .await?;
        Ok((order, tag))
    }

    #[test]
    fn generated_keys_of_every_width_are_marked_and_insert_returning_compiles_on_each() {
        assert!(Order::MODEL.columns[1].generated);
        assert!(Order::MODEL.columns[2].generated);
        assert!(!Order::MODEL.columns[0].generated);
        assert!(Tag::MODEL.columns[0].generated);
        let _ = create;
    }
}

mod indexes_and_constraints {
    // Index and constraint attributes on fields and on the struct, and the spec they build.
    use pgevolve::{CheckSpec, Evolve, ForeignKeySpec, IndexMethod, IndexSpec, OnDelete};

    #[derive(Evolve)]
    #[evolve(table = "posts")]
    #[evolve(index(columns("author_id", "created_at"), include("title")))]
    #[evolve(index(
        name = "posts_live_slug",
        columns("slug"),
        unique,
        where = "deleted_at IS NULL"
    ))]
    #[evolve(index(name = "posts_body_search", columns("body"), method = "gin"))]
    #[evolve(check = "created_at > 0")]
    #[evolve(check(
        name = "posts_dates",
        expr = "deleted_at IS NULL OR deleted_at >= created_at"
    ))]
    pub struct Post {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(references = "app.authors(id)", on_delete = "Set Null")]
        pub author_id: Option<i64>,
        #[evolve(references = "editors(id)")]
        pub editor_id: i64,
        #[evolve(unique)]
        pub slug: String,
        #[evolve(index(method = "hash"))]
        pub title: String,
        #[evolve(index, check = "length(body) < 100000", sql_type = "tsvector")]
        pub body: String,
        pub created_at: i64,
        pub deleted_at: Option<i64>,
    }

    #[test]
    fn index_and_constraint_attributes_build_their_specs() {
        let model = Post::MODEL;
        assert_eq!(
            model.indexes,
            &[
                IndexSpec {
                    method: IndexMethod::Hash,
                    columns: &["title"],
                    ..IndexSpec::DEFAULT
                },
                IndexSpec {
                    columns: &["body"],
                    ..IndexSpec::DEFAULT
                },
                IndexSpec {
                    columns: &["author_id", "created_at"],
                    include: &["title"],
                    ..IndexSpec::DEFAULT
                },
                IndexSpec {
                    name: Some("posts_live_slug"),
                    columns: &["slug"],
                    unique: true,
                    predicate: Some("deleted_at IS NULL"),
                    ..IndexSpec::DEFAULT
                },
                IndexSpec {
                    name: Some("posts_body_search"),
                    columns: &["body"],
                    method: IndexMethod::Gin,
                    ..IndexSpec::DEFAULT
                },
            ]
        );
        assert_eq!(
            model.checks,
            &[
                CheckSpec {
                    column: Some("body"),
                    expr: "length(body) < 100000",
                    ..CheckSpec::DEFAULT
                },
                CheckSpec {
                    expr: "created_at > 0",
                    ..CheckSpec::DEFAULT
                },
                CheckSpec {
                    name: Some("posts_dates"),
                    expr: "deleted_at IS NULL OR deleted_at >= created_at",
                    ..CheckSpec::DEFAULT
                },
            ]
        );
        assert_eq!(
            model.column("author_id").unwrap().references,
            Some(ForeignKeySpec {
                schema: Some("app"),
                table: "authors",
                column: "id",
                on_delete: OnDelete::SetNull,
            })
        );
        assert_eq!(
            model.column("editor_id").unwrap().references,
            Some(ForeignKeySpec {
                table: "editors",
                column: "id",
                ..ForeignKeySpec::DEFAULT
            })
        );
        assert!(model.column("slug").unwrap().unique);
        assert!(!model.column("title").unwrap().unique);
    }
}

mod raw_identifiers {
    // Raw identifiers name their column without `r#`; a local `Evolve` trait and `Result` alias do
    // not confuse the generated code.
    #![allow(non_camel_case_types, dead_code)]

    trait Evolve {}
    type Result<T> = core::result::Result<T, ()>;

    #[derive(pgevolve::Evolve)]
    #[evolve(table = "matches")]
    pub struct r#Match {
        #[evolve(primary_key)]
        pub r#type: i64,
        pub r#loop: Option<String>,
        #[evolve(column = "async")]
        pub r#async: bool,
    }

    #[test]
    fn raw_identifiers_name_their_columns_without_r_hash_beside_a_local_evolve_and_result() {
        use pgevolve::Evolve as _;
        let model = r#Match::MODEL;
        assert_eq!(model.rust_name, "Match");
        assert_eq!(model.columns[0].field, "type");
        assert_eq!(model.columns[0].name, "type");
        assert_eq!(model.columns[1].name, "loop");
        assert!(model.columns[1].nullable);
        assert_eq!(model.columns[2].name, "async");
    }
}
