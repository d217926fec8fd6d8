use pgevolve::Evolve;

/// Takes a number, but `inputs("email")` gives it the `String` of field `email`.
fn normalize(email: i64) -> String {
    email.to_string()
}

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    pub email: String,
    #[evolve(backfill_with = "normalize", inputs("email"))]
    pub email_normalized: String,
}

fn main() {}
