use pgevolve::Evolve;

#[derive(Evolve)]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
}

fn main() {
    // The stub impl emitted next to the error keeps code using the type compiling.
    let _plan = User::plan;
}
