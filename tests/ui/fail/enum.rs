use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub enum User {
    Active { id: i64 },
    Deleted { id: i64 },
}

fn main() {}
