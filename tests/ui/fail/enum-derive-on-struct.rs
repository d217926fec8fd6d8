use pgevolve::EvolveEnum;

#[derive(EvolveEnum)]
#[evolve(type_name = "order_status")]
pub struct OrderStatus {
    pub label: String,
}

fn main() {}
