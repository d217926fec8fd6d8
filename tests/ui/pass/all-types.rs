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

fn main() {
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
