use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "posts")]
#[evolve(index(columns()))]
pub struct Post {
    #[evolve(primary_key)]
    pub id: i64,
    pub title: String,
}

fn main() {}
