use pgevolve::EvolveEnum;

// One old label, two new names.
#[derive(EvolveEnum)]
#[evolve(type_name = "order_status")]
pub enum OrderStatus {
    #[evolve(renamed_from = "Shipped")]
    Dispatched,
    #[evolve(renamed_from = "Shipped")]
    Sent,
}

fn main() {}
