//! Shared pieces of the integration tests: a seeded table, concurrent writers that measure how
//! long each statement waited, and catalog snapshots.
#![allow(dead_code)]

pub mod people;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgevolve_testkit::TestDatabase;
use sqlx::PgPool;
use tokio::task::JoinHandle;

pub async fn database(max_connections: u32) -> (TestDatabase, PgPool) {
    let db = TestDatabase::new().await.expect("throwaway PostgreSQL");
    let pool = db.pool(max_connections).await.expect("pool");
    (db, pool)
}

/// `users(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, email text)` with `rows`
/// rows whose emails are mixed case, so `lower(email)` differs from `email`.
pub async fn seed_users(pool: &PgPool, rows: i64) {
    sqlx::raw_sql(
        "CREATE TABLE users (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             name text NOT NULL,
             email text NOT NULL
         )",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO users (name, email)
         SELECT 'user ' || g, 'User' || g || '@Example.COM' FROM generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(pool)
    .await
    .unwrap();
    sqlx::raw_sql("ANALYZE users").execute(pool).await.unwrap();
}

/// Counters shared by the writers.
#[derive(Default)]
pub struct WriterStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Longest time one statement took, in microseconds.
    pub max_wait_us: AtomicU64,
    pub first_error: std::sync::Mutex<Option<String>>,
}

impl WriterStats {
    pub fn max_wait(&self) -> Duration {
        Duration::from_micros(self.max_wait_us.load(Ordering::Relaxed))
    }
}

/// Writers that INSERT and UPDATE `users` until stopped. While `new_code` is false they use the
/// old shape (no `email_normalized`), like binaries built before the change; once it is true they
/// write the new column too, like binaries deployed after it.
pub struct Writers {
    pub stats: Arc<WriterStats>,
    pub stop: Arc<AtomicBool>,
    pub new_code: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Writers {
    pub fn start(pool: &PgPool, count: usize, max_id: i64) -> Writers {
        let stats = Arc::new(WriterStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let new_code = Arc::new(AtomicBool::new(false));
        let handles = (0..count)
            .map(|w| {
                let (pool, stats, stop, new_code) = (pool.clone(), stats.clone(), stop.clone(), new_code.clone());
                tokio::spawn(async move {
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = 1 + ((n * 7919 + w as u64 * 104_729) % max_id as u64) as i64;
                        let email = format!("Writer{w}.{n}@Example.ORG");
                        let new = new_code.load(Ordering::Relaxed);
                        let sql = match (n % 2 == 0, new) {
                            (true, false) => "INSERT INTO users (name, email) VALUES ('writer', $1)",
                            (true, true) => "INSERT INTO users (name, email, email_normalized) VALUES ('writer', $1, lower($1))",
                            (false, false) => "UPDATE users SET email = $1 WHERE id = $2",
                            (false, true) => "UPDATE users SET email = $1, email_normalized = lower($1) WHERE id = $2",
                        };
                        let started = Instant::now();
                        let mut q = sqlx::query(sql).bind(&email);
                        if n % 2 == 1 {
                            q = q.bind(id);
                        }
                        let result = q.execute(&pool).await;
                        let waited = started.elapsed().as_micros() as u64;
                        stats.max_wait_us.fetch_max(waited, Ordering::Relaxed);
                        match result {
                            Ok(_) => stats.ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                stats.first_error.lock().unwrap().get_or_insert_with(|| format!("{sql}: {e}"));
                                stats.failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Writers {
            stats,
            stop,
            new_code,
            handles,
        }
    }

    pub async fn finish(self) -> Arc<WriterStats> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.unwrap();
        }
        self.stats
    }
}

/// Everything about a table that a migration could change: columns, types, nullability,
/// defaults, indexes, constraints, triggers. Compared before and after to prove nothing changed.
pub async fn catalog_snapshot(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'column ' || attname || ' ' || format_type(atttypid, atttypmod) || ' notnull=' || attnotnull
                || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
         UNION ALL
         SELECT 'index ' || pg_get_indexdef(indexrelid) || ' valid=' || indisvalid FROM pg_index WHERE indrelid = $1::regclass
         UNION ALL
         SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid) || ' validated=' || convalidated
           FROM pg_constraint WHERE conrelid = $1::regclass
         UNION ALL
         SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal
         UNION ALL
         SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'pgevolve%'
         ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Writers like [`Writers::start`], on statements of the test's choosing: even iterations run
/// `insert` with `$1` = a unique text and `$2` = the iteration number (bigint), odd ones run
/// `update` with `$1` = a unique text and `$2` = an existing id in `1..=max_id`.
pub fn writers_with(
    pool: &PgPool,
    count: usize,
    max_id: i64,
    insert: &'static str,
    update: &'static str,
) -> Writers {
    let stats = Arc::new(WriterStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..count)
        .map(|w| {
            let (pool, stats, stop) = (pool.clone(), stats.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n: i64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let text = format!("Writer{w}.{n}@Example.ORG");
                    let (sql, number) = if n % 2 == 0 {
                        (insert, n * 8 + w as i64)
                    } else {
                        (update, 1 + (n * 7919 + w as i64 * 104_729) % max_id)
                    };
                    let started = Instant::now();
                    let result = sqlx::query(sql)
                        .bind(&text)
                        .bind(number)
                        .execute(&pool)
                        .await;
                    let waited = started.elapsed().as_micros() as u64;
                    stats.max_wait_us.fetch_max(waited, Ordering::Relaxed);
                    match result {
                        Ok(_) => stats.ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            stats
                                .first_error
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| format!("{sql}: {e}"));
                            stats.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    Writers {
        stats,
        stop,
        new_code: Arc::new(AtomicBool::new(false)),
        handles,
    }
}

/// Watches, from the server's side, how long statements starting with one of `prefixes` have
/// been waiting for a lock (`pg_stat_activity`, `wait_event_type = 'Lock'`), sampling
/// continuously on a connection of its own.
pub struct LockWaits {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Duration, u64)>,
}

impl LockWaits {
    pub async fn start(url: &str, prefixes: &[&str]) -> LockWaits {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let patterns: Vec<String> = prefixes.iter().map(|p| format!("{p}%")).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let (mut longest, mut samples) = (0f64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                let (waiting, wait): (i64, f64) = sqlx::query_as(
                    "SELECT count(*), coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0)::float8 \
                     FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE ANY($1) \
                     AND pid <> pg_backend_pid()",
                )
                .bind(&patterns)
                .fetch_one(&mut conn)
                .await
                .unwrap();
                if waiting > 0 {
                    samples += 1;
                    longest = longest.max(wait);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (Duration::from_secs_f64(longest), samples)
        });
        LockWaits { stop, handle }
    }

    /// The longest lock wait seen, and in how many samples a writer was waiting.
    pub async fn finish(self) -> (Duration, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap()
    }
}

/// What a plain (blocking) DDL statement did to concurrent writers.
#[derive(Debug)]
pub struct Blocking {
    /// How long the statement took.
    pub statement: Duration,
    /// The longest a writer statement took meanwhile (client side).
    pub writer_max_wait: Duration,
    /// The longest lock wait of a writer seen from the server, and how many samples saw one.
    pub lock_wait: Duration,
    pub lock_wait_samples: u64,
    pub failed: u64,
}

/// Runs `ddl` (the plain, single-statement form of an operation) while `writers` (fresh, with
/// no history) keep writing, and measures how much it held them up.
pub async fn measure_plain(
    pool: &PgPool,
    url: &str,
    writers: Writers,
    prefixes: &[&str],
    ddl: &str,
) -> Blocking {
    tokio::time::sleep(Duration::from_millis(300)).await;
    writers.stats.max_wait_us.store(0, Ordering::Relaxed);
    let waits = LockWaits::start(url, prefixes).await;
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.to_string()))
        .execute(pool)
        .await
        .unwrap();
    let statement = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (lock_wait, lock_wait_samples) = waits.finish().await;
    let stats = writers.finish().await;
    Blocking {
        statement,
        writer_max_wait: stats.max_wait(),
        lock_wait,
        lock_wait_samples,
        failed: stats.failed.load(Ordering::Relaxed),
    }
}

/// The indexes of a table: (name, valid, definition), by name.
pub async fn indexes(pool: &PgPool, table: &str) -> Vec<(String, bool, String)> {
    sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The constraints of a table: (name, type, validated), by name.
pub async fn constraints(pool: &PgPool, table: &str) -> Vec<(String, String, bool)> {
    sqlx::query_as(
        "SELECT conname::text, contype::text, convalidated FROM pg_constraint \
         WHERE conrelid = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}
