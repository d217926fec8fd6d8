use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users", schema = "1st")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
}

fn main() {}
