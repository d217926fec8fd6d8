use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users", dropped("email"))]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    pub email: String,
    #[evolve(renamed_from = "name")]
    pub full_name: String,
}

fn main() {}
