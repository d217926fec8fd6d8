use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(renamed_from = "name")]
    pub full_name: String,
    #[evolve(renamed_from = "name")]
    pub display_name: String,
}

fn main() {}
