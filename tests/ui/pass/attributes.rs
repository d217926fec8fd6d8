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

fn main() {
    assert_eq!(User::MODEL, EXPECTED);

    assert_eq!(Tag::MODEL.schema, "app");
    assert_eq!(Tag::MODEL.columns[0].name, "tag_id");
    assert!(Tag::MODEL.columns[0].primary_key);

    // The trait's provided methods are there.
    let _plan: fn() -> pgevolve::Plan = User::plan;
}
