use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    pub id: i64,
    #[evolve(backfill = "lower(email)")]
    pub email_normalized: String,
}

fn main() {}
