//! A table dropped with `Evolver::dropped_table("legacy_audit")` while the old build (the
//! generated accessors of a struct on `legacy_audit`) keeps writing it and the new build (which
//! has no model for it) writes its other table: nothing changes before contract, every write of
//! the old build is in the table until then, and contract drops it after every acknowledgement.
//! An abort leaves the catalog as it was; a view or foreign key depending on the table, and a
//! model that still maps it, are drift; a process killed with SIGKILL after expand and while its
//! `DROP TABLE` waits for a lock is recovered by the next boot.

use pgevolve_test_support as support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgevolve::{DeployWindow, ErrorKind, Evolve, Evolver, Phase};
use sqlx::PgPool;
use support::child::{self, ChildProcess};
use support::{catalog_snapshot, database};

const ROWS: i64 = 1_000;

/// The old build's model of the table that goes.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "legacy_audit")]
pub struct LegacyAudit {
    #[evolve(primary_key)]
    pub id: i64,
    pub note: String,
    pub weight: i64,
}

/// A table both builds keep.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "accounts")]
pub struct Account {
    #[evolve(primary_key)]
    pub id: i64,
    pub name: String,
}

async fn seed(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE legacy_audit (id bigint PRIMARY KEY, note text NOT NULL, weight bigint NOT NULL DEFAULT 1);
         CREATE INDEX legacy_audit_note_idx ON legacy_audit (note);
         INSERT INTO legacy_audit SELECT g, 'note ' || g, 5 * g + 2 FROM generate_series(1, {ROWS}) g;
         CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, {ROWS}) g;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// The old build, booted before the new one (its instance in a state schema of its own: see
/// `tests/rename_table.rs`).
async fn old_build(pool: &PgPool) -> pgevolve::Evolution {
    Evolver::new(pool.clone())
        .state_schema("pgevolve_old_build")
        .model::<LegacyAudit>()
        .model::<Account>()
        .boot()
        .await
        .unwrap()
}

fn new_build(pool: &PgPool) -> Evolver {
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Account>()
        .dropped_table("legacy_audit")
}

type Expected = Arc<Mutex<HashMap<i64, (String, i64)>>>;

fn seeded() -> Expected {
    Arc::new(Mutex::new(
        (1..=ROWS)
            .map(|g| (g, (format!("note {g}"), 5 * g + 2)))
            .collect(),
    ))
}

use support::TaskWriter as Writer;

/// The old build: updates its lane's rows of `legacy_audit` (values the default would never
/// give) and inserts rows of its own.
fn old_writer(pool: &PgPool, lane: i64, expected: Expected) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let row = LegacyAudit {
                id: if n % 3 == 0 {
                    1_000_000 * (lane + 1) + n
                } else {
                    lane + 2 * (1 + n % (ROWS / 2 - 1))
                },
                note: format!("old{lane}-{n}"),
                weight: 1_000 * (lane + 7) + n,
            };
            let result = if n % 3 == 0 {
                row.insert(&pool).await.map(|_| ())
            } else {
                row.update(&pool).await.map(|_| ())
            };
            match result {
                Ok(()) => {
                    expected
                        .lock()
                        .unwrap()
                        .insert(row.id, (row.note, row.weight));
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

async fn assert_rows_match(pool: &PgPool, expected: &Expected) {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as("SELECT id, note, weight FROM legacy_audit")
        .fetch_all(pool)
        .await
        .unwrap();
    let found: HashMap<i64, (String, i64)> =
        rows.into_iter().map(|(id, n, w)| (id, (n, w))).collect();
    assert_eq!(&found, &*expected.lock().unwrap());
}

async fn exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn drop_step(evolution: &pgevolve::Evolution) -> pgevolve::StepStatus {
    support::step_described(evolution, "drop table").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drop_table_keeps_every_old_build_write_until_contract_then_drops_it() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(20).await;
    seed(&pool).await;
    let _old_build = old_build(&pool).await;
    let before = catalog_snapshot(&pool, "legacy_audit").await;
    let expected = seeded();
    let old: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&pool, lane, expected.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let evolution = new_build(&pool).boot().await.unwrap();
    evolution.wait().await.unwrap();
    // The new build serves; the old build still writes the table.
    Account {
        id: ROWS + 1,
        name: "new".into(),
    }
    .insert(&pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(drop_step(&evolution).await.phase, Phase::Expand);
    assert_eq!(
        catalog_snapshot(&pool, "legacy_audit").await,
        before,
        "nothing changes before contract"
    );

    let mut failures = Vec::new();
    let mut ok = 0;
    for w in old {
        let (n, errors) = w.finish().await;
        ok += n;
        failures.extend(errors);
    }
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok > 100, "only {ok} writes");
    // Every write of the old build is there up to the contract.
    assert_rows_match(&pool, &expected).await;

    evolution.contract().await.unwrap();
    assert!(!exists(&pool, "legacy_audit").await, "dropped at contract");
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(accounts, ROWS + 1);
    let step = drop_step(&evolution).await;
    assert_eq!(step.phase, Phase::Contract);
    support::assert_journal(&step, &support::EXPAND_RETIRE_CONTRACT);
    // Booting the build again finds the step done and creates nothing.
    new_build(&pool).boot().await.unwrap().wait().await.unwrap();
    assert!(!exists(&pool, "legacy_audit").await);
}

#[tokio::test]
async fn abort_before_contract_changes_nothing_and_keeps_every_row() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    let _old_build = old_build(&pool).await;
    let before = catalog_snapshot(&pool, "legacy_audit").await;
    let evolution = new_build(&pool).boot().await.unwrap();
    let expected = seeded();
    let row = LegacyAudit {
        id: 50_000,
        note: "after expand".into(),
        weight: 77,
    };
    row.insert(&pool).await.unwrap();
    expected
        .lock()
        .unwrap()
        .insert(row.id, (row.note, row.weight));

    let step = drop_step(&evolution).await;
    evolution.abort(&step.id).await.unwrap();
    assert_eq!(drop_step(&evolution).await.phase, Phase::Aborted);
    // A contract after the abort does not drop it.
    evolution.contract().await.unwrap();
    assert_eq!(catalog_snapshot(&pool, "legacy_audit").await, before);
    assert_rows_match(&pool, &expected).await;
}

#[tokio::test]
async fn a_view_a_foreign_key_a_model_still_on_the_table_or_no_name_is_drift_before_any_ddl() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    sqlx::raw_sql(
        "CREATE VIEW heavy_notes AS SELECT note FROM legacy_audit WHERE weight > 100;
         CREATE TABLE audit_refs (id bigint PRIMARY KEY, audit_id bigint REFERENCES legacy_audit (id));",
    )
    .execute(&pool)
    .await
    .unwrap();
    let drift = |e: pgevolve::Error| -> Vec<String> {
        match e.kind() {
            ErrorKind::Drift(problems) => problems.iter().map(|p| p.message.clone()).collect(),
            other => panic!("expected drift, got {other:?}"),
        }
    };
    let messages = drift(new_build(&pool).boot().await.unwrap_err());
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("foreign key audit_refs_audit_id_fkey of audit_refs"));
    assert!(messages[1].contains("view heavy_notes reads it"));
    assert!(messages.iter().all(|m| m.contains("first")));

    let messages = drift(
        new_build(&pool)
            .model::<LegacyAudit>()
            .boot()
            .await
            .unwrap_err(),
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("struct `LegacyAudit` maps it")),
        "{messages:?}"
    );
    let messages = drift(
        Evolver::new(pool.clone())
            .dropped_table("")
            .boot()
            .await
            .unwrap_err(),
    );
    assert!(messages[0].contains("names no table"), "{messages:?}");
    assert!(exists(&pool, "legacy_audit").await);
}

/// The child of the kill test. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_table_child_process() {
    let Some((scenario, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let evolution = new_build(&pool).boot().await.unwrap();
    child::report("BOOTED");
    if scenario == "contract" {
        evolution.wait().await.unwrap();
        // Retire, then `DROP TABLE` retrying behind the parent's lock.
        evolution.contract().await.unwrap();
    }
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

async fn killed_at(scenario: &str) {
    let (db, pool) = database(10).await;
    seed(&pool).await;
    let _old_build = old_build(&pool).await;
    let expected = seeded();
    let mut process = ChildProcess::start("drop_table_child_process", scenario, db.url(), None);
    process.expect("BOOTED");
    let mut blocker = None;
    if scenario == "contract" {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE legacy_audit IN ACCESS SHARE MODE")
            .execute(&mut *tx)
            .await
            .unwrap();
        blocker = Some(tx);
        let started = std::time::Instant::now();
        while !sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT FROM pg_locks WHERE NOT granted AND relation = 'legacy_audit'::regclass)",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
        {
            assert!(started.elapsed() < Duration::from_secs(60), "no DROP TABLE waited");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    process.kill();
    drop(blocker);
    child::until_no_advisory_lock(&pool).await;
    let recorded = if scenario == "contract" {
        Phase::Retire
    } else {
        Phase::Expand
    };
    assert_eq!(
        support::recorded_phase(&pool, "drop_table").await,
        Some(recorded),
        "{scenario}"
    );
    assert!(exists(&pool, "legacy_audit").await, "{scenario}");
    // The old build still writes what the dead process left.
    let row = LegacyAudit {
        id: 60_000,
        note: "after the kill".into(),
        weight: 61,
    };
    row.insert(&pool).await.unwrap();
    expected
        .lock()
        .unwrap()
        .insert(row.id, (row.note, row.weight));
    assert_rows_match(&pool, &expected).await;

    let evolution = new_build(&pool).boot().await.unwrap();
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    assert_eq!(
        drop_step(&evolution).await.phase,
        Phase::Contract,
        "{scenario}"
    );
    assert!(!exists(&pool, "legacy_audit").await, "{scenario}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_after_expand_or_during_contract_is_recovered_by_the_next_boot() {
    if child::in_child() {
        return;
    }
    for scenario in ["expanded", "contract"] {
        killed_at(scenario).await;
    }
}
