use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
#[evolve(index(unique, where = "deleted_at IS NULL"))]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    pub email: String,
    pub deleted_at: Option<i64>,
}

fn main() {}
