use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "customers", renamed_from = "clients", renamed_from = "patrons")]
pub struct Customer {
    #[evolve(primary_key)]
    pub id: i64,
}

fn main() {}
