use pgevolve::EvolveEnum;

#[derive(EvolveEnum)]
#[evolve(type_name = "order_status")]
pub enum OrderStatus {
    Pending,
    #[evolve(renamed_from = "Shipped")]
    Shipped,
}

fn main() {}
