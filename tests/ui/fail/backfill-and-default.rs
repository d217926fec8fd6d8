use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(backfill = "lower(email)", default = "''")]
    pub email_normalized: String,
}

fn main() {}
