use pgevolve::Evolve;

// Every mistake of the struct is reported in one build.
#[derive(Evolve)]
#[evolve(tabel = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: Option<i64>,
    #[evolve(column = "e-mail")]
    pub email: String,
    #[evolve(backfill = "lower(email)", default = "''", indexed)]
    pub email_normalized: String,
    #[evolve(default = "0")]
    pub nickname: Option<String>,
}

fn main() {}
