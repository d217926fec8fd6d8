// Every attribute, and the spec the derive builds from them.
use pgevolve::{ColumnSpec, Evolve, Fill, ModelSpec};

pub struct MyDecimal;

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

fn main() {
    assert_eq!(User::MODEL, EXPECTED);

    assert_eq!(Tag::MODEL.schema, "app");
    assert_eq!(Tag::MODEL.columns[0].name, "tag_id");
    assert!(Tag::MODEL.columns[0].primary_key);

    // The trait's provided methods are there.
    let _plan: fn() -> pgevolve::Plan = User::plan;
}
