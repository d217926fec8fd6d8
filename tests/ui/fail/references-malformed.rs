use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "posts")]
pub struct Post {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(references = "authors.id")]
    pub author_id: i64,
}

fn main() {}
