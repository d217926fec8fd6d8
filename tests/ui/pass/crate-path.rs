// `#[evolve(crate = "..")]` for code that reaches pgevolve through a re-export, with the
// generated code never naming `::pgevolve` itself (a local module of that name cannot break it).
mod reexport {
    pub use ::pgevolve as evolve;
}

#[allow(dead_code)]
mod pgevolve {}

use reexport::evolve::Evolve;

#[derive(Evolve)]
#[evolve(table = "accounts", crate = "crate::reexport::evolve")]
pub struct Account {
    #[evolve(primary_key)]
    pub id: i64,
    pub name: Option<String>,
}

fn main() {
    assert_eq!(Account::MODEL.table, "accounts");
    assert_eq!(Account::MODEL.columns[1].sql_type, "text");
    assert!(Account::MODEL.columns[1].nullable);
}
