use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "orders")]
pub struct Order {
    #[evolve(primary_key, generated, default = "0")]
    pub id: i64,
}

fn main() {}
