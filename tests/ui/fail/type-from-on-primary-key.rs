use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "items")]
pub struct Item {
    #[evolve(primary_key, type_from = "integer")]
    pub id: i64,
    pub name: String,
}

fn main() {}
