use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "orders")]
pub struct Order {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(generated, backfill = "id * 10")]
    pub number: i64,
}

fn main() {}
