use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users", primary_key)]
pub struct User {
    pub id: i64,
}

fn main() {}
