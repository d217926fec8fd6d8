use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table)]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
}

fn main() {}
