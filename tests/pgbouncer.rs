//! Behind PgBouncer in transaction pooling mode (1.18: no protocol-level prepared statements):
//! the application's old-build and new-build writers go through the pooler while the runtime
//! works on a direct connection ([`Evolver::direct`]); without one, boot refuses before any DDL.

use pgevolve_test_support as support;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgevolve::{DeployWindow, ErrorKind, Evolve, Evolver, Phase};
use pgevolve_testkit::{PgBouncer, TestDatabase};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::catalog_snapshot;

/// Rows in the table before the evolution.
const ROWS: i64 = 4_000;

/// Accounts the orders reference.
const ACCOUNTS: i64 = 50;

/// Server connections PgBouncer keeps per database: fewer than the application's clients, so
/// they share server sessions all the time.
const SERVER_CONNECTIONS: u32 = 3;

/// The new build: every step kind on one table. A backfilled NOT NULL column, a rename, an
/// index, a unique constraint, a foreign key and a check.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(
    table = "orders",
    check(name = "orders_score_check", expr = "score >= 0")
)]
pub struct Order {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(references = "accounts(id)")]
    pub account_id: i64,
    #[evolve(renamed_from = "name")]
    pub full_name: String,
    pub email: String,
    #[evolve(backfill = "lower(email)")]
    pub email_normalized: String,
    #[evolve(index)]
    pub score: i32,
    #[evolve(unique)]
    pub slug: String,
}

/// The seeded row `id`, as the old build wrote it (`email_normalized` as the fill computes it).
fn seeded(id: i64) -> Order {
    let email = format!("Person{id}@Example.COM");
    Order {
        id,
        account_id: id % ACCOUNTS + 1,
        full_name: format!("Name {id}"),
        email_normalized: email.to_lowercase(),
        email,
        score: (id % 97) as i32,
        slug: format!("seed-{id}"),
    }
}

async fn seed(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE accounts (id bigint PRIMARY KEY);
         INSERT INTO accounts SELECT g FROM generate_series(1, {ACCOUNTS}) g;
         CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint NOT NULL, name text NOT NULL,
                              email text NOT NULL, score integer NOT NULL, slug text NOT NULL);
         INSERT INTO orders
         SELECT g, g % {ACCOUNTS} + 1, 'Name ' || g, 'Person' || g || '@Example.COM', g % 97, 'seed-' || g
           FROM generate_series(1, {ROWS}) g;
         ANALYZE orders;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// The database, PgBouncer in front of it, the application's pool through PgBouncer (statement
/// cache off) and a direct pool for the test's own reads.
struct Setup {
    db: TestDatabase,
    bouncer: PgBouncer,
    pooled: PgPool,
    direct: PgPool,
}

async fn setup() -> Setup {
    let db = TestDatabase::new().await.expect("throwaway PostgreSQL");
    let url = db.url().to_owned();
    let bouncer = tokio::task::spawn_blocking(move || PgBouncer::start(&url, SERVER_CONNECTIONS))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let pooled_options = PgConnectOptions::from_str(&bouncer.url_for(db.url()).unwrap())
        .unwrap()
        .statement_cache_capacity(0);
    let pooled = PgPoolOptions::new()
        .max_connections(12)
        .connect_with(pooled_options)
        .await
        .unwrap();
    let direct = db.pool(4).await.unwrap();
    Setup {
        db,
        bouncer,
        pooled,
        direct,
    }
}

/// The last values each writer wrote, by id (writers own disjoint ids).
type Log = Arc<Mutex<BTreeMap<i64, Order>>>;

use support::TaskWriter as Writer;

/// A binary built before the change: hand-written SQL on the old column names, with bind
/// parameters, the way the README says an application must behind a transaction pooler
/// (unprepared, in a transaction). Updates seeded ids `≡ lane (mod 8)` and inserts its own.
fn old_writer(pool: &PgPool, lane: i64, log: Log) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let (id, insert) = if n % 3 == 0 {
                (1_000_000 * (lane + 1) + n, true)
            } else {
                (lane + 8 * (1 + n % (ROWS / 8 - 1)), false)
            };
            let mut row = log
                .lock()
                .unwrap()
                .get(&id)
                .cloned()
                .unwrap_or_else(|| seeded(id));
            row.full_name = format!("old{lane}-{n}");
            row.email = format!("Old{lane}.{n}@Example.COM");
            row.email_normalized = row.email.to_lowercase();
            row.score = (n % 1000) as i32;
            if insert {
                row.account_id = n % ACCOUNTS + 1;
                row.slug = format!("old{lane}-{n}");
            }
            let result = async {
                let mut tx = pool.begin().await?;
                let sql = if insert {
                    "INSERT INTO orders (id, account_id, name, email, score, slug) VALUES ($1, $2, $3, $4, $5, $6)"
                } else {
                    "UPDATE orders SET account_id = $2, name = $3, email = $4, score = $5, slug = $6 WHERE id = $1"
                };
                sqlx::query(sql)
                    .persistent(false)
                    .bind(row.id)
                    .bind(row.account_id)
                    .bind(&row.full_name)
                    .bind(&row.email)
                    .bind(row.score)
                    .bind(&row.slug)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }
            .await;
            match result {
                Ok(()) => {
                    log.lock().unwrap().insert(id, row);
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// A binary built after the change: the generated accessors only, on the pooled pool (and, one
/// write in five, inside the application's own transaction). Writes `email_normalized` itself,
/// not as the fill would compute it, so a value the fill replaced would show. Reads back every
/// row it updates.
fn new_writer(pool: &PgPool, lane: i64, log: Log, evolution: pgevolve::Evolution) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let insert = n % 3 == 0;
            let id = if insert {
                1_000_000 * (lane + 1) + n
            } else {
                lane + 8 * (1 + n % (ROWS / 8 - 1))
            };
            let result: pgevolve::Result<Order> = async {
                let mut row = if insert {
                    Order {
                        id,
                        account_id: n % ACCOUNTS + 1,
                        full_name: String::new(),
                        email: String::new(),
                        email_normalized: String::new(),
                        score: 0,
                        slug: format!("new{lane}-{n}"),
                    }
                } else {
                    let found = Order::find(&id, &pool).await?;
                    let expected = log
                        .lock()
                        .unwrap()
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| seeded(id));
                    assert_eq!(found.as_ref(), Some(&expected), "row {id} read back");
                    expected
                };
                row.full_name = format!("new{lane}-{n}");
                row.email = format!("New{lane}.{n}@Example.COM");
                row.email_normalized = format!("set by new{lane}-{n}");
                row.score = (n % 1000) as i32;
                match (insert, n % 5 == 0) {
                    (true, _) => row.insert(&pool).await?,
                    (false, true) => {
                        let mut tx = pool.begin().await?;
                        assert_eq!(row.update(evolution.on(&mut *tx)).await?, 1);
                        tx.commit().await?;
                    }
                    (false, false) => assert_eq!(row.update(&pool).await?, 1),
                }
                Ok(row)
            }
            .await;
            match result {
                Ok(row) => {
                    log.lock().unwrap().insert(id, row);
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// A session that listens (its last query is a `LISTEN`) or holds an advisory lock.
#[derive(Debug, PartialEq)]
struct RuntimeSession {
    pid: i32,
    /// Its last query, cut to 60 characters.
    query: String,
    advisory_lock: bool,
    /// One of PgBouncer's server sessions when seen.
    pgbouncer: bool,
}

/// Until the background work ends, every 20 ms: the sessions that listen or hold an advisory
/// lock, and whether each is one of PgBouncer's server sessions.
async fn sessions_of_the_runtime(
    direct: &PgPool,
    bouncer: &PgBouncer,
    evolution: &pgevolve::Evolution,
) -> Vec<RuntimeSession> {
    let mut seen: Vec<RuntimeSession> = Vec::new();
    loop {
        let finished = evolution.is_finished();
        let servers = bouncer.server_pids().await.unwrap();
        let now: Vec<(i32, String, bool)> = sqlx::query_as(
            "SELECT a.pid, left(a.query, 60),
                    EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory')
               FROM pg_stat_activity a
              WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
        )
        .fetch_all(direct)
        .await
        .unwrap();
        for (pid, query, advisory_lock) in now {
            if !(advisory_lock || query.starts_with("LISTEN")) {
                continue;
            }
            let session = RuntimeSession {
                pid,
                query,
                advisory_lock,
                pgbouncer: servers.contains(&pid),
            };
            if !seen.contains(&session) {
                seen.push(session);
            }
        }
        if finished {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_no_errors(who: &str, (ok, errors): (u64, Vec<String>)) {
    assert!(
        errors.is_empty(),
        "{who}: {} failed writes, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(ok > 20, "{who}: only {ok} writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_step_kind_runs_its_whole_lifecycle_while_writers_go_through_pgbouncer_and_every_row_keeps_what_was_written()
 {
    let Setup {
        db,
        bouncer,
        pooled,
        direct,
    } = setup().await;
    assert_eq!(pooled.connect_options().get_port(), bouncer.port());
    seed(&direct).await;
    let log: Log = Arc::default();
    let old: Vec<Writer> = (0..2)
        .map(|l| old_writer(&pooled, l, log.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let evolution = Evolver::new(pooled.clone())
        .direct(PgConnectOptions::from_str(db.url()).unwrap())
        .model::<Order>()
        .deploy_window(DeployWindow::always())
        .boot()
        .await
        .unwrap();
    let new: Vec<Writer> = (2..4)
        .map(|l| new_writer(&pooled, l, log.clone(), evolution.clone()))
        .collect();
    // The runtime's sessions are not PgBouncer's: its LISTEN, and every advisory lock seen
    // while the background work runs.
    let sessions = sessions_of_the_runtime(&direct, &bouncer, &evolution).await;
    assert!(
        sessions.iter().any(|s| s.query.starts_with("LISTEN")),
        "the coordinator listens: {sessions:?}"
    );
    assert!(
        sessions.iter().any(|s| s.advisory_lock),
        "an advisory lock was seen: {sessions:?}"
    );
    assert!(
        sessions.iter().all(|s| !s.pgbouncer),
        "a session of the runtime is one of PgBouncer's: {sessions:?}"
    );
    tokio::time::timeout(Duration::from_secs(60), evolution.wait())
        .await
        .expect("backfill, index builds and validations within 60 s")
        .unwrap();
    evolution.switch().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The old build is gone before contract (which drops the old column).
    for (lane, writer) in old.into_iter().enumerate() {
        assert_no_errors(&format!("old writer {lane}"), writer.finish().await);
    }
    evolution.contract().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (lane, writer) in new.into_iter().enumerate() {
        assert_no_errors(&format!("new writer {}", lane + 2), writer.finish().await);
    }

    let plan = &evolution.plans()[0];
    let status = evolution.status().await.unwrap();
    assert!(plan.steps.len() >= 6, "{:?}", plan.steps);
    for step in &plan.steps {
        let recorded = status.iter().find(|s| s.id == step.id).unwrap();
        assert_eq!(
            recorded.phase,
            step.kind.last_phase(),
            "{}",
            recorded.description
        );
    }
    let constraints: Vec<(String, bool)> = sqlx::query_as(
        "SELECT conname::text, convalidated FROM pg_constraint WHERE conrelid = 'orders'::regclass ORDER BY 1",
    )
    .fetch_all(&direct)
    .await
    .unwrap();
    for name in [
        "orders_account_id_fkey",
        "orders_score_check",
        "orders_slug_key",
    ] {
        assert!(
            constraints.contains(&(name.to_string(), true)),
            "{name} validated: {constraints:?}"
        );
    }
    let indexes: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE i.indrelid = 'orders'::regclass ORDER BY 1",
    )
    .fetch_all(&direct)
    .await
    .unwrap();
    assert!(
        indexes.contains(&("orders_score_idx".to_string(), true)),
        "{indexes:?}"
    );
    let not_null: bool = sqlx::query_scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'email_normalized'",
    )
    .fetch_one(&direct)
    .await
    .unwrap();
    assert!(not_null, "email_normalized is NOT NULL after contract");

    // Every row: the seed, overwritten by the last write of its writer.
    let mut expected: BTreeMap<i64, Order> = (1..=ROWS).map(|id| (id, seeded(id))).collect();
    expected.extend(log.lock().unwrap().clone());
    let stored: Vec<(i64, i64, String, String, String, i32, String)> = sqlx::query_as(
        "SELECT id, account_id, full_name, email, email_normalized, score, slug FROM orders ORDER BY id",
    )
    .fetch_all(&direct)
    .await
    .unwrap();
    let stored: Vec<Order> = stored
        .into_iter()
        .map(
            |(id, account_id, full_name, email, email_normalized, score, slug)| Order {
                id,
                account_id,
                full_name,
                email,
                email_normalized,
                score,
                slug,
            },
        )
        .collect();
    let expected: Vec<Order> = expected.into_values().collect();
    assert_eq!(stored.len(), expected.len(), "rows lost or added");
    let wrong: Vec<(&Order, &Order)> = stored
        .iter()
        .zip(&expected)
        .filter(|(s, e)| s != e)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} rows differ from what was written, first (stored, expected): {:?}",
        wrong.len(),
        wrong.first()
    );
    println!(
        "{} rows compared, 0 lost or different (writers through PgBouncer in transaction mode)",
        expected.len()
    );
    // The accessors read the same through the pooler.
    let mut read = Order::fetch_all(&pooled).await.unwrap();
    read.sort_by_key(|o| o.id);
    assert!(read == expected, "Order::fetch_all through PgBouncer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_through_pgbouncer_without_a_direct_connection_fails_naming_evolver_direct_and_changes_nothing()
 {
    let Setup {
        db: _db,
        bouncer: _bouncer,
        pooled,
        direct,
    } = setup().await;
    seed(&direct).await;
    let before = catalog_snapshot(&direct, "orders").await;

    let error = Evolver::new(pooled.clone())
        .model::<Order>()
        .deploy_window(DeployWindow::always())
        .boot()
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::TransactionPooler { .. }),
        "{error}"
    );
    let message = error.to_string();
    for part in [
        "transaction pooler",
        "Evolver::direct",
        "Nothing was changed",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }

    assert_eq!(catalog_snapshot(&direct, "orders").await, before);
    let state_schema: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'pgevolve')")
            .fetch_one(&direct)
            .await
            .unwrap();
    assert!(!state_schema, "no state store created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_whose_direct_connections_reach_another_database_fails_naming_both_and_changes_nothing()
 {
    let Setup {
        db,
        bouncer: _bouncer,
        pooled,
        direct,
    } = setup().await;
    seed(&direct).await;
    let before = catalog_snapshot(&direct, "orders").await;
    let elsewhere = TestDatabase::new().await.unwrap();

    let error = Evolver::new(pooled.clone())
        .direct(PgConnectOptions::from_str(elsewhere.url()).unwrap())
        .model::<Order>()
        .deploy_window(DeployWindow::always())
        .boot()
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::DirectElsewhere { .. }),
        "{error}"
    );
    let message = error.to_string();
    for part in [elsewhere.name(), db.name(), "Nothing was changed"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }

    assert_eq!(catalog_snapshot(&direct, "orders").await, before);
    for pool in [&direct, &elsewhere.pool(1).await.unwrap()] {
        let state_schema: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'pgevolve')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert!(!state_schema, "no state store created");
    }
}

/// The pooler check runs at every slow boot without `Evolver::direct`: a pool of direct
/// connections passes it and the evolution runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_on_direct_connections_passes_the_pooler_check_and_validates_every_step() {
    let Setup { direct, .. } = setup().await;
    seed(&direct).await;
    let evolution = Evolver::new(direct.clone())
        .model::<Order>()
        .deploy_window(DeployWindow::always())
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let status = evolution.status().await.unwrap();
    for step in &evolution.plans()[0].steps {
        let recorded = status.iter().find(|s| s.id == step.id).unwrap();
        let goal = step.kind.last_phase().min(Phase::Validate);
        assert_eq!(recorded.phase, goal, "{}", recorded.description);
    }
}

/// What the README's sqlx settings rest on: behind PgBouncer 1.18 in transaction mode, sqlx's
/// default (named, cached) statements and its unnamed ones outside a transaction fail or, worse,
/// run another client's statement; unnamed statements inside a transaction are always right.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_pgbouncer_only_unprepared_statements_inside_a_transaction_return_their_own_results()
{
    let Setup { bouncer, db, .. } = setup().await;
    let url = bouncer.url_for(db.url()).unwrap();
    // (statement cache, in a transaction, persistent) -> (right, wrong or failed)
    let mut outcomes = Vec::new();
    for (cache, in_transaction, persistent) in [
        (100, false, true),
        (0, false, true),
        (0, false, false),
        (0, true, false),
    ] {
        let options = PgConnectOptions::from_str(&url)
            .unwrap()
            .statement_cache_capacity(cache);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8i64)
            .map(|w| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let (mut right, mut bad) = (0u32, 0u32);
                    for i in 0..150i64 {
                        // Several statement texts, so another client's statement differs.
                        let sql = sqlx::AssertSqlSafe(format!("SELECT $1::int8 + {}", i % 5));
                        let value = w * 1000 + i;
                        let query = sqlx::query_scalar::<_, i64>(sql)
                            .persistent(persistent)
                            .bind(value);
                        let got = if in_transaction {
                            match pool.begin().await {
                                Ok(mut tx) => {
                                    let got = query.fetch_one(&mut *tx).await;
                                    let _ = tx.commit().await;
                                    got
                                }
                                Err(e) => Err(e),
                            }
                        } else {
                            query.fetch_one(&pool).await
                        };
                        match got {
                            Ok(v) if v == value + i % 5 => right += 1,
                            _ => bad += 1,
                        }
                    }
                    (right, bad)
                })
            })
            .collect();
        let (mut right, mut bad) = (0, 0);
        for task in tasks {
            let (r, b) = task.await.unwrap();
            right += r;
            bad += b;
        }
        pool.close().await;
        outcomes.push(((cache, in_transaction, persistent), (right, bad)));
    }
    for (setting, (right, bad)) in &outcomes[..3] {
        assert!(*bad > 0, "{setting:?} was always right ({right})");
    }
    assert_eq!(
        outcomes[3].1.1, 0,
        "unprepared in a transaction: {outcomes:?}"
    );
}
