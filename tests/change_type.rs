//! Column type changes (`type_from`) through every phase while an "old build" (raw SQL on the
//! old types) and the "new build" (the generated accessors, new types) write the same rows,
//! interleaved, values the trigger would not compute: every row ends with the last value
//! written, the old column keeps exactly what old writers wrote (no round trip through `down`),
//! and the index, CHECK and default of the old column are carried to the new one. Aborts at every
//! phase before contract leave the catalog as it was and keep every write.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgevolve::{BackfillOptions, DeployWindow, ErrorKind, Evolve, Evolver, Phase};
use sqlx::PgPool;
use support::{catalog_snapshot, database};
use tokio::sync::Mutex;

const ROWS: i64 = 3_000;
/// Rows the writers update (both builds, the same rows); the rest keep their backfilled values.
const HOT: i64 = 400;
/// Row locks of the test: a write and its record happen under the row's bucket lock, so the log
/// says which write came last, whichever build made it.
const BUCKETS: i64 = 32;

/// The new build: `qty` was `integer`, `code` was `text` holding digits (padded, or not).
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "items")]
pub struct Item {
    #[evolve(primary_key)]
    pub id: i64,
    pub name: String,
    #[evolve(type_from = "integer")]
    pub qty: i64,
    #[evolve(
        type_from = "text",
        using = "nullif(trim(code), '')::integer",
        down = "lpad(code::text, 4, '0')"
    )]
    pub code: Option<i32>,
}

async fn seed(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL,
                             qty integer NOT NULL DEFAULT 0 CHECK (qty >= 0), code text);
         CREATE INDEX items_qty_idx ON items (qty);
         INSERT INTO items SELECT g, 'Name ' || g, g, CASE WHEN g % 5 = 0 THEN NULL ELSE ' ' || g END
           FROM generate_series(1, {ROWS}) g;
         ANALYZE items;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// The last write of a row, as its writer made it.
#[derive(Debug, Clone, PartialEq)]
enum Last {
    /// Seeded, or written by the old build: the old columns as written.
    Old { qty: i32, code: Option<String> },
    /// Written by the new build's accessors.
    New { qty: i64, code: Option<i32> },
}

/// What `using` makes of an old code.
fn up(code: &Option<String>) -> Option<i32> {
    code.as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.parse().unwrap())
}

/// What `down` makes of a new code.
fn down(code: Option<i32>) -> Option<String> {
    code.map(|c| format!("{c:04}"))
}

impl Last {
    /// The row as the new build reads it.
    fn new_values(&self) -> (i64, Option<i32>) {
        match self {
            Last::Old { qty, code } => (i64::from(*qty), up(code)),
            Last::New { qty, code } => (*qty, *code),
        }
    }

    /// The old columns while they exist.
    fn old_values(&self) -> (i32, Option<String>) {
        match self {
            Last::Old { qty, code } => (*qty, code.clone()),
            Last::New { qty, code } => (i32::try_from(*qty).unwrap(), down(*code)),
        }
    }
}

#[derive(Default)]
struct Log {
    rows: std::sync::Mutex<HashMap<i64, (String, Last)>>,
    buckets: Vec<Mutex<()>>,
}

fn log() -> Arc<Log> {
    let rows = (1..=ROWS)
        .map(|g| {
            let code = (g % 5 != 0).then(|| format!(" {g}"));
            (
                g,
                (
                    format!("Name {g}"),
                    Last::Old {
                        qty: i32::try_from(g).unwrap(),
                        code,
                    },
                ),
            )
        })
        .collect();
    Arc::new(Log {
        rows: std::sync::Mutex::new(rows),
        buckets: (0..BUCKETS).map(|_| Mutex::new(())).collect(),
    })
}

struct Writer {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Writer {
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap()
    }
}

/// The row a writer's `n`-th write goes to: the hot rows, or a new one every fourth write.
fn target(lane: i64, n: i64) -> (i64, bool) {
    if n % 4 == 0 {
        (1_000_000 * (lane + 1) + n, true)
    } else {
        (1 + (n * 7 + lane * 13) % HOT, false)
    }
}

/// The old build: raw SQL on the old column types, codes written with a leading space (which
/// `down(using(..))` would turn into zeros: a round trip would show).
fn old_writer(pool: &PgPool, lane: i64, log: Arc<Log>) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let (id, insert) = target(lane, n);
            let name = format!("old{lane}-{n}");
            let qty = i32::try_from(10_000 * (lane + 1) + n).unwrap();
            let code = (n % 6 != 0).then(|| format!(" {}", n % 900));
            let _row = log.buckets[(id % BUCKETS) as usize].lock().await;
            let sql = if insert {
                "INSERT INTO items (id, name, qty, code) VALUES ($1, $2, $3, $4)"
            } else {
                "UPDATE items SET name = $2, qty = $3, code = $4 WHERE id = $1"
            };
            match sqlx::query(sql)
                .bind(id)
                .bind(&name)
                .bind(qty)
                .bind(&code)
                .execute(&pool)
                .await
            {
                Ok(_) => {
                    log.rows
                        .lock()
                        .unwrap()
                        .insert(id, (name, Last::Old { qty, code }));
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// The new build: the generated accessors (find, then update; or insert), new types.
fn new_writer(pool: &PgPool, lane: i64, log: Arc<Log>) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let (id, insert) = target(lane, n);
            let item = Item {
                id,
                name: format!("new{lane}-{n}"),
                qty: 20_000 * (lane + 1) + n,
                code: (n % 5 != 0).then_some(i32::try_from(n % 800).unwrap()),
            };
            let _row = log.buckets[(id % BUCKETS) as usize].lock().await;
            let result = if insert {
                item.insert(&pool).await
            } else {
                match Item::find(&id, &pool).await {
                    Ok(Some(found)) => {
                        let expected = log.rows.lock().unwrap().get(&id).cloned();
                        let (qty, code) = expected.as_ref().map(|e| e.1.new_values()).unwrap();
                        if (found.qty, found.code) != (qty, code) {
                            errors.push(format!("row {id} read {found:?}, expected {expected:?}"));
                        }
                        item.update(&pool).await.map(|_| ())
                    }
                    Ok(None) => Err(ErrorKind::UnknownStep {
                        step: format!("row {id} missing"),
                    }
                    .into()),
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(()) => {
                    log.rows.lock().unwrap().insert(
                        id,
                        (
                            item.name,
                            Last::New {
                                qty: item.qty,
                                code: item.code,
                            },
                        ),
                    );
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// How the new build reads `qty` now in the pool's database (the tests of this file run side
/// by side, each on its own database).
fn read_qty(pool: &PgPool) -> String {
    let registry = pgevolve::registry_for(pool);
    pgevolve::ModelSql::build(Item::model(), |id| registry.get(id)).reads[2].clone()
}

fn shadow(column: &str) -> String {
    let item = Item::model();
    let step = Item::plan()
        .steps
        .into_iter()
        .find(|s| s.describe().contains(&format!(".{column} from")))
        .unwrap();
    let expand = step.statements(Phase::Expand);
    let _ = item;
    let add = &expand[0].sql;
    add.split('"').nth(5).unwrap().to_string()
}

/// Every row, both columns of each change, against the log (while the old columns exist).
async fn assert_both_columns_match(pool: &PgPool, log: &Log) {
    let (new_qty, new_code) = (shadow("qty"), shadow("code"));
    let rows: Vec<(i64, String, i32, Option<String>, Option<i64>, Option<i32>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, name, qty, code, \"{new_qty}\", \"{new_code}\" FROM items"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
    let expected = log.rows.lock().unwrap().clone();
    assert_eq!(rows.len(), expected.len(), "row count");
    for (id, name, qty, code, shadow_qty, shadow_code) in rows {
        let (want_name, last) = expected.get(&id).unwrap_or_else(|| panic!("row {id}"));
        assert_eq!(&name, want_name, "name of row {id}");
        assert_eq!((qty, code), last.old_values(), "old columns of row {id}");
        let (want_qty, want_code) = last.new_values();
        assert_eq!(
            (shadow_qty, shadow_code),
            (Some(want_qty), want_code),
            "new columns of row {id}"
        );
    }
}

/// Every row after contract: one column of each name, of the new type.
async fn assert_new_columns_match(pool: &PgPool, log: &Log) {
    let rows: Vec<(i64, String, i64, Option<i32>)> =
        sqlx::query_as("SELECT id, name, qty, code FROM items")
            .fetch_all(pool)
            .await
            .unwrap();
    let expected = log.rows.lock().unwrap().clone();
    assert_eq!(rows.len(), expected.len(), "row count");
    for (id, name, qty, code) in rows {
        let (want_name, last) = expected.get(&id).unwrap_or_else(|| panic!("row {id}"));
        assert_eq!(&name, want_name, "name of row {id}");
        assert_eq!((qty, code), last.new_values(), "row {id}");
    }
}

fn finished(results: Vec<(u64, Vec<String>)>) -> u64 {
    let mut ok = 0;
    let mut failures = Vec::new();
    for (n, errors) in results {
        ok += n;
        failures.extend(errors);
    }
    assert!(
        failures.is_empty(),
        "{} failed statements, first: {:?}",
        failures.len(),
        failures.first()
    );
    ok
}

async fn stop(writers: Vec<Writer>) -> u64 {
    let mut results = Vec::new();
    for w in writers {
        results.push(w.finish().await);
    }
    finished(results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn type_change_with_old_and_new_writers_on_the_same_rows_keeps_every_value() {
    let (_db, pool) = database(20).await;
    seed(&pool).await;
    let log = log();
    let old: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&pool, lane, log.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Item>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 300,
            max_batch_size: 1_000,
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    // Expand is done: the new build starts next to the old one, on the same rows.
    let new: Vec<Writer> = (2..4)
        .map(|lane| new_writer(&pool, lane, log.clone()))
        .collect();
    evolution.wait().await.unwrap();
    assert!(read_qty(&pool).contains("COALESCE"));
    evolution.switch().await.unwrap();
    assert_eq!(read_qty(&pool), format!("\"{}\"", shadow("qty")));
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Contract starts: the old build is gone by now (that is what contract is gated on). The
    // new build pauses across it (see README: a statement racing the contract's commit).
    let mut ok = stop(old).await;
    ok += stop(new).await;
    assert_both_columns_match(&pool, &log).await;
    evolution.contract().await.unwrap();
    let new: Vec<Writer> = (4..6)
        .map(|lane| new_writer(&pool, lane, log.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok += stop(new).await;
    assert!(ok > 300, "only {ok} writes");
    assert_new_columns_match(&pool, &log).await;

    let status = evolution.status().await.unwrap();
    for column in ["qty", "code"] {
        let step = status
            .iter()
            .find(|s| s.description.contains(&format!(".{column} from")))
            .unwrap();
        assert_eq!(step.phase, Phase::Contract);
        let events: Vec<&str> = step.history.iter().map(|e| e.event.as_str()).collect();
        assert!(events.contains(&"contract done"), "{events:?}");
    }
    // The old column's index, CHECK and default now belong to the new one, under their names.
    let catalog = catalog_snapshot(&pool, "items").await;
    let expected = [
        "column code integer notnull=false default=",
        "column id bigint notnull=true default=",
        "column name text notnull=true default=",
        "column qty bigint notnull=true default=0",
        "constraint items_pkey PRIMARY KEY (id) validated=true",
        "constraint items_qty_check CHECK ((qty >= 0)) validated=true",
        "index CREATE INDEX items_qty_idx ON public.items USING btree (qty) valid=true",
        "index CREATE UNIQUE INDEX items_pkey ON public.items USING btree (id) valid=true",
    ];
    assert_eq!(catalog, expected);
    support::assert_reboot_changes_nothing::<Item>(&pool, "items").await;
}

async fn change_step(evolution: &pgevolve::Evolution, column: &str) -> pgevolve::StepStatus {
    evolution
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.description.contains(&format!(".{column} from")))
        .expect("the type change step is recorded")
}

/// Where an abort lands.
#[derive(Debug, Clone, Copy)]
enum AbortAt {
    AfterExpand,
    MidBackfill,
    AfterValidate,
    AfterSwitch,
}

/// Abort at expand, mid-backfill, after validate and after switch while both builds write: the
/// catalog is what it was before boot, and every value written meanwhile (by either build) is
/// in the old columns, as written or as `down` gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_at_every_phase_before_contract_restores_the_catalog_and_keeps_every_write() {
    for at in [
        AbortAt::AfterExpand,
        AbortAt::MidBackfill,
        AbortAt::AfterValidate,
        AbortAt::AfterSwitch,
    ] {
        let (_db, pool) = database(10).await;
        seed(&pool).await;
        let before = catalog_snapshot(&pool, "items").await;
        let log = log();
        let slow = matches!(at, AbortAt::AfterExpand | AbortAt::MidBackfill);
        let evolution = Evolver::new(pool.clone())
            .model::<Item>()
            .backfill_options(BackfillOptions {
                initial_batch_size: if slow { 100 } else { 1_000 },
                max_batch_size: if slow { 100 } else { 5_000 },
                pause: Duration::from_millis(if slow { 20 } else { 0 }),
                ..BackfillOptions::default()
            })
            .boot()
            .await
            .unwrap();
        let old = old_writer(&pool, 0, log.clone());
        let new = new_writer(&pool, 2, log.clone());
        let qty = change_step(&evolution, "qty").await.id;
        match at {
            AbortAt::AfterExpand => {}
            AbortAt::MidBackfill => loop {
                let p = evolution
                    .progress()
                    .into_iter()
                    .find(|p| p.step == qty)
                    .unwrap();
                if p.rows_done > 300 {
                    assert!(p.phase < Phase::Backfill, "still backfilling");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            },
            AbortAt::AfterValidate => evolution.wait().await.unwrap(),
            AbortAt::AfterSwitch => evolution.switch().await.unwrap(),
        }
        let expected = match at {
            AbortAt::AfterExpand | AbortAt::MidBackfill => Phase::Expand,
            AbortAt::AfterValidate => Phase::Validate,
            AbortAt::AfterSwitch => Phase::Switch,
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        for column in ["qty", "code"] {
            let step = change_step(&evolution, column).await;
            assert_eq!(step.phase, expected, "{at:?}: {column}");
            evolution.abort(&step.id).await.unwrap();
            assert_eq!(change_step(&evolution, column).await.phase, Phase::Aborted);
        }
        assert_eq!(read_qty(&pool), "CAST(\"qty\" AS bigint)");
        // The new build goes on, on the old columns.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ok = finished(vec![old.finish().await, new.finish().await]);
        assert!(ok > 20, "{at:?}: only {ok} writes");
        assert_eq!(
            catalog_snapshot(&pool, "items").await,
            before,
            "{at:?}: catalog not restored"
        );
        let rows: Vec<(i64, String, i32, Option<String>)> =
            sqlx::query_as("SELECT id, name, qty, code FROM items")
                .fetch_all(&pool)
                .await
                .unwrap();
        let expected = log.rows.lock().unwrap().clone();
        assert_eq!(rows.len(), expected.len(), "{at:?}: row count");
        for (id, name, qty, code) in rows {
            let (want_name, last) = &expected[&id];
            assert_eq!(
                (&name, (qty, code)),
                (want_name, last.old_values()),
                "{at:?}: row {id}"
            );
        }
    }
}
