use pgevolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "accounts_of_users_who_signed_up_before_the_great_migration_of_2026")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
}

fn main() {}
