use pgevolve::EvolveEnum;

// `Pending` is still a label: it cannot also be renamed `Waiting`.
#[derive(EvolveEnum)]
#[evolve(type_name = "order_status")]
pub enum OrderStatus {
    Pending,
    #[evolve(renamed_from = "Pending")]
    Waiting,
}

fn main() {}
