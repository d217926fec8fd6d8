//! The SQL each generated accessor runs in each phase: never a column that may not exist, both
//! names written while both exist, the authoritative column read. Snapshots keep it stable.

use pgevolve::{Evolve, ModelSql, Phase, Plan, StepKind};

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
