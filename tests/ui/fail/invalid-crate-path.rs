use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users", crate = "my lib::pgevolve")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
}

fn main() {}
