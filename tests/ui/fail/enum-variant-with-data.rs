use pgevolve::EvolveEnum;

#[derive(EvolveEnum)]
#[evolve(type_name = "order_status")]
pub enum OrderStatus {
    Pending,
    Shipped { carrier: String },
}

fn main() {}
