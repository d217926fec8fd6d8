//! `backfill_with`: a function by path, inputs of several types (an `Option` among them), a
//! composite key, a raw identifier field.
use pgevolve::Evolve;

mod fill {
    pub fn label(sku: String, line: i32, note: Option<String>) -> String {
        format!("{sku}-{line}-{}", note.unwrap_or_default())
    }

    pub fn weight(line: i32) -> i64 {
        i64::from(line) * 10
    }
}

#[derive(Evolve)]
#[evolve(table = "order_lines")]
pub struct OrderLine {
    #[evolve(primary_key)]
    pub order_id: i64,
    #[evolve(primary_key)]
    pub line: i32,
    pub sku: String,
    pub note: Option<String>,
    #[evolve(backfill_with = "crate::fill::label", inputs("sku", "line", "note"))]
    pub label: String,
    #[evolve(backfill_with = "fill::weight", inputs("line"))]
    pub r#type: i64,
}

fn main() {
    let spec = <OrderLine as pgevolve::__private::Evolve>::model();
    let computed = spec.columns[4].computed.unwrap();
    assert_eq!(computed.function, "crate::fill::label");
    assert_eq!(computed.inputs, ["sku", "line", "note"]);
}
