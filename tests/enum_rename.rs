//! An enum label renamed with `#[evolve(renamed_from = "Shipped")]` on the variant: nothing in
//! the catalog changes before contract, while the old build (sqlx, writing `Shipped`) and the
//! new build (the generated accessors, writing `Dispatched`, sent as text and mapped in SQL)
//! write the same rows; `ALTER TYPE ... RENAME VALUE` at contract; every row compared before
//! and after. A statement of the new build built before the rename's commit and run after it
//! runs again with the contract's SQL. Abort after expand changes nothing in the catalog; at
//! retire it is refused. A process SIGKILLed after boot, or just before the contract's
//! transaction, is taken over by the next boot. Drift: both labels, or neither.

use pgevolve_test_support as support;
#[macro_use]
#[path = "support/sqlx_enum.rs"]
mod sqlx_enum;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgevolve::{DeployWindow, ErrorKind, Evolve, EvolveEnum, Evolver, Phase};
use sqlx::PgPool;
use support::TaskWriter;
use support::child::{self, ChildProcess};
use support::{catalog_snapshot, database};

/// The old build's enum.
#[derive(EvolveEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[evolve(type_name = "order_status")]
pub enum StatusV1 {
    Pending,
    Shipped,
}
sqlx_enum!(StatusV1, "order_status", { Pending => "Pending", Shipped => "Shipped" });

/// The new build's enum: `Shipped` renamed `Dispatched`, and `Delivered` added after it.
#[derive(EvolveEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[evolve(type_name = "order_status")]
pub enum Status {
    Pending,
    #[evolve(renamed_from = "Shipped")]
    Dispatched,
    Delivered,
}
sqlx_enum!(Status, "order_status", {
    Pending => "Pending", Dispatched => "Dispatched", Delivered => "Delivered",
});

/// The old build's table.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "orders")]
pub struct OrderV1 {
    #[evolve(primary_key)]
    pub id: i64,
    pub note: String,
    pub status: StatusV1,
    pub previous: Option<StatusV1>,
}

/// The new build's table: the same columns, of the renaming enum.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "orders")]
pub struct Order {
    #[evolve(primary_key)]
    pub id: i64,
    pub note: String,
    pub status: Status,
    pub previous: Option<Status>,
}

const ROWS: i64 = 400;
const OLD: &str = "Shipped";
const NEW: &str = "Dispatched";

/// The old build's schema, as it created it, seeded: `Pending` for even ids, `Shipped` for odd
/// ones, `previous` NULL for multiples of 3 and the other label otherwise.
async fn seed(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TYPE order_status AS ENUM ('Pending', 'Shipped');
         CREATE TABLE orders (id bigint PRIMARY KEY, note text NOT NULL, status order_status NOT NULL,
                              previous order_status);
         INSERT INTO orders (id, note, status, previous)
         SELECT g, 'seed-' || g,
                (CASE WHEN g % 2 = 0 THEN 'Pending' ELSE 'Shipped' END)::order_status,
                (CASE WHEN g % 3 = 0 THEN NULL WHEN g % 2 = 0 THEN 'Shipped' ELSE 'Pending' END)::order_status
         FROM generate_series(1, {ROWS}) g;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

async fn labels(pool: &PgPool) -> Vec<String> {
    support::enum_labels(pool, "order_status").await
}

fn evolver(pool: &PgPool) -> Evolver {
    // A killed child's heartbeat expires after 2 s: the acknowledgements stop waiting for it.
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(Duration::from_secs(2), Duration::from_secs(60))
        .model::<Order>()
}

async fn rename_step(evolution: &pgevolve::Evolution) -> pgevolve::StepStatus {
    support::step_described(evolution, "rename value").await
}

/// Every write that succeeded: its note (unique) → the id and the labels it wrote.
type Log = Arc<Mutex<HashMap<String, (i64, String, Option<String>)>>>;

/// The old build: sqlx encoding `StatusV1`, updating any row and inserting rows of its own.
fn old_writer(pool: &PgPool, lane: i64, log: Log) -> TaskWriter {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let note = format!("old{lane}-{n}");
            let status = StatusV1::ALL[(n as usize) % 2];
            let previous = (n % 3 != 0).then(|| StatusV1::ALL[(n as usize / 2) % 2]);
            let (id, sql) = if n % 5 == 0 {
                (
                    1_000_000 * (lane + 1) + n,
                    "INSERT INTO orders (id, note, status, previous) VALUES ($1, $2, $3, $4)",
                )
            } else {
                (
                    1 + (n * 7 + lane) % ROWS,
                    "UPDATE orders SET note = $2, status = $3, previous = $4 WHERE id = $1",
                )
            };
            let result = sqlx::query(sql)
                .bind(id)
                .bind(&note)
                .bind(status)
                .bind(previous)
                .execute(&pool)
                .await;
            match result {
                Ok(_) => {
                    let labels = (
                        id,
                        status.label().to_string(),
                        previous.map(|p| p.label().to_string()),
                    );
                    log.lock().unwrap().insert(note, labels);
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (ok, errors)
    });
    TaskWriter { stop, handle }
}

/// The new build: the generated accessors, reading rows (the old build's `Shipped` comes back
/// as `Dispatched`) and writing every label of `Status`, on the same ids, and inserting.
fn new_writer(pool: &PgPool, lane: i64, log: Log) -> TaskWriter {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let note = format!("new{lane}-{n}");
            let status = Status::ALL[(n as usize) % 3];
            let previous = (n % 4 != 0).then(|| Status::ALL[(n as usize / 3) % 3]);
            let result = if n % 5 == 0 {
                let order = Order {
                    id: 10_000_000 * (lane + 1) + n,
                    note: note.clone(),
                    status,
                    previous,
                };
                order.insert(&pool).await.map(|_| order.id)
            } else {
                let id = 1 + (n * 7 + lane) % ROWS;
                match Order::find(&id, &pool).await {
                    Ok(Some(mut order)) => {
                        order.note = note.clone();
                        order.status = status;
                        order.previous = previous;
                        order.update(&pool).await.map(|_| id)
                    }
                    Ok(None) => Ok(0),
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(0) => {}
                Ok(id) => {
                    let labels = (
                        id,
                        status.label().to_string(),
                        previous.map(|p| p.label().to_string()),
                    );
                    log.lock().unwrap().insert(note, labels);
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (ok, errors)
    });
    TaskWriter { stop, handle }
}

/// The label stored for `written` (by either build): the old name until the contract, the new
/// one after it.
fn stored(written: &str, renamed: bool) -> String {
    match (written, renamed) {
        (NEW, false) => OLD.to_string(),
        (OLD, true) => NEW.to_string(),
        _ => written.to_string(),
    }
}

/// With every writer stopped: every row holds what the write named by its note wrote (or its
/// seed), under the label's name of the moment, and every inserted row is there.
async fn assert_every_row_as_written(pool: &PgPool, log: &Log, renamed: bool) {
    let rows: Vec<(i64, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, note, status::text, previous::text FROM orders ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    let log = log.lock().unwrap();
    let ids: std::collections::HashSet<i64> = rows.iter().map(|r| r.0).collect();
    for (id, note, status, previous) in &rows {
        let (want_status, want_previous) = if let Some(seed) = note.strip_prefix("seed-") {
            assert_eq!(seed, id.to_string(), "row {id} holds another row's seed");
            let status = if id % 2 == 0 { "Pending" } else { OLD };
            let previous = match (id % 3, id % 2) {
                (0, _) => None,
                (_, 0) => Some(OLD.to_string()),
                _ => Some("Pending".to_string()),
            };
            (status.to_string(), previous)
        } else {
            let Some((logged_id, status, previous)) = log.get(note) else {
                panic!("row {id} holds note {note:?}, which no successful write wrote");
            };
            assert_eq!(logged_id, id, "note {note:?} is on the wrong row");
            (status.clone(), previous.clone())
        };
        assert_eq!(
            *status,
            stored(&want_status, renamed),
            "status of row {id} ({note})"
        );
        assert_eq!(
            *previous,
            want_previous.map(|p| stored(&p, renamed)),
            "previous of row {id} ({note})"
        );
    }
    for (note, (id, ..)) in log.iter() {
        if *id > ROWS {
            assert!(ids.contains(id), "inserted row {id} ({note}) is missing");
        }
    }
}

/// Waits until every writer whose notes start with one of `prefixes` has logged more than 20
/// writes (what `stop_all` asserts), however slow the machine: a fixed sleep was not enough
/// under load.
async fn until_logged(log: &Log, prefixes: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let short: Vec<&str> = {
            let log = log.lock().unwrap();
            prefixes
                .iter()
                .copied()
                .filter(|p| log.keys().filter(|note| note.starts_with(p)).count() <= 20)
                .collect()
        };
        if short.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writers {short:?}: 20 writes or fewer after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_all(writers: Vec<(TaskWriter, &str)>) -> u64 {
    let mut ok = 0;
    for (w, who) in writers {
        ok += w.assert_no_errors(who).await;
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_label_is_renamed_at_contract_while_old_and_new_builds_write_the_same_rows() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(20).await;
    seed(&pool).await;
    let log: Log = Arc::default();
    let old: Vec<TaskWriter> = (0..2).map(|l| old_writer(&pool, l, log.clone())).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let evolution = evolver(&pool).boot().await.unwrap();
    // Expand added `Delivered` (after the old name) and renamed nothing.
    assert_eq!(labels(&pool).await, ["Pending", OLD, "Delivered"]);
    assert_eq!(rename_step(&evolution).await.phase, Phase::Expand);
    // The old build's label reads as the new variant.
    let odd = Order::find(&1, &pool).await.unwrap().unwrap();
    assert!(
        odd.status == Status::Dispatched || odd.note.starts_with("old"),
        "{odd:?}"
    );

    let new: Vec<TaskWriter> = (0..2).map(|l| new_writer(&pool, l, log.clone())).collect();
    evolution.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    until_logged(&log, &["old0-", "old1-", "new0-", "new1-"]).await;
    // The old build is gone (contract waits for it); the new build stops for the comparison.
    let mut ok = stop_all(
        old.into_iter()
            .map(|w| (w, "old build"))
            .chain(new.into_iter().map(|w| (w, "new build before contract")))
            .collect(),
    )
    .await;
    assert_eq!(labels(&pool).await, ["Pending", OLD, "Delivered"]);
    assert_every_row_as_written(&pool, &log, false).await;

    // Lanes of their own: a writer's inserted ids and notes follow its lane.
    let new: Vec<TaskWriter> = (2..4).map(|l| new_writer(&pool, l, log.clone())).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    evolution.contract().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    until_logged(&log, &["new2-", "new3-"]).await;
    ok += stop_all(
        new.into_iter()
            .map(|w| (w, "new build around contract"))
            .collect(),
    )
    .await;
    assert!(ok > 200, "only {ok} writes");
    assert_eq!(labels(&pool).await, ["Pending", NEW, "Delivered"]);
    assert_every_row_as_written(&pool, &log, true).await;

    let step = rename_step(&evolution).await;
    assert_eq!(step.phase, Phase::Contract);
    support::assert_journal(&step, &support::EXPAND_RETIRE_CONTRACT);
    support::assert_reboot_changes_nothing::<Order>(&pool, "orders").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_built_before_the_rename_and_run_after_it_runs_again_with_the_contracts_sql() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    let evolution = evolver(&pool).boot().await.unwrap();
    evolution.wait().await.unwrap();
    // The contract's commit, as another instance would make it: this process still has the
    // step at expand, so its SQL maps `Dispatched` to `Shipped`, which no longer exists.
    sqlx::query("ALTER TYPE order_status RENAME VALUE 'Shipped' TO 'Dispatched'")
        .execute(&pool)
        .await
        .unwrap();
    let order = Order {
        id: ROWS + 1,
        note: "after the rename".into(),
        status: Status::Dispatched,
        previous: Some(Status::Dispatched),
    };
    order.insert(&pool).await.unwrap();
    assert_eq!(Order::find(&order.id, &pool).await.unwrap(), Some(order));
    let mut one = Order::find(&1, &pool).await.unwrap().unwrap();
    assert_eq!(one.status, Status::Dispatched);
    one.previous = Some(Status::Dispatched);
    one.update(&pool).await.unwrap();
    let stored: (String, String) =
        sqlx::query_as("SELECT status::text, previous::text FROM orders WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, (NEW.to_string(), NEW.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_after_expand_changes_nothing_in_the_catalog_and_the_new_build_keeps_writing() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(8).await;
    seed(&pool).await;
    // Without the added label: the catalog is what the old build left.
    sqlx::query("ALTER TYPE order_status ADD VALUE 'Delivered'")
        .execute(&pool)
        .await
        .unwrap();
    let before = catalog_snapshot(&pool, "orders").await;
    let evolution = evolver(&pool).boot().await.unwrap();
    evolution.wait().await.unwrap();
    let step = rename_step(&evolution).await;
    evolution.abort(&step.id).await.unwrap();
    assert_eq!(rename_step(&evolution).await.phase, Phase::Aborted);
    assert_eq!(catalog_snapshot(&pool, "orders").await, before);
    assert_eq!(labels(&pool).await, ["Pending", OLD, "Delivered"]);

    // The new build still writes and reads its label, stored under the old name.
    let log: Log = Arc::default();
    let writers = vec![
        (old_writer(&pool, 0, log.clone()), "old build"),
        (new_writer(&pool, 1, log.clone()), "new build"),
    ];
    until_logged(&log, &["old0-", "new1-"]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop_all(writers).await;
    assert_every_row_as_written(&pool, &log, false).await;
    // A boot after the abort runs nothing: the declaration's step is final.
    evolver(&pool).boot().await.unwrap().wait().await.unwrap();
    assert_eq!(catalog_snapshot(&pool, "orders").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_at_retire_is_refused_and_changes_nothing() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(8).await;
    seed(&pool).await;
    // The old build's instance, alive: the contract waits for its acknowledgement.
    let old = Evolver::new(pool.clone())
        .model::<OrderV1>()
        .boot()
        .await
        .unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(Duration::from_secs(30), Duration::from_secs(1))
        .model::<Order>()
        .boot()
        .await
        .unwrap();
    let err = evolution
        .contract()
        .await
        .expect_err("the old build's instance never acknowledges");
    assert!(
        matches!(err.kind(), ErrorKind::NotReady { .. }),
        "expected NotReady, got {err}"
    );
    let step = rename_step(&evolution).await;
    assert_eq!(step.phase, Phase::Retire);
    let before = catalog_snapshot(&pool, "orders").await;
    let err = evolution
        .abort(&step.id)
        .await
        .expect_err("an abort at retire is refused");
    assert!(
        err.to_string().contains("has not started its contract"),
        "{err}"
    );
    assert_eq!(rename_step(&evolution).await.phase, Phase::Retire);
    assert_eq!(catalog_snapshot(&pool, "orders").await, before);
    assert_eq!(labels(&pool).await, ["Pending", OLD, "Delivered"]);
    drop(old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_labels_or_neither_are_drift_reported_before_any_ddl() {
    if child::in_child() {
        return;
    }
    for (fix, problem) in [
        (
            "ALTER TYPE order_status ADD VALUE 'Dispatched'",
            "has both 'Shipped' and 'Dispatched'",
        ),
        (
            "ALTER TYPE order_status RENAME VALUE 'Shipped' TO 'Gone'",
            "has neither 'Shipped' nor 'Dispatched'",
        ),
    ] {
        let (_db, pool) = database(5).await;
        seed(&pool).await;
        sqlx::query(sqlx::AssertSqlSafe(fix))
            .execute(&pool)
            .await
            .unwrap();
        let before = (catalog_snapshot(&pool, "orders").await, labels(&pool).await);
        let err = evolver(&pool)
            .boot()
            .await
            .expect_err("drift must stop the boot");
        let ErrorKind::Drift(problems) = err.kind() else {
            panic!("expected drift, got {err}")
        };
        let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(messages.iter().any(|m| m.contains(problem)), "{messages:?}");
        assert_eq!(
            (catalog_snapshot(&pool, "orders").await, labels(&pool).await),
            before
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_table_gets_the_new_label_and_the_rename_is_done() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(5).await;
    let evolution = evolver(&pool).boot().await.unwrap();
    evolution.wait().await.unwrap();
    assert_eq!(labels(&pool).await, ["Pending", NEW, "Delivered"]);
    assert_eq!(rename_step(&evolution).await.phase, Phase::Contract);
    let order = Order {
        id: 1,
        note: "n".into(),
        status: Status::Dispatched,
        previous: None,
    };
    order.insert(&pool).await.unwrap();
    assert_eq!(Order::find(&1, &pool).await.unwrap(), Some(order));
}

/// The child: boots the new build; `expand` reports and waits, `contract` pauses just before
/// the contract's transaction (`PGEVOLVE_PAUSE_AT=contract`). Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_rename_child_process() {
    let Some((scenario, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let evolution = evolver(&pool).boot().await.unwrap();
    match scenario.as_str() {
        "expand" => child::report("BOOTED"),
        "contract" => {
            let _ = evolution.contract().await;
        }
        other => panic!("unknown scenario {other}"),
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rename_killed_after_expand_or_before_its_contract_is_finished_by_the_next_boot() {
    if child::in_child() {
        return;
    }
    for scenario in ["expand", "contract"] {
        let (db, pool) = database(20).await;
        seed(&pool).await;
        let log: Log = Arc::default();
        let old = old_writer(&pool, 0, log.clone());
        let entry = "enum_rename_child_process";
        match scenario {
            "expand" => {
                let mut c = ChildProcess::start(entry, scenario, db.url(), None);
                c.expect("BOOTED");
                c.kill();
            }
            _ => {
                // The old build is gone before the contract: its writes end here.
                tokio::time::sleep(Duration::from_millis(300)).await;
                until_logged(&log, &["old0-"]).await;
                stop_all(vec![(old, "old build")]).await;
                ChildProcess::paused_at(entry, scenario, db.url(), "contract").kill();
                child::until_no_advisory_lock(&pool).await;
                assert_eq!(
                    support::recorded_phase(&pool, "rename_enum_value").await,
                    Some(Phase::Retire)
                );
                assert_eq!(labels(&pool).await, ["Pending", OLD, "Delivered"]);
                let evolution = evolver(&pool).boot().await.unwrap();
                let new = new_writer(&pool, 1, log.clone());
                tokio::time::sleep(Duration::from_millis(300)).await;
                evolution.contract().await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                until_logged(&log, &["new1-"]).await;
                stop_all(vec![(new, "new build")]).await;
                assert_eq!(labels(&pool).await, ["Pending", NEW, "Delivered"]);
                assert_every_row_as_written(&pool, &log, true).await;
                continue;
            }
        }
        child::until_no_advisory_lock(&pool).await;
        assert_eq!(labels(&pool).await, ["Pending", OLD, "Delivered"]);
        let evolution = evolver(&pool).boot().await.unwrap();
        let new = new_writer(&pool, 1, log.clone());
        evolution.wait().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        until_logged(&log, &["old0-", "new1-"]).await;
        stop_all(vec![(old, "old build"), (new, "new build")]).await;
        assert_every_row_as_written(&pool, &log, false).await;
        evolution.contract().await.unwrap();
        assert_eq!(labels(&pool).await, ["Pending", NEW, "Delivered"]);
        assert_every_row_as_written(&pool, &log, true).await;
    }
}

/// The filter README recommends while a label is being renamed: `{status}::text = $1` with the
/// new label as text finds the rows stored under the old label before contract, and the same
/// rows after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filter_on_the_label_as_text_finds_the_renamed_rows_before_and_after_contract() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(8).await;
    seed(&pool).await;
    let evolution = evolver(&pool).boot().await.unwrap();
    evolution.wait().await.unwrap();
    assert!(rename_step(&evolution).await.phase < Phase::Contract);
    // A row the new build writes under the new variant, stored under the old label.
    let written = Order {
        id: 9_000,
        note: "new build".into(),
        status: Status::Dispatched,
        previous: None,
    };
    written.insert(&pool).await.unwrap();
    let expected: Vec<i64> = (1..=ROWS).filter(|id| id % 2 == 1).chain([9_000]).collect();
    let dispatched = || async {
        Order::select()
            .filter("{status}::text = $1")
            .bind(NEW)
            .order_by("{id}")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    for moment in ["before contract", "after contract"] {
        if moment == "after contract" {
            evolution.contract().await.unwrap();
            assert_eq!(labels(&pool).await, ["Pending", NEW, "Delivered"]);
        }
        let found = dispatched().await;
        let ids: Vec<i64> = found.iter().map(|o| o.id).collect();
        assert_eq!(ids, expected, "{moment}");
        assert!(
            found.iter().all(|o| o.status == Status::Dispatched),
            "{moment}: {found:?}"
        );
    }
}
