use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key, renamed_from = "user_id")]
    pub id: i64,
    pub name: String,
}

fn main() {}
