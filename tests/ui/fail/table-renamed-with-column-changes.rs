use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "customers", renamed_from = "clients", dropped("legacy_flag"))]
pub struct Customer {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(renamed_from = "name")]
    pub full_name: String,
    #[evolve(type_from = "integer")]
    pub visits: i64,
}

fn main() {}
