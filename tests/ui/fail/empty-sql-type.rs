use pgevolve::Evolve;

pub struct Money(i64);

#[derive(Evolve)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(sql_type = "")]
    pub balance: Money,
}

fn main() {}
