use pgevolve::EvolveEnum;

// `Returned` was a variant; its label stays in the PostgreSQL type.
#[derive(EvolveEnum)]
#[evolve(type_name = "order_status", removed("Returned"))]
pub enum OrderStatus {
    Pending,
    Shipped,
}

fn main() {}
