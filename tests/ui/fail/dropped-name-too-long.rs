use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "users", dropped("legacy_flag_that_was_kept_far_too_long_and_now_has_a_name_over_63_bytes"))]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    pub email: String,
    #[evolve(renamed_from = "name")]
    pub full_name: String,
}

fn main() {}
