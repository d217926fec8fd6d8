// `insert_returning` exists only on models with a `generated` field: elsewhere every column is
// written by `insert`, and there is nothing for the database to assign.
use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    pub name: String,
}

async fn create(pool: &sqlx::PgPool) -> Result<User, pgevolve::Error> {
    User { id: 1, name: "Ada".into() }.insert_returning(pool).await
}

fn main() {
    let _ = create;
}
