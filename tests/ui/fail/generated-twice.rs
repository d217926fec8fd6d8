use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "orders")]
pub struct Order {
    #[evolve(primary_key, generated)]
    #[evolve(generated)]
    pub id: i64,
}

fn main() {}
