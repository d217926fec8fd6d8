use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User(i64, String);

fn main() {}
