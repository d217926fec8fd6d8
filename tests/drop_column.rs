//! A column dropped with `#[evolve(dropped("legacy_flag"))]` while an "old build" (raw SQL that
//! writes the column, always NOT NULL) and the "new build" (the generated accessors of a struct
//! without the field) keep writing: NOT NULL is relaxed at expand, the column dropped at
//! contract, and every row keeps every value written. An abort after expand restores NOT NULL
//! (catalog equal to before), and refuses, changing nothing, while rows have NULL. A NOT NULL
//! column missing from a struct that does not mark it dropped is drift. The new build's process
//! SIGKILLed with expand done, with retire waiting for the acknowledgements, and just before the
//! contract's transaction, while the old build runs as a process of its own (its accessors
//! writing the column): the next boot finishes the drop, with every row written.

use pgevolve_test_support as support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgevolve::{DeployWindow, ErrorKind, Evolve, Evolver, Phase};
use sqlx::PgPool;
use support::child::{self, ChildProcess};
use support::{catalog_snapshot, database};

const ROWS: i64 = 4_000;

/// The new build: `legacy_flag` is gone from the struct and declared dropped.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "accounts", dropped("legacy_flag"))]
pub struct Account {
    #[evolve(primary_key)]
    pub id: i64,
    pub name: String,
}

/// The old build: the field is there, the column NOT NULL.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "accounts")]
pub struct AccountV1 {
    #[evolve(primary_key)]
    pub id: i64,
    pub name: String,
    pub legacy_flag: bool,
}

/// A build whose author removed the field and forgot to say the column goes.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "accounts")]
pub struct AccountForgotten {
    #[evolve(primary_key)]
    pub id: i64,
    pub name: String,
}

/// `accounts` as the old build created it: `legacy_flag` NOT NULL without a default.
async fn seed(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, legacy_flag boolean NOT NULL);
         INSERT INTO accounts SELECT g, 'Name ' || g, g % 2 = 0 FROM generate_series(1, {ROWS}) g;
         ANALYZE accounts;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// What each row must hold: name and (while the column exists) the flag.
type Expected = Arc<Mutex<HashMap<i64, (String, Option<bool>)>>>;

fn seeded_expectation() -> Expected {
    Arc::new(Mutex::new(
        (1..=ROWS)
            .map(|g| (g, (format!("Name {g}"), Some(g % 2 == 0))))
            .collect(),
    ))
}

use support::TaskWriter as Writer;

/// The old build: raw SQL naming `legacy_flag` with NOT NULL values, updating ids `≡ lane (mod
/// 4)` and inserting ids of its own.
fn old_writer(pool: &PgPool, lane: i64, expected: Expected) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let name = format!("old{lane}-{n}");
            let legacy = n % 2 == 1;
            let id = if n % 3 == 0 {
                1_000_000 * (lane + 1) + n
            } else {
                lane + 4 * (1 + n % (ROWS / 4 - 1))
            };
            let result = if n % 3 == 0 {
                sqlx::query("INSERT INTO accounts (id, name, legacy_flag) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(&name)
                    .bind(legacy)
                    .execute(&pool)
                    .await
            } else {
                sqlx::query("UPDATE accounts SET name = $2, legacy_flag = $3 WHERE id = $1")
                    .bind(id)
                    .bind(&name)
                    .bind(legacy)
                    .execute(&pool)
                    .await
            };
            match result {
                Ok(_) => {
                    expected.lock().unwrap().insert(id, (name, Some(legacy)));
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// The new build: the generated accessors, which never name `legacy_flag`. Inserts leave it
/// NULL; updates keep whatever it holds.
fn new_writer(pool: &PgPool, lane: i64, expected: Expected) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let name = format!("new{lane}-{n}");
            let result = if n % 3 == 0 {
                let account = Account {
                    id: 1_000_000 * (lane + 1) + n,
                    name: name.clone(),
                };
                account.insert(&pool).await.map(|_| (account.id, true))
            } else {
                let id = lane + 4 * (1 + n % (ROWS / 4 - 1));
                match Account::find(&id, &pool).await {
                    Ok(Some(mut account)) => {
                        account.name = name.clone();
                        account.update(&pool).await.map(|_| (id, false))
                    }
                    Ok(None) => Err(ErrorKind::UnknownStep {
                        step: format!("row {id} missing"),
                    }
                    .into()),
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok((id, inserted)) => {
                    let mut expected = expected.lock().unwrap();
                    let flag = if inserted {
                        None
                    } else {
                        expected.get(&id).and_then(|e| e.1)
                    };
                    expected.insert(id, (name, flag));
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

async fn column_exists(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'accounts'::regclass \
         AND attname = 'legacy_flag' AND NOT attisdropped)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn legacy_not_null(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'legacy_flag'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn drop_step(evolution: &pgevolve::Evolution) -> pgevolve::StepStatus {
    support::step_described(evolution, "drop column").await
}

/// Whether the new build (lanes 2 and 3) writes this row.
fn new_lane(id: i64) -> bool {
    id >= 3_000_000 || (id < 1_000_000 && id % 4 >= 2)
}

/// Every row of the table against what the writers last wrote: with the column, every flag and
/// the old build's rows in full while the new build still writes (its rows' names and its
/// latest inserts move on after the read); without it, after every writer stopped, every row
/// with its name.
async fn assert_rows_match(pool: &PgPool, expected: &Expected, while_new_build_writes: bool) {
    let rows: Vec<(i64, String, Option<bool>)> = if while_new_build_writes {
        sqlx::query_as("SELECT id, name, legacy_flag FROM accounts")
            .fetch_all(pool)
            .await
            .unwrap()
    } else {
        sqlx::query_as("SELECT id, name, NULL::boolean FROM accounts")
            .fetch_all(pool)
            .await
            .unwrap()
    };
    let actual: HashMap<i64, (String, Option<bool>)> = rows
        .into_iter()
        .map(|(id, name, flag)| (id, (name, flag)))
        .collect();
    let expected = expected.lock().unwrap().clone();
    if while_new_build_writes {
        for (id, (name, flag)) in &actual {
            match expected.get(id) {
                Some((want_name, want_flag)) => {
                    assert_eq!(flag, want_flag, "flag of row {id}");
                    if !new_lane(*id) {
                        assert_eq!(name, want_name, "name of row {id}");
                    }
                }
                // Inserted by the new build, not logged yet.
                None => assert!(*id >= 3_000_000 && flag.is_none(), "unexpected row {id}"),
            }
        }
        for id in expected.keys().filter(|id| **id < 3_000_000) {
            assert!(actual.contains_key(id), "row {id} missing");
        }
    } else {
        let mut missing: Vec<&i64> = expected
            .keys()
            .filter(|id| !actual.contains_key(id))
            .collect();
        missing.sort();
        assert!(
            missing.is_empty(),
            "rows missing: {:?}",
            &missing[..missing.len().min(20)]
        );
        assert_eq!(actual.len(), expected.len(), "row count");
        for (id, (name, _)) in &expected {
            assert_eq!(actual.get(id).map(|a| &a.0), Some(name), "row {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drop_column_with_old_and_new_writers_keeps_every_row_and_value() {
    let (_db, pool) = database(20).await;
    seed(&pool).await;
    let expected = seeded_expectation();
    let old: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&pool, lane, expected.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Account>()
        .boot()
        .await
        .unwrap();
    assert!(!legacy_not_null(&pool).await, "expand relaxed NOT NULL");
    // Expand is done: the new build starts next to the old one.
    let new: Vec<Writer> = (2..4)
        .map(|lane| new_writer(&pool, lane, expected.clone()))
        .collect();
    evolution.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(drop_step(&evolution).await.phase, Phase::Expand);
    assert!(
        column_exists(&pool).await,
        "nothing dropped before contract"
    );

    // The old build is gone: that is what contract is gated on.
    let mut failures = Vec::new();
    let mut ok = 0;
    for w in old {
        let (n, errors) = w.finish().await;
        ok += n;
        failures.extend(errors);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_rows_match(&pool, &expected, true).await;

    evolution.contract().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in new {
        let (n, errors) = w.finish().await;
        ok += n;
        failures.extend(errors);
    }
    assert!(
        failures.is_empty(),
        "{} failed statements, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok > 200, "only {ok} writes");
    assert!(!column_exists(&pool).await, "column dropped at contract");
    assert_rows_match(&pool, &expected, false).await;

    let step = drop_step(&evolution).await;
    assert_eq!(step.phase, Phase::Contract);
    support::assert_journal(&step, &support::EXPAND_RETIRE_CONTRACT);
    let helpers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'accounts'::regclass AND contype = 'c'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(helpers, 0, "no helper constraint left");
    support::assert_reboot_changes_nothing::<Account>(&pool, "accounts").await;
}

#[tokio::test]
async fn abort_after_expand_restores_not_null_and_the_catalog() {
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    let before = catalog_snapshot(&pool, "accounts").await;
    let evolution = Evolver::new(pool.clone())
        .model::<Account>()
        .boot()
        .await
        .unwrap();
    assert!(!legacy_not_null(&pool).await, "expand relaxed NOT NULL");
    assert_ne!(catalog_snapshot(&pool, "accounts").await, before);

    let step = drop_step(&evolution).await;
    evolution.abort(&step.id).await.unwrap();
    assert_eq!(drop_step(&evolution).await.phase, Phase::Aborted);
    assert!(legacy_not_null(&pool).await, "NOT NULL restored");
    assert_eq!(catalog_snapshot(&pool, "accounts").await, before);
    let no_nulls: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(no_nulls, ROWS, "every row kept");
}

#[tokio::test]
async fn abort_refuses_while_rows_have_null_and_changes_nothing_until_they_are_filled() {
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    let before = catalog_snapshot(&pool, "accounts").await;
    let evolution = Evolver::new(pool.clone())
        .model::<Account>()
        .boot()
        .await
        .unwrap();
    for id in [ROWS + 1, ROWS + 2] {
        Account {
            id,
            name: format!("new {id}"),
        }
        .insert(&pool)
        .await
        .unwrap();
    }
    let expanded = catalog_snapshot(&pool, "accounts").await;
    let step = drop_step(&evolution).await;

    let err = evolution
        .abort(&step.id)
        .await
        .expect_err("abort must refuse while rows have NULL");
    let message = err.to_string();
    assert!(
        message.contains("2 rows have NULL in column legacy_flag"),
        "{message}"
    );
    assert!(message.contains("fill them"), "{message}");
    assert_eq!(catalog_snapshot(&pool, "accounts").await, expanded);
    assert_eq!(drop_step(&evolution).await.phase, Phase::Expand);

    sqlx::query("UPDATE accounts SET legacy_flag = false WHERE legacy_flag IS NULL")
        .execute(&pool)
        .await
        .unwrap();
    evolution.abort(&step.id).await.unwrap();
    assert_eq!(drop_step(&evolution).await.phase, Phase::Aborted);
    assert_eq!(catalog_snapshot(&pool, "accounts").await, before);
}

#[tokio::test]
async fn not_null_column_missing_from_the_struct_is_drift_until_marked_dropped() {
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    let before = catalog_snapshot(&pool, "accounts").await;
    let err = Evolver::new(pool.clone())
        .model::<AccountForgotten>()
        .boot()
        .await
        .expect_err("drift must stop the boot");
    let ErrorKind::Drift(problems) = err.kind() else {
        panic!("expected drift, got {err}")
    };
    let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("legacy_flag")
            && messages[0].contains("#[evolve(dropped(\"legacy_flag\"))]"),
        "{messages:?}"
    );
    assert_eq!(catalog_snapshot(&pool, "accounts").await, before);

    // Nullable, it breaks no insert: not drift.
    sqlx::query("ALTER TABLE accounts ALTER COLUMN legacy_flag DROP NOT NULL")
        .execute(&pool)
        .await
        .unwrap();
    Evolver::new(pool.clone())
        .model::<AccountForgotten>()
        .boot()
        .await
        .unwrap();
    assert!(
        column_exists(&pool).await,
        "a column missing from a struct is never dropped"
    );
}

#[tokio::test]
async fn boot_relaxes_again_a_not_null_restored_by_hand_after_expand() {
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    let evolution = Evolver::new(pool.clone())
        .model::<Account>()
        .boot()
        .await
        .unwrap();
    assert!(!legacy_not_null(&pool).await, "expand relaxed NOT NULL");
    let expanded = catalog_snapshot(&pool, "accounts").await;
    drop(evolution);
    sqlx::query("ALTER TABLE accounts ALTER COLUMN legacy_flag SET NOT NULL")
        .execute(&pool)
        .await
        .unwrap();

    let evolution = Evolver::new(pool.clone())
        .model::<Account>()
        .boot()
        .await
        .unwrap();
    assert!(!legacy_not_null(&pool).await, "boot relaxed NOT NULL again");
    assert_eq!(catalog_snapshot(&pool, "accounts").await, expanded);
    assert_eq!(drop_step(&evolution).await.phase, Phase::Expand);
    Account {
        id: ROWS + 1,
        name: "new".into(),
    }
    .insert(&pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_view_reading_a_dropped_column_or_an_index_over_it_and_another_is_drift() {
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    sqlx::raw_sql(
        "CREATE VIEW flagged AS SELECT id FROM accounts WHERE legacy_flag;
         CREATE INDEX accounts_name_flag ON accounts (name, legacy_flag);
         CREATE INDEX accounts_flag ON accounts (legacy_flag);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = catalog_snapshot(&pool, "accounts").await;
    let err = Evolver::new(pool.clone())
        .model::<Account>()
        .boot()
        .await
        .expect_err("drift must stop the boot");
    let ErrorKind::Drift(problems) = err.kind() else {
        panic!("expected drift, got {err}")
    };
    let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].contains("index accounts_name_flag covers other columns too"),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("view flagged reads it: DROP COLUMN would fail"),
        "{messages:?}"
    );
    assert_eq!(catalog_snapshot(&pool, "accounts").await, before);
}

/// The ids the old build's process inserts: `OLD_PROCESS + n`, named `oldproc-<id>`, the flag
/// true for even ids.
const OLD_PROCESS: i64 = 8_000_000;

/// The `application_name` of the old build's process's sessions.
const OLD_PROCESS_SESSION: &str = "old build process";

fn evolver(pool: &PgPool) -> Evolver {
    // A killed process's heartbeat expires after 2 s: the acknowledgements stop waiting for it.
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(Duration::from_secs(2), Duration::from_secs(60))
        .model::<Account>()
}

/// The children. `old`: the old build (an instance that never acknowledges the drop), inserting
/// rows through its accessors and reporting `WROTE <id>` after each commit. `expand`: the new
/// build booted, `BOOTED`. `contract`: the new build's contract, which records retire and then
/// waits for the old build's acknowledgement, or pauses before the contract's transaction
/// (`PGEVOLVE_PAUSE_AT=contract`). Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_column_child_process() {
    let Some((scenario, url)) = child::child_spec() else {
        return;
    };
    // The old build's sessions carry a name: the parent waits for them to end after the kill.
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let options = if scenario == "old" {
        options.application_name(OLD_PROCESS_SESSION)
    } else {
        options
    };
    let pool = PgPool::connect_with(options).await.unwrap();
    match scenario.as_str() {
        "old" => {
            let _old = Evolver::new(pool.clone())
                .model::<AccountV1>()
                .boot()
                .await
                .unwrap();
            for id in OLD_PROCESS.. {
                AccountV1 {
                    id,
                    name: format!("oldproc-{id}"),
                    legacy_flag: id % 2 == 0,
                }
                .insert(&pool)
                .await
                .unwrap();
                child::report(&format!("WROTE {id}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        "expand" => {
            let _evolution = evolver(&pool).boot().await.unwrap();
            child::report("BOOTED");
        }
        "contract" => {
            let evolution = evolver(&pool).boot().await.unwrap();
            let _ = evolution.contract().await;
        }
        other => panic!("unknown scenario {other}"),
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
    }
}

async fn recorded_phase(pool: &PgPool) -> Option<Phase> {
    support::recorded_phase(pool, "drop_column").await
}

/// Kills the old build's process and adds every row it inserted to `expected`: the ids it
/// reported, and one more it may have committed before the kill, all in sequence.
async fn kill_old_build(process: ChildProcess, pool: &PgPool, expected: &Expected) {
    let mut process = process;
    let reported = process
        .new_lines()
        .iter()
        .filter_map(|l| l.trim().strip_prefix("WROTE ")?.parse::<i64>().ok())
        .max();
    process.kill();
    // An INSERT the process had sent before it died still commits if its session had read it:
    // the count below waits until the server has ended every session of the process.
    child::until_sessions_end(pool, OLD_PROCESS_SESSION).await;
    // Every value of the column the old build wrote is there (the column goes at contract).
    let (count, last): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE name = 'oldproc-' || id AND legacy_flag = (id % 2 = 0)), max(id) \
         FROM accounts WHERE id >= $1",
    )
    .bind(OLD_PROCESS)
    .fetch_one(pool)
    .await
    .unwrap();
    let last = last.expect("the old build's process wrote rows");
    assert!(
        last >= reported.unwrap_or(OLD_PROCESS),
        "a reported write is missing"
    );
    assert_eq!(
        count,
        last - OLD_PROCESS + 1,
        "the old build's rows are in sequence, with the values it wrote"
    );
    let mut expected = expected.lock().unwrap();
    for id in OLD_PROCESS..=last {
        expected.insert(id, (format!("oldproc-{id}"), Some(id % 2 == 0)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drop_killed_at_expand_retire_or_contract_is_finished_by_the_next_boot_while_the_old_build_runs_as_a_process()
 {
    if child::in_child() {
        return;
    }
    let entry = "drop_column_child_process";
    for scenario in ["expand", "retire", "contract"] {
        let (db, pool) = database(20).await;
        seed(&pool).await;
        let expected = seeded_expectation();
        // The old build, deployed before the new one and running through the window.
        let mut old = ChildProcess::start(entry, "old", db.url(), None);
        old.wait_for("WROTE ", |n| {
            n.trim().parse::<i64>().unwrap() >= OLD_PROCESS + 20
        });
        match scenario {
            "expand" => {
                let mut c = ChildProcess::start(entry, "expand", db.url(), None);
                c.expect("BOOTED");
                c.kill();
                old.wait_for("WROTE ", |_| true);
                kill_old_build(old, &pool, &expected).await;
            }
            "retire" => {
                let c = ChildProcess::start(entry, "contract", db.url(), None);
                let started = std::time::Instant::now();
                while recorded_phase(&pool).await != Some(Phase::Retire) {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "never at retire"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // The contract waits for the old build, which still writes the column.
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert!(
                    column_exists(&pool).await,
                    "{scenario}: nothing dropped yet"
                );
                c.kill();
                kill_old_build(old, &pool, &expected).await;
            }
            _ => {
                // The old build's deploy is over: the contract's wait for it ends.
                kill_old_build(old, &pool, &expected).await;
                ChildProcess::paused_at(entry, "contract", db.url(), "contract").kill();
            }
        }
        child::until_no_advisory_lock(&pool).await;
        let at_kill = if scenario == "expand" {
            Phase::Expand
        } else {
            Phase::Retire
        };
        assert_eq!(recorded_phase(&pool).await, Some(at_kill), "{scenario}");
        assert!(
            column_exists(&pool).await,
            "{scenario}: nothing dropped before contract"
        );
        assert!(
            !legacy_not_null(&pool).await,
            "{scenario}: expand relaxed NOT NULL"
        );

        // The next boot, in this process, with the new build writing.
        let evolution = evolver(&pool).boot().await.unwrap();
        let new = new_writer(&pool, 2, expected.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        evolution.contract().await.unwrap();
        let (ok, errors) = new.finish().await;
        assert!(errors.is_empty(), "{scenario}: {errors:?}");
        assert!(ok > 20, "{scenario}: only {ok} writes");
        assert!(
            !column_exists(&pool).await,
            "{scenario}: dropped at contract"
        );
        assert_eq!(drop_step(&evolution).await.phase, Phase::Contract);
        assert_rows_match(&pool, &expected, false).await;
    }
}
