use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "orders")]
pub struct Order {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(generated, renamed_from = "seq")]
    pub number: i64,
}

fn main() {}
