use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    pub email: String,
    #[evolve(backfill = "lower(email)", inputs("email"))]
    pub email_normalized: String,
}

fn main() {}
