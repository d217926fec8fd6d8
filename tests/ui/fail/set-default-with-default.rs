use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(default = "0", set_default = "1")]
    pub score: i32,
}

fn main() {}
