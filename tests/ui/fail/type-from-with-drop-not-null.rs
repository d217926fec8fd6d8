use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "items")]
pub struct Item {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(type_from = "integer", drop_not_null)]
    pub qty: Option<i64>,
}

fn main() {}
