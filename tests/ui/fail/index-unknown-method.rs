use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "posts")]
#[evolve(index(columns("tags"), method = "bitmap"))]
pub struct Post {
    #[evolve(primary_key)]
    pub id: i64,
    pub tags: String,
}

fn main() {}
