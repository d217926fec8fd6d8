use pgevolve::EvolveEnum;

#[derive(EvolveEnum)]
#[evolve(type_name = "order_status", table = "orders")]
pub enum OrderStatus {
    Pending,
    Shipped,
}

fn main() {}
