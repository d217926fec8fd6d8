use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "items")]
pub struct Item {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(renamed_from = "amount", type_from = "integer")]
    pub qty: i64,
}

fn main() {}
