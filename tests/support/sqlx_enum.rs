//! What `#[derive(sqlx::Type)] #[sqlx(type_name = "...")]` gives a Rust enum mapped to a
//! PostgreSQL enum (the workspace builds sqlx without its derive macros): the type found by
//! name, values sent and read as their labels. Included with `#[path]` by the tests that need it.

/// What `#[derive(sqlx::Type)]` gives a PostgreSQL enum: its type by name, labels as text.
#[allow(unused_macros)]
macro_rules! sqlx_enum {
    ($ty:ident, $type_name:literal, { $($variant:ident => $label:literal),* $(,)? }) => {
        #[allow(dead_code)]
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            pub fn label(self) -> &'static str {
                match self { $($ty::$variant => $label),* }
            }
        }
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                sqlx::postgres::PgTypeInfo::with_name($type_name)
            }
        }
        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode(self.label(), buf)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let label = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                match label {
                    $($label => Ok($ty::$variant),)*
                    other => Err(format!("unknown {} label {other:?}", stringify!($ty)).into()),
                }
            }
        }
    };
}
