//! A rename carries every object on the old column over to the new one before contract drops
//! the old column: indexes (built concurrently before switch), unique and check constraints,
//! foreign keys in both directions, the default, an owned sequence, the comment and column
//! privileges. What it cannot carry stops the boot as drift; abort removes what was carried.

use pgevolve_test_support as support;

use std::time::Duration;

use pgevolve::{DeployWindow, ErrorKind, Evolver, StepKind};
use sqlx::{Connection, PgPool};
use support::builds::{build_waiting, old_snapshot};
use support::people::*;
use support::{catalog_snapshot, database};

/// The definitions of the indexes over `column` of `table`, with the index name replaced by
/// `<index>` so definitions of differently named indexes compare.
async fn index_defs(pool: &PgPool, table: &str, column: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT replace(pg_get_indexdef(i.indexrelid), c.relname || ' ON', '<index> ON') \
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
          WHERE i.indrelid = $1::regclass \
            AND ((SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2) = ANY (i.indkey::int2[]) \
                 OR EXISTS (SELECT 1 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                             WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid AND a.attname = $2 \
                               AND d.refobjid = $1::regclass)) \
          ORDER BY 1",
    )
    .bind(table)
    .bind(column)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The constraints of `table` but its primary key and (PostgreSQL 18) NOT NULL constraints.
async fn constraint_defs(pool: &PgPool, table: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
          WHERE conrelid = $1::regclass AND contype NOT IN ('p', 'n') ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string())
}

async fn migrate_through_contract(pool: &PgPool) {
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    evolution.switch().await.unwrap();
    evolution.contract().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_column_with_an_index_keeps_both_after_contract() {
    let (_db, pool) = database(10).await;
    seed(&pool, "people").await;
    sqlx::raw_sql(
        "ALTER TABLE people ADD CONSTRAINT people_name_key UNIQUE (name);
         CREATE INDEX people_name_pattern_idx ON people (name text_pattern_ops);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before: Vec<String> = index_defs(&pool, "people", "name")
        .await
        .into_iter()
        .map(|d| d.replace("(name", "(full_name"))
        .collect();
    assert_eq!(before.len(), 2, "{before:#?}");

    migrate_through_contract(&pool).await;

    assert!(!column_exists(&pool, "name").await);
    assert_eq!(index_defs(&pool, "people", "full_name").await, before);
    let constraints = constraint_defs(&pool, "people").await;
    assert!(
        constraints.contains(&("people_full_name_key".into(), "UNIQUE (full_name)".into())),
        "{constraints:#?}"
    );
    let duplicate = sqlx::query(
        "INSERT INTO people (id, full_name, email) VALUES (999999999, 'Name 1', 'dup@example.com')",
    )
    .execute(&pool)
    .await
    .expect_err("a duplicate is rejected");
    assert_eq!(
        sqlstate(&duplicate).as_deref(),
        Some("23505"),
        "{duplicate}"
    );
}

/// The definitions of `before` (read over `name`) as they must read over `full_name`.
fn over_full_name(defs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = defs
        .iter()
        .map(|d| {
            d.replace("(name", "(full_name")
                .replace(", name)", ", full_name)")
                .replace(" name ", " full_name ")
        })
        .collect();
    out.sort();
    out
}

async fn index_names(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_object_on_the_old_column_is_carried_over() {
    let (_db, pool) = database(10).await;
    seed(&pool, "people").await;
    let role = format!("reader_{:08x}", rand_suffix());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE names_registry (name text PRIMARY KEY);
         INSERT INTO names_registry SELECT name FROM people;
         INSERT INTO names_registry VALUES ('anonymous'), ('Ada');
         ALTER TABLE people ADD CONSTRAINT people_name_key UNIQUE (name);
         ALTER TABLE people ADD CONSTRAINT people_email_name_key UNIQUE (email, name);
         CREATE INDEX people_name_partial ON people (name) WHERE email LIKE '%@example.com';
         CREATE INDEX people_lower_name_idx ON people (lower(name));
         ALTER TABLE people ADD CONSTRAINT people_name_check CHECK (length(name) > 1);
         ALTER TABLE people ALTER COLUMN name SET DEFAULT 'anonymous';
         COMMENT ON COLUMN people.name IS 'what the person is called';
         CREATE ROLE {role};
         GRANT SELECT (id, name) ON people TO {role};
         ALTER TABLE people ADD CONSTRAINT people_name_fkey FOREIGN KEY (name) REFERENCES names_registry (name);
         CREATE TABLE badges (id bigint PRIMARY KEY, holder text REFERENCES people (name) ON DELETE CASCADE);
         INSERT INTO badges VALUES (1, 'Name 1'), (2, 'Name 2');"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let indexes_before = over_full_name(&index_defs(&pool, "people", "name").await);
    assert_eq!(indexes_before.len(), 4, "{indexes_before:#?}");

    migrate_through_contract(&pool).await;

    assert!(!column_exists(&pool, "name").await);
    assert_eq!(
        index_defs(&pool, "people", "full_name").await,
        indexes_before
    );
    assert_eq!(
        index_names(&pool, "people").await,
        [
            "people_email_full_name_key",
            "people_full_name_key",
            "people_lower_name_idx",
            "people_name_partial",
            "people_pkey"
        ],
        "PostgreSQL's names follow the column, given names are kept"
    );
    assert_eq!(
        constraint_defs(&pool, "people").await,
        [
            (
                "people_email_full_name_key".into(),
                "UNIQUE (email, full_name)".into()
            ),
            (
                "people_full_name_check".into(),
                "CHECK ((length(full_name) > 1))".into()
            ),
            (
                "people_full_name_fkey".into(),
                "FOREIGN KEY (full_name) REFERENCES names_registry(name)".into()
            ),
            ("people_full_name_key".into(), "UNIQUE (full_name)".into()),
        ]
    );
    assert_eq!(
        constraint_defs(&pool, "badges").await,
        [(
            "badges_holder_fkey".to_string(),
            "FOREIGN KEY (holder) REFERENCES people(full_name) ON DELETE CASCADE".to_string()
        )]
    );
    let unvalidated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid IN ('people'::regclass, 'badges'::regclass) AND NOT convalidated",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unvalidated, 0, "every carried constraint is validated");
    let comment: Option<String> = sqlx::query_scalar(
        "SELECT col_description('people'::regclass, (SELECT attnum FROM pg_attribute WHERE attrelid = 'people'::regclass AND attname = 'full_name'))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(comment.as_deref(), Some("what the person is called"));

    // The default applies to an insert that leaves the column out.
    let defaulted: String = sqlx::query_scalar(
        "INSERT INTO people (id, email) VALUES (900000001, 'd@example.com') RETURNING full_name",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(defaulted, "anonymous");
    // The column privilege works for the role.
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET LOCAL ROLE {role}")))
        .execute(&mut *tx)
        .await
        .unwrap();
    let read: String = sqlx::query_scalar("SELECT full_name FROM people WHERE id = 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(read, "Name 1");
    tx.rollback().await.unwrap();
    // Constraints reject bad rows.
    let unknown = sqlx::query(
        "INSERT INTO people (id, full_name, email) VALUES (900000002, 'nobody', 'n@example.com')",
    )
    .execute(&pool)
    .await
    .expect_err("the foreign key to names_registry holds");
    assert_eq!(sqlstate(&unknown).as_deref(), Some("23503"), "{unknown}");
    let ghost = sqlx::query("INSERT INTO badges VALUES (3, 'ghost')")
        .execute(&pool)
        .await
        .expect_err("the foreign key from badges holds");
    assert_eq!(sqlstate(&ghost).as_deref(), Some("23503"), "{ghost}");
    let short = sqlx::query(
        "INSERT INTO people (id, full_name, email) VALUES (900000003, 'A', 'a@example.com')",
    )
    .execute(&pool)
    .await
    .expect_err("the check holds");
    assert_eq!(sqlstate(&short).as_deref(), Some("23514"), "{short}");
    let twice = sqlx::query(
        "INSERT INTO people (id, full_name, email) VALUES (900000004, 'Name 3', 'p3@example.com')",
    )
    .execute(&pool)
    .await
    .expect_err("the composite unique constraint holds");
    assert_eq!(sqlstate(&twice).as_deref(), Some("23505"), "{twice}");
    sqlx::query("DELETE FROM people WHERE id = 1")
        .execute(&pool)
        .await
        .unwrap();
    let badges: i64 = sqlx::query_scalar("SELECT count(*) FROM badges")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(badges, 1, "ON DELETE CASCADE was carried");
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_and_new_writers_run_through_a_rename_that_carries_a_unique_constraint() {
    let (_db, pool) = database(20).await;
    seed(&pool, "people").await;
    sqlx::raw_sql(
        "ALTER TABLE people ADD CONSTRAINT people_name_key UNIQUE (name);
         CREATE INDEX people_name_pattern_idx ON people (name text_pattern_ops);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let log: WriteLog = Default::default();
    let old: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&pool, lane, log.clone()))
        .collect();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    let new: Vec<Writer> = (2..4)
        .map(|lane| new_writer(&pool, lane, log.clone()))
        .collect();
    evolution.wait().await.unwrap();
    // A writer that repeats a value on purpose is refused by the carried index too.
    let repeated = sqlx::query("UPDATE people SET full_name = 'Name 10' WHERE id = 11")
        .execute(&pool)
        .await
        .expect_err("unique before switch");
    assert_eq!(sqlstate(&repeated).as_deref(), Some("23505"));
    evolution.switch().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut failures = Vec::new();
    for w in old {
        failures.extend(w.finish().await.1);
    }
    evolution.contract().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in new {
        failures.extend(w.finish().await.1);
    }
    assert!(
        failures.is_empty(),
        "{} failed statements, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_log_matches(&pool, &log, "full_name").await;
    assert_eq!(
        index_names(&pool, "people").await,
        [
            "people_full_name_key",
            "people_name_pattern_idx",
            "people_pkey"
        ],
        "a name the user gave is kept"
    );
    let invalid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'people'::regclass AND NOT indisvalid",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(invalid, 0);
}

#[tokio::test]
async fn a_view_and_a_policy_on_the_old_column_are_drift_and_nothing_is_created() {
    let (_db, pool) = database(5).await;
    sqlx::raw_sql(
        "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
         INSERT INTO people VALUES (1, 'Ada', 'ada@example.com');
         CREATE VIEW people_names AS SELECT id, name FROM people;
         ALTER TABLE people ENABLE ROW LEVEL SECURITY;
         CREATE POLICY named_only ON people USING (name <> '');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = catalog_snapshot(&pool, "people").await;
    let err = Evolver::new(pool.clone())
        .model::<Person>()
        .boot()
        .await
        .expect_err("drift stops the boot");
    let ErrorKind::Drift(problems) = err.kind() else {
        panic!("expected drift, got {err}")
    };
    let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    let view = messages
        .iter()
        .find(|m| m.contains("view"))
        .unwrap_or_else(|| panic!("{messages:#?}"));
    assert!(
        view.starts_with("public.people.name: view public.people_names selects `name`")
            && view.contains("make it read `full_name`"),
        "{view}"
    );
    let policy = messages
        .iter()
        .find(|m| m.contains("policy"))
        .unwrap_or_else(|| panic!("{messages:#?}"));
    assert!(
        policy.contains("policy named_only on table") && policy.contains("ALTER POLICY"),
        "{policy}"
    );
    let state: bool = sqlx::query_scalar("SELECT to_regnamespace('pgevolve') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!state, "nothing was created, not even the state store");
    assert_eq!(catalog_snapshot(&pool, "people").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_after_the_carried_indexes_were_built_restores_the_catalog() {
    let (_db, pool) = database(10).await;
    seed(&pool, "people").await;
    sqlx::raw_sql(
        "ALTER TABLE people ADD CONSTRAINT people_name_key UNIQUE (name);
         CREATE INDEX people_lower_name_idx ON people (lower(name));
         ALTER TABLE people ADD CONSTRAINT people_name_check CHECK (length(name) > 1);
         CREATE TABLE badges (id bigint PRIMARY KEY, holder text REFERENCES people (name));",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = (
        catalog_snapshot(&pool, "people").await,
        catalog_snapshot(&pool, "badges").await,
    );
    let evolution = Evolver::new(pool.clone())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let built = index_names(&pool, "people").await;
    assert!(
        built.contains(&"people_full_name_key".to_string()) && built.len() == 5,
        "carried indexes built before switch: {built:#?}"
    );
    let step = evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| matches!(s.kind, StepKind::RenameColumn(_)))
        .unwrap()
        .id;
    evolution.abort(&step).await.unwrap();
    assert_eq!(
        (
            catalog_snapshot(&pool, "people").await,
            catalog_snapshot(&pool, "badges").await
        ),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_index_build_cancelled_midway_is_repaired_by_the_next_boot() {
    let (db, pool) = database(10).await;
    seed(&pool, "people").await;
    sqlx::raw_sql("ALTER TABLE people ADD CONSTRAINT people_name_key UNIQUE (name)")
        .execute(&pool)
        .await
        .unwrap();
    let index = "people_full_name_key";

    let mut snapshot = old_snapshot(db.url()).await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    let pid = build_waiting(&pool, index).await;
    sqlx::query("SELECT pg_cancel_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await
        .unwrap();
    let message = evolution.wait().await.expect_err("cancelled").to_string();
    assert!(
        message.contains("building index people_full_name_key failed")
            && message.contains("canceling statement due to user request"),
        "{message}"
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut snapshot)
        .await
        .unwrap();

    // An INVALID index under the carried name, as a process killed mid-build leaves it.
    let mut snapshot = old_snapshot(db.url()).await;
    let by_hand = tokio::spawn({
        let pool = pool.clone();
        async move {
            sqlx::raw_sql(
                "CREATE UNIQUE INDEX CONCURRENTLY people_full_name_key ON people (full_name)",
            )
            .execute(&pool)
            .await
        }
    });
    let pid = build_waiting(&pool, index).await;
    sqlx::query("SELECT pg_cancel_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await
        .unwrap();
    assert!(by_hand.await.unwrap().is_err());
    sqlx::raw_sql("COMMIT")
        .execute(&mut snapshot)
        .await
        .unwrap();
    let valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('people_full_name_key')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!valid, "an INVALID leftover");

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let all = support::indexes(&pool, "people").await;
    assert!(
        all.contains(&(
            index.into(),
            true,
            "CREATE UNIQUE INDEX people_full_name_key ON public.people USING btree (full_name)"
                .into()
        )) && all.iter().all(|(_, valid, _)| *valid),
        "{all:#?}"
    );
    evolution.switch().await.unwrap();
    evolution.contract().await.unwrap();
    assert!(
        constraint_defs(&pool, "people")
            .await
            .contains(&(index.into(), "UNIQUE (full_name)".into()))
    );
}
