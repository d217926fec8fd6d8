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

fn main() {
    let spec = <OrderStatus as pgevolve::__private::ColumnType>::ENUM.unwrap();
    assert_eq!(spec.renamed, &[("Dispatched", "Shipped")]);
}
