use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User<T> {
    #[evolve(primary_key)]
    pub id: T,
}

fn main() {}
