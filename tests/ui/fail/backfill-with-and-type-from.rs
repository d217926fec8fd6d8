use pgevolve::Evolve;

fn normalize(email: String) -> i64 {
    email.len() as i64
}

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    pub email: String,
    #[evolve(type_from = "integer", backfill_with = "normalize", inputs("email"))]
    pub email_length: i64,
}

fn main() {}
