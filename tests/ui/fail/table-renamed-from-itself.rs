use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "customers", renamed_from = "customers")]
pub struct Customer {
    #[evolve(primary_key)]
    pub id: i64,
}

fn main() {}
