use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(generated, set_default = "1")]
    pub score: i64,
}

fn main() {}
