//! Shared pieces of the integration tests: a seeded table, concurrent writers that measure how
//! long each statement waited, and catalog snapshots.
#![allow(dead_code)]

pub mod builds;
pub mod campaign;
pub mod child;
pub mod items;
pub mod orders;
pub mod people;
pub mod roles;
pub mod users;
pub mod wal;

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
                        let sql = match (n.is_multiple_of(2), new) {
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

/// A writer task that counts its writes and keeps its errors until stopped.
pub struct TaskWriter {
    pub stop: Arc<AtomicBool>,
    pub handle: JoinHandle<(u64, Vec<String>)>,
}

impl TaskWriter {
    /// Stops it: (writes, errors).
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap()
    }

    /// Stops it and asserts that it never failed; the writes.
    pub async fn assert_no_failures(self, who: &str) -> u64 {
        let (ok, errors) = self.finish().await;
        assert!(
            errors.is_empty(),
            "{who}: {} failed writes, first: {}",
            errors.len(),
            errors.first().map(String::as_str).unwrap_or("")
        );
        ok
    }

    /// Stops it and asserts that it wrote more than 20 times and never failed; the writes.
    pub async fn assert_no_errors(self, who: &str) -> u64 {
        let ok = self.assert_no_failures(who).await;
        assert!(ok > 20, "{who}: only {ok} writes");
        ok
    }
}

/// The status of the step whose description starts with `prefix` (`"drop column"`,
/// `"rename table"`, `"rename value"`, ...): the first such step recorded.
pub async fn step_described(evolution: &pgevolve::Evolution, prefix: &str) -> pgevolve::StepStatus {
    evolution
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.description.starts_with(prefix))
        .unwrap_or_else(|| panic!("no recorded step is described as {prefix:?}"))
}

/// The labels of an enum type (a name `to_regtype` resolves), in sort order.
pub async fn enum_labels(pool: &PgPool, type_name: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = to_regtype($1) ORDER BY enumsortorder",
    )
    .bind(type_name)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The phase the state store records for the step of `kind` (`"drop_column"`, ...), if any.
pub async fn recorded_phase(pool: &PgPool, kind: &str) -> Option<pgevolve::Phase> {
    let phase: Option<String> =
        sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE kind = $1")
            .bind(kind)
            .fetch_optional(pool)
            .await
            .unwrap();
    phase.map(|p| pgevolve::Phase::parse(&p).unwrap_or_else(|| panic!("unknown phase {p:?}")))
}

/// A step's journal from expand to contract, for a kind with no backfill: expand, retire,
/// every live instance's acknowledgement, contract.
pub const EXPAND_RETIRE_CONTRACT: [&str; 4] = [
    "expand done",
    "retire done",
    "retire acknowledged",
    "contract done",
];

/// Asserts the events of a step's journal, in order.
pub fn assert_journal(step: &pgevolve::StepStatus, expected: &[&str]) {
    let events: Vec<&str> = step.history.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, expected, "the journal of {}", step.description);
}

/// Boots `T` again and waits for its background work: a model whose steps are all done must
/// change nothing in the table's catalog (idempotent boot).
pub async fn assert_reboot_changes_nothing<T: pgevolve::Evolve>(pool: &PgPool, table: &str) {
    let before = catalog_snapshot(pool, table).await;
    pgevolve::Evolver::new(pool.clone())
        .model::<T>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        catalog_snapshot(pool, table).await,
        before,
        "booting {} again changed {table}",
        T::MODEL.rust_name
    );
}

/// Everything about a table that a migration could change: columns, types, nullability,
/// defaults, indexes, constraints, triggers (with their definitions), pgevolve's helper
/// functions (with their bodies), and every view of the database outside the system and state
/// schemas (a rename's compatibility view is a view of the table's schema, not of the table).
/// Compared before and after to prove nothing changed.
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
         SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal
         UNION ALL
         SELECT 'function ' || proname || ' ' || md5(prosrc) FROM pg_proc WHERE proname LIKE 'pgevolve%'
         UNION ALL
         SELECT 'view ' || schemaname || '.' || viewname || ' ' || definition FROM pg_views
          WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgevolve')
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
    // Unique across runs too, so a second set of writers never repeats the first one's values.
    let run: u32 = rand::random();
    let handles = (0..count)
        .map(|w| {
            let (pool, stats, stop) = (pool.clone(), stats.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n: i64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let text = format!("Writer{run:08x}.{w}.{n}@Example.ORG");
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
                     AND datname = current_database() AND pid <> pg_backend_pid()",
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
    /// Writes that completed while the statement ran (the writers' normal pace would be
    /// `writes_per_second * statement`).
    pub writes_during: u64,
    pub writes_per_second: f64,
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
    let pace_from = (Instant::now(), writers.stats.ok.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes_per_second = (writers.stats.ok.load(Ordering::Relaxed) - pace_from.1) as f64
        / pace_from.0.elapsed().as_secs_f64();
    writers.stats.max_wait_us.store(0, Ordering::Relaxed);
    let waits = LockWaits::start(url, prefixes).await;
    let started = Instant::now();
    let before = writers.stats.ok.load(Ordering::Relaxed);
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.to_string()))
        .execute(pool)
        .await
        .unwrap();
    let writes_during = writers.stats.ok.load(Ordering::Relaxed) - before;
    let statement = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (lock_wait, lock_wait_samples) = waits.finish().await;
    let stats = writers.finish().await;
    Blocking {
        statement,
        writer_max_wait: stats.max_wait(),
        lock_wait,
        lock_wait_samples,
        writes_during,
        writes_per_second,
        failed: stats.failed.load(Ordering::Relaxed),
    }
}

/// The write load the index and constraint tests run an operation under: four writers that
/// insert and update `users`, and the statement prefixes whose lock waits are sampled.
pub struct WriteLoad {
    pub rows: i64,
    pub insert: &'static str,
    pub update: &'static str,
    pub prefixes: &'static [&'static str],
}

impl WriteLoad {
    pub fn start(&self, pool: &PgPool) -> Writers {
        writers_with(pool, 4, self.rows, self.insert, self.update)
    }

    /// Runs the plain form `ddl` of an operation under a fresh copy of this load and asserts
    /// that it blocked the writers, where pgevolve's path (`safe`, `safe_lock`) did not.
    #[allow(clippy::too_many_arguments)]
    pub async fn assert_plain_blocks(
        &self,
        pool: &PgPool,
        url: &str,
        what: &str,
        ddl: &str,
        lock_timeout: Duration,
        safe: &WriterStats,
        safe_lock: (Duration, u64),
    ) {
        let plain = measure_plain(pool, url, self.start(pool), self.prefixes, ddl).await;
        assert_safe_and_plain_blocks(what, lock_timeout, safe, safe_lock, &plain);
    }
}

/// Asserts what the issue promises of the pgevolve path of an operation (`safe`: the writers'
/// stats, `safe_lock`: the server-side lock waits seen meanwhile) and that the plain form of it
/// measurably blocked the same writers; prints both.
pub fn assert_safe_and_plain_blocks(
    what: &str,
    lock_timeout: Duration,
    safe: &WriterStats,
    safe_lock: (Duration, u64),
    plain: &Blocking,
) {
    println!(
        "{what}: pgevolve: {} writes, {} failed, longest writer wait {:?}, longest lock wait {:?} ({} samples); \
         plain: statement {:?}, longest writer wait {:?}, longest lock wait {:?} ({} samples), \
         {} writes during it where {:.0} would have been made at the writers' pace",
        safe.ok.load(Ordering::Relaxed),
        safe.failed.load(Ordering::Relaxed),
        safe.max_wait(),
        safe_lock.0,
        safe_lock.1,
        plain.statement,
        plain.writer_max_wait,
        plain.lock_wait,
        plain.lock_wait_samples,
        plain.writes_during,
        plain.writes_per_second * plain.statement.as_secs_f64(),
    );
    assert_eq!(
        safe.failed.load(Ordering::Relaxed),
        0,
        "{what}: failed writes; first: {:?}",
        safe.first_error.lock().unwrap()
    );
    assert!(
        safe.ok.load(Ordering::Relaxed) > 100,
        "{what}: the writers barely ran"
    );
    let bound = lock_timeout + Duration::from_secs(1);
    assert!(
        safe.max_wait() < bound,
        "{what}: a writer waited {:?}",
        safe.max_wait()
    );
    assert!(
        safe_lock.0 < bound,
        "{what}: a writer waited {:?} for a lock",
        safe_lock.0
    );

    // The plain statement stopped the writers for its whole duration: they were seen waiting for
    // a lock, one statement waited at least half of it, and less than half the writes their pace
    // would have made completed meanwhile (those before it got its lock).
    assert_eq!(
        plain.failed, 0,
        "{what}: the plain statement made writes fail"
    );
    assert!(
        plain.lock_wait_samples > 0,
        "{what}: no writer was seen waiting for a lock during the plain statement"
    );
    assert!(
        plain.writer_max_wait * 2 >= plain.statement,
        "{what}: writers waited {:?} during a plain statement of {:?}",
        plain.writer_max_wait,
        plain.statement
    );
    let pace = plain.writes_per_second * plain.statement.as_secs_f64();
    assert!(
        (plain.writes_during as f64) < pace / 2.0,
        "{what}: {} writes completed during the plain statement, where the writers' pace makes {pace:.0}",
        plain.writes_during
    );
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
/// The table's constraints (name, kind, validated), without PostgreSQL 18's NOT NULL
/// constraints (`contype = 'n'`), which older majors keep in `pg_attribute` only.
pub async fn constraints(pool: &PgPool, table: &str) -> Vec<(String, String, bool)> {
    sqlx::query_as(
        "SELECT conname::text, contype::text, convalidated FROM pg_constraint \
         WHERE conrelid = $1::regclass AND contype <> 'n' ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}
