//! Rust types the derive knows how to map to PostgreSQL column types.

/// A Rust type that maps to a PostgreSQL column type.
///
/// Implemented for the scalar types sqlx supports; `Option<T>` makes the column nullable.
/// A field of any other type needs `#[evolve(sql_type = "...")]`.
#[diagnostic::on_unimplemented(
    message = "pgevolve does not know which PostgreSQL type to use for `{Self}`",
    label = "no PostgreSQL column type for this field",
    note = "supported: i16, i32, i64, f32, f64, bool, String, Vec<u8>, uuid::Uuid, chrono and time dates and timestamps, serde_json::Value, and Option of any of them",
    note = "for another type, name the column type yourself: `#[evolve(sql_type = \"numeric(12,2)\")]`"
)]
pub trait ColumnType {
    /// The type as PostgreSQL spells it in `format_type`, e.g. `bigint`, `timestamp with time zone`.
    const SQL_TYPE: &'static str;
    /// `true` when the column accepts NULL.
    const NULLABLE: bool = false;
    /// The PostgreSQL enum the type maps to (`#[derive(EvolveEnum)]`), whose steps create it
    /// and add its values.
    const ENUM: Option<&'static crate::spec::EnumSpec> = None;

    /// The label of this value when the type is an enum (`#[derive(EvolveEnum)]`): the
    /// accessors send it as text while the enum renames a label (see `__private::as_text`).
    fn enum_label(&self) -> Option<&'static str> {
        None
    }
}

#[diagnostic::do_not_recommend]
impl<T: ColumnType> ColumnType for Option<T> {
    const SQL_TYPE: &'static str = T::SQL_TYPE;
    const NULLABLE: bool = true;
    const ENUM: Option<&'static crate::spec::EnumSpec> = T::ENUM;

    fn enum_label(&self) -> Option<&'static str> {
        self.as_ref().and_then(T::enum_label)
    }
}

macro_rules! column_types {
    ($($(#[$cfg:meta])* $ty:ty => $sql:literal,)*) => {
        $($(#[$cfg])* #[diagnostic::do_not_recommend] impl ColumnType for $ty { const SQL_TYPE: &'static str = $sql; })*
    };
}

column_types! {
    i16 => "smallint",
    i32 => "integer",
    i64 => "bigint",
    f32 => "real",
    f64 => "double precision",
    bool => "boolean",
    String => "text",
    Vec<u8> => "bytea",
    #[cfg(feature = "uuid")] uuid::Uuid => "uuid",
    #[cfg(feature = "chrono")] chrono::DateTime<chrono::Utc> => "timestamp with time zone",
    #[cfg(feature = "chrono")] chrono::NaiveDateTime => "timestamp without time zone",
    #[cfg(feature = "chrono")] chrono::NaiveDate => "date",
    #[cfg(feature = "time")] time::OffsetDateTime => "timestamp with time zone",
    #[cfg(feature = "time")] time::PrimitiveDateTime => "timestamp without time zone",
    #[cfg(feature = "time")] time::Date => "date",
    #[cfg(feature = "json")] serde_json::Value => "jsonb",
}
