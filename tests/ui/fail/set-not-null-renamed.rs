use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(renamed_from = "points", set_not_null)]
    pub score: i32,
}

fn main() {}
