use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "posts")]
pub struct Post {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(index(columns("title", "id")))]
    pub title: String,
}

fn main() {}
