use pgevolve::EvolveEnum;

#[derive(EvolveEnum)]
pub enum OrderStatus {
    Pending,
    Shipped,
}

fn main() {}
