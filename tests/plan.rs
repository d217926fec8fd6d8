//! The SQL of every phase, as `plan()` shows it for review, kept stable by snapshots.

use pgevolve::{Evolve, EvolveEnum, Phase, StepKind};

#[macro_use]
#[path = "support/sqlx_enum.rs"]
mod sqlx_enum;

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

#[derive(Evolve)]
#[evolve(table = "posts")]
#[evolve(index(columns("author_id", "created_at"), include("title")))]
#[evolve(index(
    name = "posts_live_slug",
    columns("slug"),
    unique,
    where = "deleted_at IS NULL"
))]
#[evolve(index(columns("tags"), method = "gin"))]
#[evolve(check(
    name = "posts_dates",
    expr = "deleted_at IS NULL OR deleted_at >= created_at"
))]
#[allow(dead_code)]
struct Post {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(references = "authors(id)", on_delete = "cascade")]
    author_id: i64,
    #[evolve(unique)]
    slug: String,
    #[evolve(index)]
    title: String,
    #[evolve(check = "score >= 0")]
    score: i32,
    #[evolve(sql_type = "text[]")]
    tags: Vec<String>,
    created_at: i64,
    deleted_at: Option<i64>,
}

#[test]
fn plan_of_indexes_and_constraints() {
    insta::assert_snapshot!(Post::plan().to_string());
}

#[test]
fn phases_of_index_and_constraint_steps() {
    let plan = Post::plan();
    let phases: Vec<(&str, Vec<Phase>)> = plan
        .steps
        .iter()
        .filter(|s| {
            !matches!(
                s.kind,
                StepKind::CreateTable | StepKind::AddNullableColumn(_)
            )
        })
        .map(|s| (s.kind.name(), s.phases.iter().map(|p| p.phase).collect()))
        .collect();
    assert_eq!(
        phases,
        [
            ("create_index", vec![Phase::Expand]),
            ("create_index", vec![Phase::Expand]),
            ("create_index", vec![Phase::Expand]),
            ("create_index", vec![Phase::Expand]),
            ("add_unique", vec![Phase::Expand, Phase::Validate]),
            ("add_foreign_key", vec![Phase::Expand, Phase::Validate]),
            ("add_check", vec![Phase::Expand, Phase::Validate]),
            ("add_check", vec![Phase::Expand, Phase::Validate]),
        ]
    );
    // Index builds run in the background; constraints are added NOT VALID at boot.
    for step in &plan.steps {
        let background = matches!(step.kind, StepKind::CreateIndex(_) | StepKind::AddUnique(_));
        assert_eq!(
            step.kind.expands_at_boot(),
            !background,
            "{}",
            step.describe()
        );
        if !matches!(
            step.kind,
            StepKind::CreateTable | StepKind::AddNullableColumn(_)
        ) {
            assert!(!step.abort.is_empty(), "{} can be aborted", step.describe());
        }
    }
}

#[derive(Evolve)]
#[evolve(table = "people")]
#[allow(dead_code)]
struct Person {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(renamed_from = "name")]
    full_name: String,
    email: String,
    #[evolve(backfill = "lower(email)")]
    email_normalized: String,
    // Reads the renamed column under its new name: it must not share the rename's pass.
    #[evolve(backfill = "upper(full_name)")]
    shout: String,
}

/// Backfills of one table share one pass (each row written once), except a fill whose
/// expression reads a column the pass writes, which gets a pass of its own.
#[test]
fn backfills_of_one_table_share_a_pass() {
    let plan = Person::plan();
    let pass = |column: &str| -> String {
        let step = plan
            .steps
            .iter()
            .find(|s| s.describe().contains(&format!(".{column} ")))
            .unwrap_or_else(|| panic!("a step for {column}"));
        step.statements(Phase::Backfill)[0].sql.clone()
    };
    let rename = pass("name");
    assert_eq!(rename, pass("email_normalized"));
    assert!(rename.contains("\"full_name\" = COALESCE(\"people\".\"full_name\", (\"name\"))"));
    assert!(rename.contains(
        "\"email_normalized\" = COALESCE(\"people\".\"email_normalized\", (lower(email)))"
    ));
    let shout = pass("shout");
    assert_ne!(shout, rename);
    assert!(!shout.contains("\"full_name\" = "));
    insta::assert_snapshot!(plan.to_string());
}

#[derive(Evolve)]
#[evolve(table = "orders")]
#[allow(dead_code)]
struct Order {
    #[evolve(primary_key)]
    tenant_id: i32,
    #[evolve(primary_key, generated)]
    id: i64,
    #[evolve(generated)]
    number: Option<i32>,
    total: i64,
    note: Option<String>,
}

/// A generated column is an identity of the new table, and never a step of its own: an identity
/// is not added to a live table (that fills every row under an exclusive lock).
#[test]
fn generated_columns_are_identities_of_the_new_table() {
    let plan = Order::plan();
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(kinds, ["create_table", "add_nullable_column"]);
    let create = plan.steps[0].statements(Phase::Expand)[0].sql.clone();
    assert!(
        create.contains("\"id\" bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL"),
        "{create}"
    );
    assert!(
        create.contains("\"number\" integer GENERATED BY DEFAULT AS IDENTITY,"),
        "{create}"
    );
    insta::assert_snapshot!(plan.to_string());
}

#[derive(Evolve)]
#[evolve(table = "accounts", dropped("legacy_flag"), dropped("OldName"))]
#[allow(dead_code)]
struct Account {
    #[evolve(primary_key)]
    id: i64,
    name: String,
}

#[test]
fn plan_of_dropped_columns() {
    let plan = Account::plan();
    let phases: Vec<(&str, Vec<Phase>)> = plan
        .steps
        .iter()
        .map(|s| (s.kind.name(), s.phases.iter().map(|p| p.phase).collect()))
        .collect();
    let drop = vec![Phase::Expand, Phase::Retire, Phase::Contract];
    assert_eq!(
        phases,
        [
            ("create_table", vec![Phase::Expand]),
            ("drop_column", drop.clone()),
            ("drop_column", drop),
        ]
    );
    insta::assert_snapshot!(plan.to_string());
}

#[derive(Evolve)]
#[evolve(table = "payments")]
#[allow(dead_code)]
struct Payment {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(set_not_null, backfill = "'unknown'")]
    status: String,
    #[evolve(set_not_null)]
    total: i64,
    #[evolve(drop_not_null)]
    note: Option<String>,
    #[evolve(set_default = "'EUR'")]
    currency: String,
}

#[test]
fn plan_of_not_null_on_off_and_a_changed_default() {
    let plan = Payment::plan();
    let phases: Vec<(&str, Vec<Phase>)> = plan
        .steps
        .iter()
        .map(|s| (s.kind.name(), s.phases.iter().map(|p| p.phase).collect()))
        .collect();
    use Phase::*;
    assert_eq!(
        phases,
        [
            ("create_table", vec![Expand]),
            (
                "set_not_null",
                vec![Expand, Backfill, Validate, Retire, Contract]
            ),
            ("set_not_null", vec![Expand, Validate, Retire, Contract]),
            ("drop_not_null", vec![Expand, Retire, Contract]),
            ("set_default", vec![Expand]),
        ]
    );
    insta::assert_snapshot!(plan.to_string());
}

#[derive(Evolve)]
#[evolve(table = "items")]
#[allow(dead_code)]
struct Item {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(type_from = "integer")]
    qty: i64,
    #[evolve(
        type_from = "text",
        using = "nullif(trim(code), '')::integer",
        down = "lpad(code::text, 4, '0')"
    )]
    code: Option<i32>,
    #[evolve(type_from = "varchar(20)")]
    label: String,
}

#[test]
fn plan_of_type_changes() {
    let plan = Item::plan();
    let phases: Vec<(&str, Vec<Phase>)> = plan
        .steps
        .iter()
        .map(|s| (s.kind.name(), s.phases.iter().map(|p| p.phase).collect()))
        .collect();
    let change = vec![
        Phase::Expand,
        Phase::Backfill,
        Phase::Validate,
        Phase::Switch,
        Phase::Retire,
        Phase::Contract,
    ];
    assert_eq!(
        phases,
        [
            ("create_table", vec![Phase::Expand]),
            ("change_type", change.clone()),
            ("change_type", change),
            ("change_type_in_place", vec![Phase::Expand]),
        ]
    );
    insta::assert_snapshot!(plan.to_string());
}

/// The function of the computed column below.
mod fill {
    pub fn contact_key(email: String, name: String) -> String {
        format!("{}#{}", email.to_lowercase(), name.len())
    }
}

#[derive(Evolve)]
#[evolve(table = "contacts")]
#[allow(dead_code)]
struct Contact {
    #[evolve(primary_key)]
    id: i64,
    name: String,
    email: String,
    #[evolve(backfill_with = "crate::fill::contact_key", inputs("email", "name"))]
    contact_key: String,
}

#[test]
fn plan_of_a_column_computed_in_rust() {
    let plan = Contact::plan();
    let phases: Vec<(&str, Vec<Phase>)> = plan
        .steps
        .iter()
        .map(|s| (s.kind.name(), s.phases.iter().map(|p| p.phase).collect()))
        .collect();
    use Phase::*;
    assert_eq!(
        phases,
        [
            ("create_table", vec![Expand]),
            (
                "add_computed_column",
                vec![Expand, Backfill, Validate, Contract]
            ),
        ]
    );
    insta::assert_snapshot!(plan.to_string());
}

/// An enum a column uses, with a label that needs quoting: the type created when missing, each
/// label added when the type lacks it (after the label declared before it), and with a new
/// table, both in the table's transaction before `CREATE TABLE`.
#[derive(EvolveEnum, Debug, Clone, Copy, PartialEq)]
#[evolve(type_name = "shipment_state", schema = "shop")]
#[allow(dead_code)]
enum ShipmentState {
    Pending,
    InTransit,
    Delivered,
}
sqlx_enum!(ShipmentState, "shop.shipment_state", {
    Pending => "Pending", InTransit => "InTransit", Delivered => "Delivered",
});

#[derive(Evolve)]
#[evolve(table = "shipments")]
#[allow(dead_code)]
struct Shipment {
    #[evolve(primary_key)]
    id: i64,
    state: ShipmentState,
    previous: Option<ShipmentState>,
}

#[test]
fn plan_of_an_enum_type_and_its_values() {
    let plan = Shipment::plan();
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "create_enum",
            "add_enum_value",
            "add_enum_value",
            "add_enum_value",
            "create_table",
            "add_nullable_column"
        ],
        "the type's steps come first, once for both columns"
    );
    for step in &plan.steps[..4] {
        assert_eq!(step.kind.phases(), [Phase::Expand]);
        assert!(
            step.abort.is_empty(),
            "PostgreSQL cannot drop an enum value"
        );
    }
    insta::assert_snapshot!(plan.to_string());
}

/// A label renamed (`Shipped` → `Dispatched`) and one added after it: no label step for the
/// renamed one, the added one placed after the old name, `RENAME VALUE` at contract.
#[derive(EvolveEnum, Debug, Clone, Copy, PartialEq)]
#[evolve(type_name = "parcel_state")]
#[allow(dead_code)]
enum ParcelState {
    Pending,
    #[evolve(renamed_from = "Shipped")]
    Dispatched,
    Delivered,
}
sqlx_enum!(ParcelState, "parcel_state", {
    Pending => "Pending", Dispatched => "Dispatched", Delivered => "Delivered",
});

#[derive(Evolve)]
#[evolve(table = "parcels")]
#[allow(dead_code)]
struct Parcel {
    #[evolve(primary_key)]
    id: i64,
    state: ParcelState,
}

#[test]
fn plan_of_a_renamed_enum_label() {
    let plan = Parcel::plan();
    let kinds: Vec<(&str, Vec<Phase>)> = plan
        .steps
        .iter()
        .map(|s| (s.kind.name(), s.kind.phases().to_vec()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("create_enum", vec![Phase::Expand]),
            ("add_enum_value", vec![Phase::Expand]),
            ("add_enum_value", vec![Phase::Expand]),
            (
                "rename_enum_value",
                vec![Phase::Expand, Phase::Retire, Phase::Contract]
            ),
            ("create_table", vec![Phase::Expand]),
        ]
    );
    insta::assert_snapshot!(plan.to_string());
}

#[derive(Evolve)]
#[evolve(table = "customers", renamed_from = "clients")]
#[allow(dead_code)]
struct Customer {
    #[evolve(primary_key)]
    id: i64,
    name: String,
}

#[test]
fn plan_of_a_renamed_table() {
    let plan = Customer::plan();
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
                "rename_table",
                vec![Phase::Expand, Phase::Retire, Phase::Contract]
            ),
        ]
    );
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn plan_of_a_dropped_table() {
    let model = pgevolve::ModelSpec {
        rust_name: "(dropped table)",
        table: "legacy_audit",
        table_dropped: true,
        ..pgevolve::ModelSpec::DEFAULT
    };
    let plan = pgevolve::Plan::for_model(&model);
    let phases: Vec<(&str, Vec<Phase>)> = plan
        .steps
        .iter()
        .map(|s| (s.kind.name(), s.phases.iter().map(|p| p.phase).collect()))
        .collect();
    assert_eq!(
        phases,
        [(
            "drop_table",
            vec![Phase::Expand, Phase::Retire, Phase::Contract]
        )]
    );
    insta::assert_snapshot!(plan.to_string());
}

#[derive(Evolve)]
#[evolve(table = "accounts")]
#[allow(dead_code)]
struct WideAccount {
    #[evolve(primary_key, type_from = "integer")]
    id: i64,
    name: String,
}

#[derive(Evolve)]
#[evolve(table = "payments")]
#[allow(dead_code)]
struct WidePayment {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(type_from = "integer", references = "accounts(id)")]
    account_id: i64,
}

/// A column referencing a key its build widens: a `widen_reference` step without DDL (the
/// key's step widens the column), no type change of its own.
#[test]
fn plan_of_a_reference_widened_with_its_key() {
    let plan = WidePayment::plan();
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(
        kinds,
        ["create_table", "widen_reference", "add_foreign_key"]
    );
    insta::assert_snapshot!(plan.to_string());
}

/// An integer key widened to bigint: the key table's part is static; the referencing tables'
/// part is read from the catalog when the phase runs, shown for one placeholder table.
#[test]
fn plan_of_a_widened_primary_key() {
    let plan = WideAccount::plan();
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
                "widen_key",
                vec![
                    Phase::Expand,
                    Phase::Backfill,
                    Phase::Validate,
                    Phase::Switch,
                    Phase::Retire,
                    Phase::Contract,
                ]
            ),
        ]
    );
    insta::assert_snapshot!(plan.to_string());
}
