use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "orders")]
pub struct Order {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(type_from = "integer", references = "users(id)", down = "user_id - 1")]
    pub user_id: i64,
}

fn main() {}
