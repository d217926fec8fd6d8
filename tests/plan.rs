//! The SQL of every phase, as `plan()` shows it for review, kept stable by snapshots.

use pgevolve::{Evolve, Phase, StepKind};

#[derive(Evolve)]
#[evolve(table = "users")]
#[allow(dead_code)]
struct User {
    #[evolve(primary_key)]
    id: i64,
    email: String,
    #[evolve(backfill = "lower(email)")]
    email_normalized: String,
    #[evolve(default = "0")]
    login_count: i32,
    nickname: Option<String>,
}

#[derive(Evolve)]
#[evolve(table = "OrderLines", schema = "Shop")]
#[allow(dead_code)]
struct OrderLine {
    #[evolve(primary_key)]
    order_id: i64,
    #[evolve(primary_key)]
    line: i32,
    #[evolve(column = "SKU")]
    sku: String,
    #[evolve(backfill = "upper(\"SKU\")")]
    sku_upper: String,
}

#[test]
fn plan_of_a_model_with_every_step_kind() {
    insta::assert_snapshot!(User::plan().to_string());
}

#[test]
fn composite_keys_and_names_that_need_quoting() {
    insta::assert_snapshot!(OrderLine::plan().to_string());
}

#[test]
fn phases_per_step_kind() {
    let plan = User::plan();
    let phases: Vec<(&str, Vec<Phase>)> = plan
        .steps
        .iter()
        .map(|s| (s.kind.name(), s.phases.iter().map(|p| p.phase).collect()))
        .collect();
    assert_eq!(
        phases,
        [
            ("create_table", vec![Phase::Expand]),
            (
                "add_backfilled_column",
                vec![
                    Phase::Expand,
                    Phase::Backfill,
                    Phase::Validate,
                    Phase::Contract
                ]
            ),
            (
                "add_column_with_default",
                vec![Phase::Expand, Phase::Validate, Phase::Contract]
            ),
            ("add_nullable_column", vec![Phase::Expand]),
        ]
    );
    assert!(
        matches!(plan.steps[1].kind, StepKind::AddFilledColumn(c) if c.name == "email_normalized")
    );
    // Ids are content-derived: the same declaration gives the same id.
    assert_eq!(User::plan().steps[1].id, plan.steps[1].id);
}
