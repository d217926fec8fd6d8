use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "items")]
pub struct Item {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(sql_type = "varchar(20)", type_from = "character varying (20)")]
    pub code: String,
}

fn main() {}
