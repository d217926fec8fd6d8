//! Enum types (`#[derive(EvolveEnum)]`): the type created with a new table, or before a new
//! column; labels a newer build declares added at boot with `ALTER TYPE ... ADD VALUE`, while
//! the old build (which knows fewer labels) and the new build write the same rows; every row
//! compared at the end. `ADD VALUE` does not wait for a transaction holding the table. A boot
//! SIGKILLed between two added labels is finished by the next boot. Drift: labels the enum does
//! not know (unless a newer build added them: the old build boots again during a rollback), and
//! a label a previous boot added that is gone, both reported before any DDL.

use pgevolve_test_support as support;
#[macro_use]
#[path = "support/sqlx_enum.rs"]
mod sqlx_enum;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgevolve::{DdlOptions, ErrorKind, Evolver, Phase};
use sqlx::{Connection, PgPool};
use support::child::{self, ChildProcess};
use support::{catalog_snapshot, database};

use pgevolve::{Evolve, EvolveEnum};

/// The old build's enum.
#[derive(EvolveEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[evolve(type_name = "order_status")]
pub enum StatusV1 {
    Pending,
    Shipped,
}
sqlx_enum!(StatusV1, "order_status", { Pending => "Pending", Shipped => "Shipped" });

/// The new build's enum: `InTransit` between the old two, `Delivered` at the end.
#[derive(EvolveEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[evolve(type_name = "order_status")]
pub enum Status {
    Pending,
    InTransit,
    Shipped,
    Delivered,
}
sqlx_enum!(Status, "order_status", {
    Pending => "Pending", InTransit => "InTransit", Shipped => "Shipped", Delivered => "Delivered",
});

/// The old build's table.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "orders")]
pub struct OrderV1 {
    #[evolve(primary_key)]
    pub id: i64,
    pub note: String,
    pub status: StatusV1,
}

/// The new build's table: the same columns, the enum with two more labels.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "orders")]
pub struct Order {
    #[evolve(primary_key)]
    pub id: i64,
    pub note: String,
    pub status: Status,
}

/// The new build adding a nullable column of a type that does not exist yet.
#[derive(EvolveEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[evolve(type_name = "order_priority", schema = "public")]
pub enum Priority {
    Low,
    High,
}
sqlx_enum!(Priority, "order_priority", { Low => "Low", High => "High" });

#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "orders")]
pub struct OrderWithPriority {
    #[evolve(primary_key)]
    pub id: i64,
    pub note: String,
    pub status: Status,
    pub priority: Option<Priority>,
}

use support::enum_labels as labels;

const ROWS: i64 = 400;

/// The old build's table, seeded: `Pending` for even ids, `Shipped` for odd ones.
async fn seed_old_build(pool: &PgPool) {
    Evolver::new(pool.clone())
        .model::<OrderV1>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO orders (id, note, status) \
         SELECT g, 'seed-' || g, (CASE WHEN g % 2 = 0 THEN 'Pending' ELSE 'Shipped' END)::order_status \
         FROM generate_series(1, {ROWS}) g"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// Every write that succeeded: its note (unique) → the id and label it wrote. The row's note
/// says which write it holds last, so the comparison needs no ordering between writers.
type Log = Arc<Mutex<HashMap<String, (i64, String)>>>;

use support::TaskWriter as Writer;

/// The old build: sqlx encoding `StatusV1` (its two labels), updating any row and inserting
/// rows of its own.
fn old_writer(pool: &PgPool, lane: i64, log: Log) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let note = format!("old{lane}-{n}");
            let status = StatusV1::ALL[(n as usize) % 2];
            let (id, result) = if n % 5 == 0 {
                let id = 1_000_000 * (lane + 1) + n;
                let r = sqlx::query("INSERT INTO orders (id, note, status) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(&note)
                    .bind(status)
                    .execute(&pool)
                    .await;
                (id, r)
            } else {
                let id = 1 + (n * 7 + lane) % ROWS;
                let r = sqlx::query("UPDATE orders SET note = $2, status = $3 WHERE id = $1")
                    .bind(id)
                    .bind(&note)
                    .bind(status)
                    .execute(&pool)
                    .await;
                (id, r)
            };
            match result {
                Ok(_) => {
                    log.lock()
                        .unwrap()
                        .insert(note, (id, status.label().to_string()));
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// The new build: the generated accessors, reading rows (some written by the old build) and
/// writing every label of `Status` back, on the same ids as the old build, and inserting.
fn new_writer(pool: &PgPool, lane: i64, log: Log) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let note = format!("new{lane}-{n}");
            let status = Status::ALL[(n as usize) % 4];
            let result = if n % 5 == 0 {
                let order = Order {
                    id: 10_000_000 * (lane + 1) + n,
                    note: note.clone(),
                    status,
                };
                order.insert(&pool).await.map(|_| order.id)
            } else {
                let id = 1 + (n * 7 + lane) % ROWS;
                match Order::find(&id, &pool).await {
                    Ok(Some(mut order)) => {
                        order.note = note.clone();
                        order.status = status;
                        order.update(&pool).await.map(|_| id)
                    }
                    Ok(None) => Ok(0),
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(0) => {}
                Ok(id) => {
                    log.lock()
                        .unwrap()
                        .insert(note, (id, status.label().to_string()));
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// Every row holds what the write named by its note wrote (or its seed), and every inserted
/// row is there.
async fn assert_every_row_as_written(pool: &PgPool, log: &Log) {
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, note, status::text FROM orders ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    let log = log.lock().unwrap();
    let by_id: HashMap<i64, (String, String)> = rows
        .iter()
        .map(|(id, note, status)| (*id, (note.clone(), status.clone())))
        .collect();
    for (id, note, status) in &rows {
        if let Some(seed) = note.strip_prefix("seed-") {
            assert_eq!(seed, id.to_string(), "row {id} holds another row's seed");
            let expected = if id % 2 == 0 { "Pending" } else { "Shipped" };
            assert_eq!(status, expected, "row {id} changed without a write");
            continue;
        }
        let Some((logged_id, logged_status)) = log.get(note) else {
            panic!("row {id} holds note {note:?}, which no successful write wrote");
        };
        assert_eq!(logged_id, id, "note {note:?} is on the wrong row");
        assert_eq!(
            logged_status, status,
            "row {id} (write {note}) holds another label"
        );
    }
    for (note, (id, _)) in log.iter() {
        if *id > ROWS {
            assert!(
                by_id.contains_key(id),
                "inserted row {id} ({note}) is missing"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_table_gets_its_enum_type_with_every_label_in_variant_order() {
    let (_db, pool) = database(8).await;
    Evolver::new(pool.clone())
        .model::<Order>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        labels(&pool, "order_status").await,
        ["Pending", "InTransit", "Shipped", "Delivered"]
    );
    for (i, status) in Status::ALL.iter().enumerate() {
        let order = Order {
            id: i as i64,
            note: format!("n{i}"),
            status: *status,
        };
        order.insert(&pool).await.unwrap();
        assert_eq!(Order::find(&order.id, &pool).await.unwrap(), Some(order));
    }
    support::assert_reboot_changes_nothing::<Order>(&pool, "orders").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_are_added_at_boot_while_old_and_new_builds_write_the_same_rows() {
    let (db, pool) = database(20).await;
    seed_old_build(&pool).await;
    let log: Log = Arc::default();
    let old: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&pool, lane, log.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A transaction that has written a row of the table and stays open past lock_timeout: DDL
    // on the table would wait for it; `ADD VALUE` locks the type only and does not.
    let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql("BEGIN; UPDATE orders SET note = note WHERE id = 1;")
        .execute(&mut holder)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let evolution = Evolver::new(pool.clone())
        .ddl_options(DdlOptions {
            lock_timeout: Duration::from_millis(200),
            deadline: Duration::from_secs(20),
            ..DdlOptions::default()
        })
        .model::<Order>()
        .boot()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the boot waited {:?} for a transaction holding the table",
        started.elapsed()
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(
        labels(&pool, "order_status").await,
        ["Pending", "InTransit", "Shipped", "Delivered"]
    );

    // Expand is done: the new build starts next to the old one, on the same rows.
    let new: Vec<Writer> = (0..2)
        .map(|lane| new_writer(&pool, lane, log.clone()))
        .collect();
    evolution.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut ok = 0;
    for w in old {
        ok += w.assert_no_failures("old build").await;
    }
    for w in new {
        ok += w.assert_no_failures("new build").await;
    }
    assert!(ok > 200, "only {ok} writes");
    let new_labels: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE status IN ('InTransit', 'Delivered')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(new_labels > 0, "the new build wrote no new label");
    assert_every_row_as_written(&pool, &log).await;
    for status in evolution.status().await.unwrap() {
        assert_eq!(status.phase, Phase::Expand, "{status:?}");
    }
    support::assert_reboot_changes_nothing::<Order>(&pool, "orders").await;
}

/// The child: boots the new build, paused after the first expand step it runs at boot
/// (`PGEVOLVE_PAUSE_AT=boot-expand-step`): the first label added, the second not yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_child_process() {
    let Some((_scenario, url)) = child::child_spec() else {
        return;
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    Evolver::new(pool).model::<Order>().boot().await.unwrap();
    child::report("BOOTED");
    loop {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_boot_killed_between_two_added_labels_is_finished_by_the_next_boot() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(20).await;
    seed_old_build(&pool).await;
    let log: Log = Arc::default();
    let old: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&pool, lane, log.clone()))
        .collect();

    let child = ChildProcess::paused_at("boot_child_process", "boot", db.url(), "boot-expand-step");
    // `InTransit` is added and recorded in one transaction; `Delivered` is not.
    assert_eq!(
        labels(&pool, "order_status").await,
        ["Pending", "InTransit", "Shipped"]
    );
    let recorded: Vec<(String, String)> = sqlx::query_as(
        "SELECT description, phase FROM pgevolve.steps WHERE kind = 'add_enum_value' ORDER BY description",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        recorded
            .iter()
            .any(|(d, p)| d.contains("'InTransit'") && p == "expand"),
        "{recorded:?}"
    );
    assert!(
        !recorded
            .iter()
            .any(|(d, p)| d.contains("'Delivered'") && p == "expand"),
        "{recorded:?}"
    );
    child.kill();
    child::until_no_advisory_lock(&pool).await;

    let evolution = Evolver::new(pool.clone())
        .model::<Order>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert_eq!(
        labels(&pool, "order_status").await,
        ["Pending", "InTransit", "Shipped", "Delivered"]
    );
    let new: Vec<Writer> = (0..2)
        .map(|lane| new_writer(&pool, lane, log.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    for w in old {
        w.assert_no_failures("old build").await;
    }
    for w in new {
        w.assert_no_failures("new build").await;
    }
    assert_every_row_as_written(&pool, &log).await;
    for status in evolution.status().await.unwrap() {
        assert_eq!(status.phase, Phase::Expand, "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn labels_the_enum_does_not_know_are_drift_reported_before_any_ddl() {
    let (_db, pool) = database(8).await;
    sqlx::raw_sql(
        "CREATE TYPE order_status AS ENUM ('Pending', 'Shipped', 'Returned');
         CREATE TABLE orders (id bigint PRIMARY KEY, note text NOT NULL, status order_status NOT NULL);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = catalog_snapshot(&pool, "orders").await;
    let err = Evolver::new(pool.clone())
        .model::<Order>()
        .boot()
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Drift(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("label 'Returned'"), "{text}");
    assert!(text.contains("type_from"), "the fix is named: {text}");
    assert_eq!(
        labels(&pool, "order_status").await,
        ["Pending", "Shipped", "Returned"]
    );
    assert_eq!(catalog_snapshot(&pool, "orders").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_old_build_boots_again_after_the_new_build_added_labels() {
    let (_db, pool) = database(8).await;
    seed_old_build(&pool).await;
    Evolver::new(pool.clone())
        .model::<Order>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    // A rollback: the old build, which knows two labels, boots again. Not drift.
    Evolver::new(pool.clone())
        .model::<OrderV1>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let row = OrderV1 {
        id: 9_999,
        note: "after rollback".into(),
        status: StatusV1::Shipped,
    };
    row.insert(&pool).await.unwrap();
    assert_eq!(OrderV1::find(&9_999, &pool).await.unwrap(), Some(row));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_label_a_previous_boot_added_that_is_gone_is_drift_with_the_fix() {
    let (_db, pool) = database(8).await;
    seed_old_build(&pool).await;
    Evolver::new(pool.clone())
        .model::<Order>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    // PostgreSQL has no `DROP VALUE`; a superuser deleting the catalog row stands for a label
    // lost by hand (the type dropped and recreated with fewer labels).
    sqlx::raw_sql(
        "DELETE FROM pg_enum WHERE enumtypid = 'order_status'::regtype AND enumlabel = 'Delivered'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = Evolver::new(pool.clone())
        .model::<Order>()
        .boot()
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Drift(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("lacks label 'Delivered'")
            && text.contains("ADD VALUE 'Delivered' AFTER 'Shipped'"),
        "{text}"
    );
    assert_eq!(
        labels(&pool, "order_status").await,
        ["Pending", "InTransit", "Shipped"],
        "nothing was added back before the drift was reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nullable_column_of_a_new_enum_type_gets_its_type_first() {
    let (_db, pool) = database(8).await;
    seed_old_build(&pool).await;
    Evolver::new(pool.clone())
        .model::<OrderWithPriority>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(labels(&pool, "order_priority").await, ["Low", "High"]);
    let row = OrderWithPriority {
        id: 9_999,
        note: "urgent".into(),
        status: Status::Delivered,
        priority: Some(Priority::High),
    };
    row.insert(&pool).await.unwrap();
    assert_eq!(
        OrderWithPriority::find(&9_999, &pool).await.unwrap(),
        Some(row)
    );
    let old = OrderWithPriority::find(&2, &pool).await.unwrap().unwrap();
    assert_eq!((old.status, old.priority), (Status::Pending, None));
}

/// The plan's `ADD VALUE`, run as the step runs it (in a transaction), holds a lock on the type
/// object and none on the table; the transaction is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_value_locks_the_type_and_not_the_table() {
    let (db, pool) = database(4).await;
    seed_old_build(&pool).await;
    let plan = Order::plan();
    let add = plan
        .steps
        .iter()
        .find(|s| s.kind.name() == "add_enum_value" && s.describe().contains("'Delivered'"))
        .unwrap();
    let sql = add.phases[0].statements[0].sql.clone();
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await
        .unwrap();
    let locks: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT locktype, coalesce(classid::regclass::text, relation::regclass::text, ''), mode \
           FROM pg_locks WHERE pid = pg_backend_pid() AND locktype IN ('relation', 'object') \
          ORDER BY 1, 2",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        locks
            .iter()
            .any(|(t, c, m)| t == "object" && c == "pg_type" && m == "ExclusiveLock"),
        "{locks:?}"
    );
    assert!(
        !locks
            .iter()
            .any(|(t, c, _)| t == "relation" && c == "orders"),
        "{locks:?}"
    );
}

/// An enum in a schema of its own: the schema and the type created before the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enum_in_a_schema_of_its_own_is_created_with_its_schema() {
    let (_db, pool) = database(4).await;
    Evolver::new(pool.clone())
        .model::<Parcel>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        labels(&pool, "logistics.parcel_size").await,
        ["Small", "Large"]
    );
    let row = Parcel {
        id: 1,
        size: ParcelSize::Large,
    };
    row.insert(&pool).await.unwrap();
    assert_eq!(Parcel::find(&1, &pool).await.unwrap(), Some(row));
}

#[derive(EvolveEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[evolve(type_name = "parcel_size", schema = "logistics")]
pub enum ParcelSize {
    Small,
    Large,
}
sqlx_enum!(ParcelSize, "logistics.parcel_size", { Small => "Small", Large => "Large" });

#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "parcels")]
pub struct Parcel {
    #[evolve(primary_key)]
    pub id: i64,
    pub size: ParcelSize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborting_an_added_label_is_refused_saying_the_step_has_no_contract() {
    let (_db, pool) = database(8).await;
    seed_old_build(&pool).await;
    let evolution = Evolver::new(pool.clone())
        .model::<Order>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let plan = Order::plan();
    let label = plan
        .steps
        .iter()
        .find(|s| s.kind.name() == "add_enum_value")
        .expect("the plan adds a label");
    let err = evolution.abort(&label.id).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::NotReady { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`add_enum_value` step has no contract"),
        "the error says why, not that a contract started: {text}"
    );
    assert!(!text.contains("not started its contract"), "{text}");
    assert_eq!(
        labels(&pool, "order_status").await,
        ["Pending", "InTransit", "Shipped", "Delivered"],
        "nothing was undone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn labels_in_another_order_than_the_variants_are_drift_naming_the_fix() {
    let (_db, pool) = database(5).await;
    // The build's labels, `Shipped` before `Pending`.
    sqlx::raw_sql(
        "CREATE TYPE order_status AS ENUM ('Shipped', 'Pending', 'InTransit', 'Delivered');
         CREATE TABLE orders (id bigint PRIMARY KEY, note text NOT NULL, status order_status NOT NULL);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = catalog_snapshot(&pool, "orders").await;
    let err = Evolver::new(pool.clone())
        .model::<Order>()
        .boot()
        .await
        .expect_err("the order differs");
    let ErrorKind::Drift(problems) = err.kind() else {
        panic!("expected drift, got {err}")
    };
    let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    for part in [
        "orders its labels 'Shipped', 'Pending', 'InTransit', 'Delivered'",
        "declares them 'Pending', 'InTransit', 'Shipped', 'Delivered'",
        "declare the variants in the type's order",
        "type_from = \"order_status\"",
    ] {
        assert!(messages[0].contains(part), "{part} in {messages:?}");
    }
    assert_eq!(catalog_snapshot(&pool, "orders").await, before);
}
