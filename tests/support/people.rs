//! The `people` table of the rename tests: a model whose `full_name` is renamed from `name`, and
//! writers that play old binaries (raw SQL, old name) and new ones (the generated accessors).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pgevolve::Evolve;
use sqlx::PgPool;

pub const ROWS: i64 = 20_000;

#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "people")]
pub struct Person {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(renamed_from = "name")]
    pub full_name: String,
    pub email: String,
}

pub async fn seed(pool: &PgPool, table: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
         INSERT INTO {table} SELECT g, 'Name ' || g, 'p' || g || '@example.com' FROM generate_series(1, {ROWS}) g;
         ANALYZE {table};"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// The last value each writer wrote to each of its rows (writers own disjoint ids).
pub type WriteLog = Arc<Mutex<HashMap<i64, String>>>;

pub use super::TaskWriter as Writer;

/// An old binary: raw SQL on the old column name, updating ids `≡ lane (mod 8)` and inserting
/// its own new ids.
pub fn old_writer(pool: &PgPool, lane: i64, log: WriteLog) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let value = format!("old{lane}-{n}");
            let result = if n % 3 == 0 {
                let id = 1_000_000 * (lane + 1) + n;
                sqlx::query("INSERT INTO people (id, name, email) VALUES ($1, $2, 'x@example.com')")
                    .bind(id)
                    .bind(&value)
                    .execute(&pool)
                    .await
                    .map(|_| id)
            } else {
                let id = lane + 8 * (1 + n % (ROWS / 8 - 1));
                sqlx::query("UPDATE people SET name = $1 WHERE id = $2")
                    .bind(&value)
                    .bind(id)
                    .execute(&pool)
                    .await
                    .map(|_| id)
            };
            match result {
                Ok(id) => {
                    log.lock().unwrap().insert(id, value);
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// A new binary: the generated accessors only.
pub fn new_writer(pool: &PgPool, lane: i64, log: WriteLog) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let value = format!("new{lane}-{n}");
            let result = if n % 3 == 0 {
                let person = Person {
                    id: 1_000_000 * (lane + 1) + n,
                    full_name: value.clone(),
                    email: "y@example.com".into(),
                };
                person.insert(&pool).await.map(|_| person.id)
            } else {
                let id = lane + 8 * (1 + n % (ROWS / 8 - 1));
                match Person::find(&id, &pool).await {
                    Ok(Some(mut person)) => {
                        person.full_name = value.clone();
                        person.update(&pool).await.map(|_| id)
                    }
                    Ok(None) => Err(pgevolve::ErrorKind::UnknownStep {
                        step: format!("row {id} missing"),
                    }
                    .into()),
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(id) => {
                    log.lock().unwrap().insert(id, value);
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

pub async fn column_exists(pool: &PgPool, column: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'people'::regclass AND attname = $1 AND NOT attisdropped)",
    )
    .bind(column)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every logged write is the row's current value under `column`.
pub async fn assert_log_matches(pool: &PgPool, log: &WriteLog, column: &str) {
    let log: Vec<(i64, String)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    assert!(log.len() > 100, "the writers barely ran");
    let (ids, values): (Vec<i64>, Vec<String>) = log.into_iter().unzip();
    let (found, wrong): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(p.id), count(*) FILTER (WHERE p.{column} IS DISTINCT FROM e.value)
           FROM unnest($1::int8[], $2::text[]) AS e(id, value) LEFT JOIN people p ON p.id = e.id"
    )))
    .bind(&ids)
    .bind(&values)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(found, ids.len() as i64, "every written row exists");
    assert_eq!(
        wrong, 0,
        "rows whose {column} is not the last value written"
    );
}
