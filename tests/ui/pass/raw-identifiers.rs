// Raw identifiers name their column without `r#`; a local `Evolve` trait and `Result` alias do
// not confuse the generated code.
#![allow(non_camel_case_types, dead_code)]

trait Evolve {}
type Result<T> = core::result::Result<T, ()>;

#[derive(pgevolve::Evolve)]
#[evolve(table = "matches")]
pub struct r#Match {
    #[evolve(primary_key)]
    pub r#type: i64,
    pub r#loop: Option<String>,
    #[evolve(column = "async")]
    pub r#async: bool,
}

fn main() {
    use pgevolve::Evolve as _;
    let model = r#Match::MODEL;
    assert_eq!(model.rust_name, "Match");
    assert_eq!(model.columns[0].field, "type");
    assert_eq!(model.columns[0].name, "type");
    assert_eq!(model.columns[1].name, "loop");
    assert!(model.columns[1].nullable);
    assert_eq!(model.columns[2].name, "async");
}
