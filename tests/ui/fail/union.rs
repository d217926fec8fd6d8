use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub union User {
    id: i64,
    legacy_id: i32,
}

fn main() {}
