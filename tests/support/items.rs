//! The `items` table of the type change tests: `qty` changes from `integer` to `bigint` (plain
//! casts) and `code` from `text` to `integer` (`using` and `down`), with writers that play the
//! old build (raw SQL on the old types) and the new one (the generated accessors) on the same
//! rows, and a log of the last value each row was given.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pgevolve::{ErrorKind, Evolve, Phase};
use sqlx::PgPool;
use tokio::sync::Mutex;

pub const ROWS: i64 = 3_000;
/// Rows the writers update (both builds, the same rows); the rest keep their backfilled values.
pub const HOT: i64 = 400;
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

pub async fn seed(pool: &PgPool) {
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
pub enum Last {
    /// Seeded, or written by the old build: the old columns as written.
    Old { qty: i32, code: Option<String> },
    /// Written by the new build's accessors.
    New { qty: i64, code: Option<i32> },
}

/// What `using` makes of an old code.
pub fn up(code: &Option<String>) -> Option<i32> {
    code.as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.parse().unwrap())
}

/// What `down` makes of a new code.
pub fn down(code: Option<i32>) -> Option<String> {
    code.map(|c| format!("{c:04}"))
}

impl Last {
    /// The row as the new build reads it.
    pub fn new_values(&self) -> (i64, Option<i32>) {
        match self {
            Last::Old { qty, code } => (i64::from(*qty), up(code)),
            Last::New { qty, code } => (*qty, *code),
        }
    }

    /// The old columns while they exist.
    pub fn old_values(&self) -> (i32, Option<String>) {
        match self {
            Last::Old { qty, code } => (*qty, code.clone()),
            Last::New { qty, code } => (i32::try_from(*qty).unwrap(), down(*code)),
        }
    }
}

#[derive(Default)]
pub struct Log {
    pub rows: std::sync::Mutex<HashMap<i64, (String, Last)>>,
    buckets: Vec<Mutex<()>>,
}

pub fn log() -> Arc<Log> {
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

pub use super::TaskWriter as Writer;

/// The row a writer's `n`-th write goes to: the hot rows, or a new one every fourth write.
pub fn target(lane: i64, n: i64) -> (i64, bool) {
    if n % 4 == 0 {
        (1_000_000 * (lane + 1) + n, true)
    } else {
        (1 + (n * 7 + lane * 13) % HOT, false)
    }
}

/// The old build: raw SQL on the old column types, codes written with a leading space (which
/// `down(using(..))` would turn into zeros: a round trip would show).
pub fn old_writer(pool: &PgPool, lane: i64, log: Arc<Log>) -> Writer {
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
pub fn new_writer(pool: &PgPool, lane: i64, log: Arc<Log>) -> Writer {
    writer_of_the_new_build(pool, lane, log, None)
}

/// The new build as [`new_writer`], each write (the find and the update, or the insert) in a
/// transaction of its own, through the evolution's handle.
pub fn new_writer_in_transactions(
    pool: &PgPool,
    lane: i64,
    log: Arc<Log>,
    evolution: &pgevolve::Evolution,
) -> Writer {
    writer_of_the_new_build(pool, lane, log, Some(evolution.clone()))
}

/// One write of the new build: on the pool, or in a transaction when `evolution` is given.
async fn write_new(
    pool: &PgPool,
    evolution: Option<&pgevolve::Evolution>,
    item: &Item,
    insert: bool,
    expected: Option<(String, Last)>,
    errors: &mut Vec<String>,
) -> Result<(), pgevolve::Error> {
    let id = item.id;
    let check = |found: Option<Item>, errors: &mut Vec<String>| -> Result<(), pgevolve::Error> {
        let Some(found) = found else {
            return Err(ErrorKind::UnknownStep {
                step: format!("row {id} missing"),
            }
            .into());
        };
        let (qty, code) = expected.as_ref().map(|e| e.1.new_values()).unwrap();
        if (found.qty, found.code) != (qty, code) {
            errors.push(format!("row {id} read {found:?}, expected {expected:?}"));
        }
        Ok(())
    };
    match evolution {
        None if insert => item.insert(pool).await,
        None => {
            check(Item::find(&id, pool).await?, errors)?;
            item.update(pool).await.map(|_| ())
        }
        Some(evolution) => {
            let mut tx = pool.begin().await?;
            if insert {
                item.insert(evolution.on(&mut *tx)).await?;
            } else {
                check(Item::find(&id, evolution.on(&mut *tx)).await?, errors)?;
                item.update(evolution.on(&mut *tx)).await?;
            }
            tx.commit().await?;
            Ok(())
        }
    }
}

fn writer_of_the_new_build(
    pool: &PgPool,
    lane: i64,
    log: Arc<Log>,
    evolution: Option<pgevolve::Evolution>,
) -> Writer {
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
            let expected = log.rows.lock().unwrap().get(&id).cloned();
            let result = write_new(
                &pool,
                evolution.as_ref(),
                &item,
                insert,
                expected,
                &mut errors,
            )
            .await;
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
pub fn read_qty(pool: &PgPool) -> String {
    let registry = pgevolve::__private::registry_for(pool);
    pgevolve::__private::ModelSql::build(Item::model(), |id| registry.get(id)).reads[2].clone()
}

/// The new column of the type change of `column`, as the plan names it.
pub fn shadow(column: &str) -> String {
    let step = Item::plan()
        .steps
        .into_iter()
        .find(|s| s.describe().contains(&format!(".{column} from")))
        .unwrap();
    // `ALTER TABLE "public"."items" ADD COLUMN IF NOT EXISTS "<new column>" <type>`
    let add = &step.statements(Phase::Expand)[0].sql;
    add.split('"').nth(5).unwrap().to_string()
}

/// Every row, both columns of each change, against the log (while the old columns exist).
pub async fn assert_both_columns_match(pool: &PgPool, log: &Log) {
    let (new_qty, new_code) = (shadow("qty"), shadow("code"));
    type Row = (i64, String, i32, Option<String>, Option<i64>, Option<i32>);
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
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

/// Every row after an abort: the old columns only, each as its last writer left it (the new
/// build's values through `down`).
pub async fn assert_old_columns_match(pool: &PgPool, log: &Log, when: &str) {
    let rows: Vec<(i64, String, i32, Option<String>)> =
        sqlx::query_as("SELECT id, name, qty, code FROM items")
            .fetch_all(pool)
            .await
            .unwrap();
    let expected = log.rows.lock().unwrap().clone();
    assert_eq!(rows.len(), expected.len(), "{when}: row count");
    for (id, name, qty, code) in rows {
        let (want_name, last) = &expected[&id];
        assert_eq!(
            (&name, (qty, code)),
            (want_name, last.old_values()),
            "{when}: row {id}"
        );
    }
}

/// Every row after contract: one column of each name, of the new type.
pub async fn assert_new_columns_match(pool: &PgPool, log: &Log) {
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

pub fn finished(results: Vec<(u64, Vec<String>)>) -> u64 {
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

pub async fn stop(writers: Vec<Writer>) -> u64 {
    let mut results = Vec::new();
    for w in writers {
        results.push(w.finish().await);
    }
    finished(results)
}

pub async fn change_step(evolution: &pgevolve::Evolution, column: &str) -> pgevolve::StepStatus {
    evolution
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.description.contains(&format!(".{column} from")))
        .expect("the type change step is recorded")
}

/// The catalog of `items` after both changes: one column of each name, of the new type, with
/// the old column's index, CHECK and default under their names; from PostgreSQL 18 also the NOT
/// NULL constraints, under the names PostgreSQL gives a column's own.
pub async fn assert_contracted(pool: &PgPool, when: &str) {
    let catalog = super::catalog_snapshot(pool, "items").await;
    let (not_null, rest): (Vec<String>, Vec<String>) = catalog
        .into_iter()
        .partition(|line| line.contains(" NOT NULL "));
    assert_eq!(
        rest,
        [
            "column code integer notnull=false default=",
            "column id bigint notnull=true default=",
            "column name text notnull=true default=",
            "column qty bigint notnull=true default=0",
            "constraint items_pkey PRIMARY KEY (id) validated=true",
            "constraint items_qty_check CHECK ((qty >= 0)) validated=true",
            "index CREATE INDEX items_qty_idx ON public.items USING btree (qty) valid=true",
            "index CREATE UNIQUE INDEX items_pkey ON public.items USING btree (id) valid=true",
        ],
        "{when}"
    );
    if !not_null.is_empty() {
        assert_eq!(
            not_null,
            [
                "constraint items_id_not_null NOT NULL id validated=true",
                "constraint items_name_not_null NOT NULL name validated=true",
                "constraint items_qty_not_null NOT NULL qty validated=true",
            ],
            "{when}"
        );
    }
}
