//! The `orders` table of the reliability campaigns (`kill_campaign.rs`, `connection_cuts.rs`,
//! `boot_stampede.rs`): a model with every step kind, the build before it, and writers that play
//! both builds while a log keeps what each row must hold at the end.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use pgevolve::{BackfillOptions, DeployWindow, Evolver, Phase};
use sqlx::PgPool;

/// Rows seeded by the campaigns: with [`evolver`]'s batches, a backfill of 200 batches of 15
/// rows, each followed by 20 ms, 4 to 5 s, long enough to be struck several times.
pub const ROWS: i64 = 3_000;

/// The index of the build before the change, which the new build drops at contract.
pub const REMOVED_INDEX: &str = "orders_email_idx";

/// The tables the new build evolves.
pub const TABLES: [&str; 2] = ["orders", "order_notes"];

/// The new build's evolution as the campaigns run it: small batches with a pause, so the
/// backfill lasts seconds; a 3 s heartbeat timeout, so a contract does not wait long for the
/// instances of killed processes; the deploy window always open (the suite's clock says
/// Saturday).
pub fn evolver(pool: &PgPool) -> Evolver {
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(Duration::from_secs(3), Duration::from_secs(60))
        .backfill_options(backfill_options())
        .model::<Order>()
        .model::<OrderNote>()
}

/// Batches of 15 rows, each followed by 20 ms; a batch may take up to 1 s (the default 80 ms is
/// often exceeded when a 2-core machine runs a dozen processes, and the retries at the smallest
/// size then back off for seconds).
pub fn backfill_options() -> BackfillOptions {
    BackfillOptions {
        batch_timeout: Duration::from_secs(1),
        initial_batch_size: 15,
        min_batch_size: 15,
        max_batch_size: 15,
        pause: Duration::from_millis(20),
        duty_cycle: 1.0,
        ..BackfillOptions::default()
    }
}

/// Accounts the orders reference.
pub const ACCOUNTS: i64 = 50;

/// The build before the change: the table as it is, with an index on `email` that the new
/// build no longer declares. Evolved to the end before a campaign starts, so the new build has
/// a removed index to drop.
pub mod before {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "orders")]
    pub struct Order {
        #[evolve(primary_key)]
        pub id: i64,
        pub account_id: i64,
        pub name: String,
        #[evolve(index)]
        pub email: String,
        pub score: i32,
        pub slug: String,
        pub legacy: String,
    }
}

/// The new build: every step kind. A backfilled NOT NULL column, a rename, an index, a unique
/// constraint, a foreign key, a check, a dropped column, the removed index on `email`, and a new
/// table ([`OrderNote`]).
#[derive(pgevolve::Evolve, Debug, Clone, PartialEq)]
#[evolve(
    table = "orders",
    dropped("legacy"),
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

/// A table the new build creates.
#[derive(pgevolve::Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "order_notes")]
pub struct OrderNote {
    #[evolve(primary_key)]
    pub id: i64,
    pub order_id: i64,
    pub note: String,
}

/// A table only a newer build declares: the newer build is [`evolver`]'s models plus this one
/// (one more step).
#[derive(pgevolve::Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "order_tags")]
pub struct OrderTag {
    #[evolve(primary_key)]
    pub id: i64,
    pub tag: String,
}

/// The seeded row `id`, as the new build reads it (`email_normalized` as the fill computes it).
pub fn seeded(id: i64) -> Order {
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

/// `accounts` and `orders` with `rows` rows in the old shape, then the build before the change
/// evolved to its end (its index on `email` built).
pub async fn seed(pool: &PgPool, rows: i64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE accounts (id bigint PRIMARY KEY);
         INSERT INTO accounts SELECT g FROM generate_series(1, {ACCOUNTS}) g;
         CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint NOT NULL, name text NOT NULL,
                              email text NOT NULL, score integer NOT NULL, slug text NOT NULL,
                              legacy text NOT NULL);
         INSERT INTO orders
         SELECT g, g % {ACCOUNTS} + 1, 'Name ' || g, 'Person' || g || '@Example.COM', g % 97, 'seed-' || g, 'legacy ' || g
           FROM generate_series(1, {rows}) g;
         ANALYZE orders;"
    )))
    .execute(pool)
    .await
    .unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<before::Order>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
}

/// The steps the catalog satisfied before the new build: creating `orders`, which exists.
pub fn existed(step: &pgevolve::PlannedStep) -> bool {
    step.kind.name() == "create_table" && step.model.table == "orders"
}

/// The last values each writer wrote, by id (writers own disjoint ids).
pub type Log = Arc<Mutex<BTreeMap<i64, Order>>>;

pub use super::TaskWriter as Writer;

/// The id a writer of `lane` (0..8) writes at its `n`th write: one write in three inserts a row
/// of its own, the others update a seeded row `≡ lane (mod 8)`. Inserted ids interleave the
/// lanes above the seed and grow with `n`, as a sequence's would: with one range per lane, the
/// lower lane's inserts landed below the upper bound a backfill pass had recorded from the
/// higher lane's, and a pass held to small batches chased them for as long as the writers ran.
fn target(lane: i64, n: i64, rows: i64) -> (i64, bool) {
    if n % 3 == 0 {
        (1_000_000 + 8 * n + lane, true)
    } else {
        (lane + 8 * (1 + n % (rows / 8 - 1)), false)
    }
}

/// The row a writer starts from: what it wrote last, else the seed.
fn last(log: &Log, id: i64) -> Order {
    log.lock()
        .unwrap()
        .get(&id)
        .cloned()
        .unwrap_or_else(|| seeded(id))
}

fn spawn_writer<F, W>(log: Log, mut write: F) -> Writer
where
    F: FnMut(i64) -> W + Send + 'static,
    W: std::future::Future<Output = Result<Order, String>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            match write(n).await {
                Ok(row) => {
                    log.lock().unwrap().insert(row.id, row);
                    ok += 1;
                }
                Err(e) => errors.push(e),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// A binary built before the change: hand-written SQL on the old columns (`name`, `legacy`, no
/// `email_normalized`).
pub fn old_writer(pool: &PgPool, lane: i64, rows: i64, log: Log) -> Writer {
    let pool = pool.clone();
    let from = log.clone();
    spawn_writer(log, move |n| {
        let (pool, from) = (pool.clone(), from.clone());
        old_write(pool, from, lane, rows, n)
    })
}

async fn old_write(pool: PgPool, from: Log, lane: i64, rows: i64, n: i64) -> Result<Order, String> {
    let (id, insert) = target(lane, n, rows);
    let mut row = last(&from, id);
    row.full_name = format!("old{lane}-{n}");
    row.email = format!("Old{lane}.{n}@Example.COM");
    row.email_normalized = row.email.to_lowercase();
    row.score = (n % 1000) as i32;
    if insert {
        row.account_id = n % ACCOUNTS + 1;
        row.slug = format!("old{lane}-{n}");
    }
    let sql = if insert {
        "INSERT INTO orders (id, account_id, name, email, score, slug, legacy) \
         VALUES ($1, $2, $3, $4, $5, $6, 'old')"
    } else {
        "UPDATE orders SET account_id = $2, name = $3, email = $4, score = $5, slug = $6, \
         legacy = 'old' WHERE id = $1"
    };
    sqlx::query(sql)
        .bind(row.id)
        .bind(row.account_id)
        .bind(&row.full_name)
        .bind(&row.email)
        .bind(row.score)
        .bind(&row.slug)
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(row)
}

/// A binary built after the change: the generated accessors only. Writes `email_normalized`
/// itself, not as the fill would compute it, so a value the fill replaced would show; reads
/// back every row it updates and checks it against the log.
pub fn new_writer(pool: &PgPool, lane: i64, rows: i64, log: Log) -> Writer {
    let pool = pool.clone();
    let from = log.clone();
    spawn_writer(log, move |n| {
        let (pool, from) = (pool.clone(), from.clone());
        new_write(pool, from, lane, rows, n)
    })
}

async fn new_write(pool: PgPool, from: Log, lane: i64, rows: i64, n: i64) -> Result<Order, String> {
    let (id, insert) = target(lane, n, rows);
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
        let found = Order::find(&id, &pool).await.map_err(|e| e.to_string())?;
        let expected = last(&from, id);
        if found.as_ref() != Some(&expected) {
            return Err(format!(
                "row {id} read back as {found:?}, where {expected:?} was written"
            ));
        }
        expected
    };
    row.full_name = format!("new{lane}-{n}");
    row.email = format!("New{lane}.{n}@Example.COM");
    row.email_normalized = format!("set by new{lane}-{n}");
    row.score = (n % 1000) as i32;
    if insert {
        row.insert(&pool).await.map_err(|e| e.to_string())?;
    } else {
        let updated = row.update(&pool).await.map_err(|e| e.to_string())?;
        if updated != 1 {
            return Err(format!("the update of row {id} touched {updated} rows"));
        }
    }
    Ok(row)
}

/// Every row of `orders` holds what was written last (the seed for rows nobody wrote): none
/// lost, none added, none different. Returns how many rows were compared.
pub async fn assert_every_row(pool: &PgPool, rows: i64, log: &Log) -> usize {
    let mut expected: BTreeMap<i64, Order> = (1..=rows).map(|id| (id, seeded(id))).collect();
    expected.extend(log.lock().unwrap().clone());
    let stored: Vec<(i64, i64, String, String, String, i32, String)> = sqlx::query_as(
        "SELECT id, account_id, full_name, email, email_normalized, score, slug FROM orders ORDER BY id",
    )
    .fetch_all(pool)
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
    let ids = |rows: &[Order]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    let (stored_ids, expected_ids) = (ids(&stored), ids(&expected));
    let lost: Vec<&i64> = expected_ids
        .iter()
        .filter(|id| stored_ids.binary_search(id).is_err())
        .collect();
    let added: Vec<&i64> = stored_ids
        .iter()
        .filter(|id| expected_ids.binary_search(id).is_err())
        .collect();
    assert!(
        lost.is_empty() && added.is_empty(),
        "{} rows lost (first {:?}), {} rows nobody wrote (first {:?})",
        lost.len(),
        lost.first(),
        added.len(),
        added.first()
    );
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
    stored.len()
}

/// The whole evolution through, in this process: boot, the background work, switch, contract.
pub async fn evolve_to_the_end(evolver: Evolver) {
    let evolution = evolver.boot().await.unwrap();
    evolution.wait().await.unwrap();
    evolution.switch().await.unwrap();
    evolution.contract().await.unwrap();
}

/// The end state a campaign must reach, whatever struck it: every step at its last phase, each
/// phase done once, no INVALID index, every row as written last, and the catalog of
/// [`TABLES`] as on a database evolved without any failure. Returns the rows compared.
pub async fn assert_evolved_as_planned(
    pool: &PgPool,
    plans: &[pgevolve::Plan],
    log: &Log,
) -> usize {
    use super::campaign;
    campaign::assert_every_step_at_its_last_phase(pool, plans).await;
    campaign::assert_each_phase_done_once(pool, plans, Phase::Contract, existed).await;
    campaign::assert_no_invalid_index(pool).await;
    let compared = assert_every_row(pool, ROWS, log).await;
    let reference = campaign::reference_catalog(
        &TABLES,
        async |p| seed(p, 100).await,
        async |p| evolve_to_the_end(evolver(p)).await,
    )
    .await;
    assert_eq!(
        campaign::catalog_of(pool, &TABLES).await,
        reference,
        "the catalog differs from a database evolved without failures"
    );
    compared
}
