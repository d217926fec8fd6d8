use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "items")]
pub struct Item {
    #[evolve(primary_key, type_from = "integer", using = "id * 2")]
    pub id: i64,
    pub name: String,
}

fn main() {}
