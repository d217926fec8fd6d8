use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key, backfill = "nextval('users_id_seq')")]
    pub id: i64,
}

fn main() {}
