use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "items")]
pub struct Item {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(using = "trim(code)::integer")]
    pub code: i32,
}

fn main() {}
