use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(drop_not_null, set_not_null)]
    pub score: Option<i32>,
}

fn main() {}
