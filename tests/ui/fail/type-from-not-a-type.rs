use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "items")]
pub struct Item {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(type_from = "integer; DROP TABLE items")]
    pub qty: i64,
}

fn main() {}
