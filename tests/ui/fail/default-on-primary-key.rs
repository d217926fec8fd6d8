use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key, default = "0")]
    pub id: i64,
}

fn main() {}
