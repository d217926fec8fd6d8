use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
#[evolve(table = "people")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
}

fn main() {}
