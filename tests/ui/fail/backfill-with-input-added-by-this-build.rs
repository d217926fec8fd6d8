use pgevolve::Evolve;

fn normalize(email: String) -> String {
    email.to_lowercase()
}

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(backfill = "''")]
    pub email: String,
    #[evolve(backfill_with = "normalize", inputs("email"))]
    pub email_normalized: String,
}

fn main() {}
