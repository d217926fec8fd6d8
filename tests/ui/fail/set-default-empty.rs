use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(set_default = " ")]
    pub score: i32,
}

fn main() {}
