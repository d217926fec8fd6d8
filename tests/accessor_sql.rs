//! The SQL each generated accessor runs in each phase: never a column that may not exist, both
//! names written while both exist, the authoritative column read. Snapshots keep it stable.

#[macro_use]
#[path = "support/sqlx_enum.rs"]
mod sqlx_enum;

use pgevolve::__private::ModelSql;
use pgevolve::{Evolve, EvolveEnum, Phase, Plan, StepKind};

#[derive(Evolve)]
#[evolve(table = "users")]
#[allow(dead_code)]
struct User {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(renamed_from = "name")]
    full_name: String,
    email: String,
    #[evolve(backfill = "lower(email)")]
    email_normalized: String,
    nickname: Option<String>,
}

/// Every statement of every accessor with every step in `phase`.
fn all_sql(phase: Phase) -> String {
    let sql = ModelSql::build(User::model(), |_| Some(phase));
    format!(
        "select list: {}\ninsert: {}\ninsert_many(2): {}\nupdate: {}\ndelete: {}\nfind: {}\nselect all: {}",
        sql.select_list,
        sql.insert,
        sql.insert_many(2),
        sql.update,
        sql.delete,
        sql.find,
        sql.select_all
    )
}

#[test]
fn accessor_sql_in_every_phase() {
    for phase in [
        Phase::Pending,
        Phase::Expand,
        Phase::Backfill,
        Phase::Validate,
        Phase::Switch,
        Phase::Retire,
        Phase::Contract,
        Phase::Aborted,
    ] {
        insta::assert_snapshot!(format!("accessors_{phase}"), all_sql(phase));
    }
}

#[test]
fn rename_reads_and_writes_follow_the_phase() {
    let rename = Plan::for_model(User::model())
        .steps
        .into_iter()
        .find(|s| matches!(s.kind, StepKind::RenameColumn(_)))
        .unwrap();
    let at = |phase: Phase| {
        let id = rename.id.clone();
        ModelSql::build(User::model(), move |s| {
            Some(if *s == id { phase } else { Phase::Contract })
        })
    };
    assert_eq!(at(Phase::Pending).reads[1], "\"name\"");
    assert_eq!(at(Phase::Pending).writes[1], ["name"]);
    assert_eq!(
        at(Phase::Backfill).reads[1],
        "COALESCE(\"full_name\", \"name\")"
    );
    assert_eq!(at(Phase::Backfill).writes[1], ["full_name", "name"]);
    assert_eq!(at(Phase::Switch).reads[1], "\"full_name\"");
    assert_eq!(at(Phase::Switch).writes[1], ["full_name", "name"]);
    assert_eq!(at(Phase::Retire).writes[1], ["full_name"]);
    assert_eq!(at(Phase::Aborted).reads[1], "\"name\"");
    assert!(!at(Phase::Contract).insert.contains("\"name\""));
    assert!(!at(Phase::Pending).insert.contains("full_name"));
}

#[derive(Evolve)]
#[evolve(table = "orders")]
#[allow(dead_code)]
struct Order {
    #[evolve(primary_key)]
    tenant_id: i32,
    #[evolve(primary_key, generated)]
    id: i64,
    #[evolve(renamed_from = "amount")]
    total: i64,
    #[evolve(generated)]
    number: Option<i32>,
    #[evolve(backfill = "'#' || id")]
    label: String,
}

/// `insert_returning` leaves the generated columns out, numbers its parameters over the other
/// fields, and returns the select list of the phase; `update` never writes a generated column.
#[test]
fn generated_columns_in_every_phase() {
    for phase in [Phase::Pending, Phase::Backfill, Phase::Contract] {
        let sql = ModelSql::build(Order::model(), |_| Some(phase));
        assert!(
            sql.insert_returning
                .ends_with(&format!("RETURNING {}", sql.select_list)),
            "{phase}: {}",
            sql.insert_returning
        );
        assert!(
            !sql.update.contains("\"number\" ="),
            "{phase}: {}",
            sql.update
        );
        insta::assert_snapshot!(
            format!("generated_{phase}"),
            format!(
                "insert: {}\ninsert_returning: {}\nupdate: {}",
                sql.insert, sql.insert_returning, sql.update
            )
        );
    }
}

#[derive(Evolve)]
#[evolve(table = "tokens")]
#[allow(dead_code)]
struct Token {
    #[evolve(primary_key, generated)]
    id: i64,
}

#[test]
fn nothing_left_to_write_inserts_default_values() {
    let sql = ModelSql::build(Token::model(), |_| Some(Phase::Contract));
    assert_eq!(
        sql.insert_returning,
        "INSERT INTO \"public\".\"tokens\" DEFAULT VALUES RETURNING \"id\" AS \"id\""
    );
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
}

/// A type change: the old column converted before expand and after an abort, the new column
/// (with the old one written through `down`) until retire, the new one alone from retire.
#[test]
fn type_change_accessor_sql_in_every_phase() {
    for phase in [
        Phase::Pending,
        Phase::Expand,
        Phase::Switch,
        Phase::Retire,
        Phase::Contract,
        Phase::Aborted,
    ] {
        let sql = ModelSql::build(Item::model(), |_| Some(phase));
        insta::assert_snapshot!(
            format!("type_change_{phase}"),
            format!(
                "select list: {}\ninsert: {}\ninsert_many(1): {}\nupdate: {}",
                sql.select_list,
                sql.insert,
                sql.insert_many(1),
                sql.update
            )
        );
    }
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
fn renamed_table_is_named_by_its_old_name_until_expand_and_once_aborted() {
    for (phase, table) in [
        (Phase::Pending, "clients"),
        (Phase::Expand, "customers"),
        (Phase::Retire, "customers"),
        (Phase::Contract, "customers"),
        (Phase::Aborted, "clients"),
    ] {
        let sql = ModelSql::build(Customer::model(), |_| Some(phase));
        let quoted = format!("\"public\".\"{table}\"");
        for statement in [
            &sql.insert,
            &sql.update,
            &sql.delete,
            &sql.find,
            &sql.select_all,
        ] {
            assert!(statement.contains(&quoted), "{phase}: {statement}");
        }
    }
}

/// An enum renaming a label (`Shipped` → `Dispatched`).
#[derive(EvolveEnum, Debug, Clone, Copy, PartialEq)]
#[evolve(type_name = "parcel_state")]
#[allow(dead_code)]
enum ParcelState {
    Pending,
    #[evolve(renamed_from = "Shipped")]
    Dispatched,
}
sqlx_enum!(ParcelState, "parcel_state", { Pending => "Pending", Dispatched => "Dispatched" });

#[derive(Evolve)]
#[evolve(table = "parcels")]
#[allow(dead_code)]
struct Parcel {
    #[evolve(primary_key)]
    id: i64,
    state: ParcelState,
    previous: Option<ParcelState>,
}

/// The value is sent as text: until contract (and once aborted) the new label is written under
/// its old name and the old name read back as the new label; from contract on, a cast only.
#[test]
fn an_enum_renaming_a_label_is_written_and_read_through_its_old_name_until_contract() {
    let mapped_write =
        "CAST(CASE $2 WHEN 'Dispatched' THEN 'Shipped' ELSE $2 END AS \"public\".\"parcel_state\")";
    let mapped_read = "(CASE CAST(\"state\" AS text) WHEN 'Shipped' THEN 'Dispatched' ELSE CAST(\"state\" AS text) END) AS \"state\"";
    for phase in [
        Phase::Pending,
        Phase::Expand,
        Phase::Retire,
        Phase::Contract,
        Phase::Aborted,
    ] {
        let sql = ModelSql::build(Parcel::model(), |_| Some(phase));
        let mapped = phase != Phase::Contract;
        assert_eq!(
            sql.insert.contains(mapped_write),
            mapped,
            "{phase}: {}",
            sql.insert
        );
        assert_eq!(
            sql.select_list.contains(mapped_read),
            mapped,
            "{phase}: {}",
            sql.select_list
        );
        if !mapped {
            assert_eq!(
                sql.insert,
                "INSERT INTO \"public\".\"parcels\" (\"id\", \"state\", \"previous\") VALUES \
                 ($1, CAST($2 AS \"public\".\"parcel_state\"), CAST($3 AS \"public\".\"parcel_state\"))"
            );
            assert_eq!(
                sql.select_list,
                "\"id\" AS \"id\", \"state\" AS \"state\", \"previous\" AS \"previous\""
            );
        }
    }
}
