use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User;

fn main() {}
