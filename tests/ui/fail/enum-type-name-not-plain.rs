use pgevolve::EvolveEnum;

#[derive(EvolveEnum)]
#[evolve(type_name = "Order Status")]
pub enum OrderStatus {
    Pending,
    Shipped,
}

fn main() {}
