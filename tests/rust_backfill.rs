//! Backfills computed in Rust (`#[evolve(backfill_with = "f", inputs(..))]`) under a rolling
//! deploy: old-build writers (raw SQL on the old columns, from an instance whose build does not
//! know the step) and new-build writers (accessors, writing values of their own that differ from
//! what the function computes) run while the column is expanded and backfilled; the old build
//! leaves, validate drains what it wrote, the new writers go on through contract. At the end
//! every row holds what the function computes from its final inputs, or what the new build
//! wrote last. Then the kill tests: a child SIGKILLed mid-walk, and one killed inside a batch's
//! transaction, and a reboot that finishes with no row wrong.

use pgevolve_test_support as support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgevolve::__private::{Coordinator, CoordinatorOptions, PhaseRegistry};
use pgevolve::{BackfillOptions, DeployWindow, Evolver, Phase};
use sqlx::PgPool;
use support::child::{self, ChildProcess};
use support::{catalog_snapshot, database};
use tokio::task::JoinHandle;

/// The function the new column is computed with.
pub mod fill {
    /// The lowercased email with the length of the name: depends on both inputs.
    pub fn contact_key(email: String, name: String) -> String {
        format!("{}#{}", email.to_lowercase(), name.chars().count())
    }

    /// The row whose id this holds makes [`contact_key_or_panic`] panic (0: none).
    pub static PANIC_ON: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

    /// [`contact_key`], with a bug: panics on the name of the row `PANIC_ON` names.
    pub fn contact_key_or_panic(email: String, name: String) -> String {
        let bad = PANIC_ON.load(std::sync::atomic::Ordering::SeqCst);
        if bad != 0 && name == format!("Name {bad}") {
            panic!("no key for {name}");
        }
        contact_key(email, name)
    }
}

/// The same column, computed by a function that can panic.
mod touchy {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "contacts")]
    pub struct Contact {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: String,
        pub email: String,
        #[evolve(
            backfill_with = "crate::fill::contact_key_or_panic",
            inputs("email", "name")
        )]
        pub contact_key: String,
    }
}

mod people {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "contacts")]
    pub struct Contact {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: String,
        pub email: String,
        /// Computed in Rust for existing rows and rows old builds write.
        #[evolve(backfill_with = "crate::fill::contact_key", inputs("email", "name"))]
        pub contact_key: String,
    }
}

use people::Contact;

const ROWS: i64 = 20_000;

/// The table of the tests that kill a walk with no writer running: the child is killed after
/// 3,000 rows (batches of 300), well before this, and the next boot walks the rest.
const KILLED_ROWS: i64 = 10_000;

async fn create_table(pool: &PgPool, rows: i64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE contacts (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
         INSERT INTO contacts SELECT g, 'Name ' || g, 'User' || g || '@Example.COM' FROM generate_series(1, {rows}) g;
         ANALYZE contacts;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

fn small_batches() -> BackfillOptions {
    BackfillOptions {
        initial_batch_size: 200,
        max_batch_size: 400,
        pause: Duration::from_millis(5),
        ..BackfillOptions::default()
    }
}

/// An old build's writer: inserts rows above `base` and changes the inputs of existing rows,
/// never naming the new column.
fn old_writer(pool: &PgPool, lane: i64, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            n += 1;
            let id = 1_000_000 * (lane + 1) + n as i64;
            sqlx::query("INSERT INTO contacts (id, name, email) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(format!("Old {n}"))
                .bind(format!("OLD{n}@Lane{lane}.org"))
                .execute(&pool)
                .await
                .unwrap();
            // Any existing row, including ones the backfill already computed or the new build wrote.
            let target = 1 + (n as i64 * 7919 + lane * 13) % ROWS;
            sqlx::query("UPDATE contacts SET email = $2, name = name || 'x' WHERE id = $1")
                .bind(target)
                .bind(format!("Changed{n}@OLD.example"))
                .execute(&pool)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    })
}

/// A new build's writer: inserts rows of its own with values the function would not compute,
/// and updates existing rows (ids ≡ 0 mod 3) through the accessors, sometimes with a value of
/// its own, sometimes writing back what it read. Records every value it wrote.
fn new_writer(
    pool: &PgPool,
    lane: i64,
    stop: Arc<AtomicBool>,
    wrote: Arc<Mutex<HashMap<i64, String>>>,
) -> JoinHandle<u64> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            n += 1;
            let id = 10_000_000 * (lane + 1) + n as i64;
            let row = Contact {
                id,
                name: format!("New {n}"),
                email: format!("NEW{n}@lane{lane}.org"),
                contact_key: format!("chosen by the new build {id}"),
            };
            row.insert(&pool).await.unwrap();
            wrote.lock().unwrap().insert(id, row.contact_key.clone());
            // Lanes update disjoint rows: lane 0 ids ≡ 0 mod 6, lane 1 ids ≡ 3 mod 6.
            let target = 3 * lane + 6 * ((n as i64 * 104_729) % (ROWS / 6));
            if let Some(mut found) = Contact::find(&target, &pool).await.unwrap() {
                if n.is_multiple_of(2) {
                    found.contact_key = format!("rewritten {target} #{n}");
                }
                found.update(&pool).await.unwrap();
                wrote
                    .lock()
                    .unwrap()
                    .insert(target, found.contact_key.clone());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    })
}

/// A reader: rows no new writer touches (ids ≡ 1 mod 3) always read as the function of the
/// inputs read with them, computed or not yet.
fn reader(pool: &PgPool, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Acquire) {
            n += 1;
            let id = 1 + 3 * ((n as i64 * 7907) % (ROWS / 3));
            let found = Contact::find(&id, &pool).await.unwrap().unwrap();
            assert_eq!(
                found.contact_key,
                fill::contact_key(found.email.clone(), found.name.clone()),
                "a row the new build never wrote reads as the function of its inputs: {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        n
    })
}

/// Every row holds what the new build wrote last, or else what the function computes from its
/// final inputs; none is NULL.
async fn compare_every_row(pool: &PgPool, wrote: &HashMap<i64, String>) -> usize {
    let rows: Vec<(i64, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, name, email, contact_key FROM contacts ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut wrong = Vec::new();
    for (id, name, email, key) in &rows {
        let expected = match wrote.get(id) {
            Some(v) => v.clone(),
            None => fill::contact_key(email.clone(), name.clone()),
        };
        if key.as_deref() != Some(expected.as_str()) {
            wrong.push(format!("{id}: {key:?}, expected {expected:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows wrong, e.g. {:#?}",
        wrong.len(),
        rows.len(),
        &wrong[..wrong.len().min(10)]
    );
    rows.len()
}

async fn phase(evolution: &pgevolve::Evolution) -> Phase {
    evolution
        .status()
        .await
        .unwrap()
        .iter()
        .find(|s| s.description.contains("computed in Rust"))
        .map(|s| s.phase)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_and_new_writers_through_every_phase_leave_no_row_wrong() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(30).await;
    create_table(&pool, ROWS).await;

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Contact>()
        .backfill_options(small_batches())
        .boot()
        .await
        .unwrap();
    // The old build's instance: registered, knows none of this build's steps, so validate
    // waits for it to leave (the end of the rolling deploy).
    let old_instance = Coordinator::start(
        &pool,
        "pgevolve",
        "old build",
        Vec::new(),
        CoordinatorOptions::default().registry(Arc::new(PhaseRegistry::default())),
    )
    .await;

    let (stop_old, stop_new) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let wrote = Arc::new(Mutex::new(HashMap::new()));
    let old: Vec<_> = (0..2)
        .map(|lane| old_writer(&pool, lane, stop_old.clone()))
        .collect();
    let new: Vec<_> = (0..2)
        .map(|lane| new_writer(&pool, lane, stop_new.clone(), wrote.clone()))
        .collect();
    let readers = reader(&pool, stop_new.clone());

    // The old build writes through expand and the whole backfill, and a while after it.
    let started = std::time::Instant::now();
    while phase(&evolution).await < Phase::Backfill {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the backfill never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        phase(&evolution).await,
        Phase::Backfill,
        "validate waits while an instance of the old build runs"
    );
    let nulls: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE contact_key IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    stop_old.store(true, Ordering::Release);
    let mut old_writes = 0;
    for w in old {
        old_writes += w.await.unwrap();
    }
    old_instance.stop().await;
    println!(
        "old build: {old_writes} inserts and input changes; {nulls} rows without a value when it left"
    );

    // Validate drains what the old build left, then the new build alone goes on to contract.
    evolution.wait().await.unwrap();
    assert_eq!(phase(&evolution).await, Phase::Validate);
    evolution.contract().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_new.store(true, Ordering::Release);
    let mut new_writes = 0;
    for w in new {
        new_writes += w.await.unwrap();
    }
    let reads = readers.await.unwrap();
    assert!(old_writes > 50 && new_writes > 50 && reads > 50);

    let wrote = wrote.lock().unwrap().clone();
    let rows = compare_every_row(&pool, &wrote).await;
    println!(
        "compared {rows} rows; new build wrote {} of them",
        wrote.len()
    );
    let columns = catalog_snapshot(&pool, "contacts").await;
    assert!(
        columns
            .iter()
            .any(|c| c == "column contact_key text notnull=true default="),
        "{columns:#?}"
    );
    assert!(
        !columns.iter().any(|c| c.contains("pgevolve_")),
        "contract dropped the marker, the triggers and the check: {columns:#?}"
    );
}

/// The child of the kill tests: boots, walks, reports its progress until killed. Not a test in a
/// normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_backfill_child_process() {
    let Some((_, url)) = child::child_spec() else {
        return;
    };
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Contact>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 300,
            max_batch_size: 300,
            pause: Duration::from_millis(10),
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    child::report_progress_forever(&evolution).await;
}

async fn step_row(pool: &PgPool) -> (Option<Vec<String>>, i64) {
    sqlx::query_as(
        "SELECT checkpoint, rows_done FROM pgevolve.steps WHERE kind = 'add_computed_column'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The reason of the walk's recorded health pause, if any.
async fn health_pause(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar(
        "SELECT p.reason FROM pgevolve.health_pauses p \
         JOIN pgevolve.steps s ON s.id = p.step_id WHERE s.kind = 'add_computed_column'",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn with_value(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM contacts WHERE contact_key IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// After a kill: old-build writes while nothing runs, then a new process finishes, and every
/// row holds what the function computes from its final inputs.
async fn old_writes_then_finish(pool: &PgPool) {
    sqlx::raw_sql(
        "INSERT INTO contacts SELECT g, 'Late ' || g, 'LATE' || g || '@x.org' FROM generate_series(900001, 900100) g;
         UPDATE contacts SET email = 'Moved' || id || '@Y.ORG' WHERE id % 97 = 0;",
    )
    .execute(pool)
    .await
    .unwrap();
    // The dead child's heartbeat expires after 2 s (not the default 10 s): the contract stops
    // waiting for its acknowledgement then.
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(Duration::from_secs(2), Duration::from_secs(60))
        .model::<Contact>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    assert_eq!(
        compare_every_row(pool, &HashMap::new()).await as i64,
        KILLED_ROWS + 100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_killed_midway_resumes_from_its_checkpoint_with_no_row_wrong() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(10).await;
    create_table(&pool, KILLED_ROWS).await;

    let mut first = ChildProcess::start("rust_backfill_child_process", "walk", db.url(), None);
    let done_at_crash = first.progress_at_least(3_000);
    first.kill();
    child::until_no_advisory_lock(&pool).await;

    let (checkpoint, committed) = step_row(&pool).await;
    let checkpoint = checkpoint.expect("a checkpoint was committed with the batches");
    assert!(checkpoint[0].parse::<i64>().unwrap() >= 3_000 - 300);
    assert!(
        done_at_crash <= committed && committed < KILLED_ROWS,
        "the kill came midway: {done_at_crash} reported, {committed} committed"
    );
    assert_eq!(
        with_value(&pool).await,
        committed,
        "the rows with a value are exactly those the committed checkpoint counts"
    );
    old_writes_then_finish(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_killed_inside_a_batch_writes_nothing_of_it() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(10).await;
    create_table(&pool, KILLED_ROWS).await;

    // Killed after the batch's write ran, before its transaction committed.
    let first = ChildProcess::paused_at(
        "rust_backfill_child_process",
        "batch",
        db.url(),
        "computed-batch",
    );
    first.kill();
    child::until_no_advisory_lock(&pool).await;
    assert_eq!(step_row(&pool).await, (None, 0), "no checkpoint moved");
    assert_eq!(with_value(&pool).await, 0, "no value of the batch stayed");
    old_writes_then_finish(&pool).await;
}

/// An abort mid-walk, with old and new writers running, puts the catalog back as it was before
/// expand; every row the writers wrote stays (with its inputs), and the accessors, back on the
/// old shape, compute the value of every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_mid_walk_restores_the_catalog_and_keeps_every_write() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(20).await;
    create_table(&pool, ROWS).await;
    let before = catalog_snapshot(&pool, "contacts").await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Contact>()
        .backfill_options(small_batches())
        .boot()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let wrote = Arc::new(Mutex::new(HashMap::new()));
    let old = old_writer(&pool, 0, stop.clone());
    let new = new_writer(&pool, 0, stop.clone(), wrote.clone());
    let step = loop {
        let status = evolution.status().await.unwrap();
        let step = status
            .into_iter()
            .find(|s| s.description.contains("computed in Rust"))
            .unwrap();
        if step.rows_done > 2_000 {
            break step;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(step.phase, Phase::Expand, "aborted mid-walk");
    evolution.abort(&step.id).await.unwrap();
    stop.store(true, Ordering::Release);
    old.await.unwrap();
    new.await.unwrap();
    assert_eq!(phase(&evolution).await, Phase::Aborted);
    assert_eq!(catalog_snapshot(&pool, "contacts").await, before);
    // Back on the old shape, the accessors compute the value of every row from its inputs.
    for found in Contact::fetch_all(&pool).await.unwrap() {
        assert_eq!(
            found.contact_key,
            fill::contact_key(found.email.clone(), found.name.clone())
        );
    }
    let inserted: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE id > $1")
        .bind(ROWS)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(inserted > 0, "the writers' rows stay");
}

/// An abort while validate waits for an old build's instance stops the wait within seconds
/// (the abort is recorded while the old instance still runs), not at the acknowledgement
/// deadline; the abort's own DDL then waits for that instance like every abort, and undoes the
/// step once it has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_while_validate_waits_for_an_old_build_is_prompt() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(20).await;
    create_table(&pool, 2_000).await;
    let before = catalog_snapshot(&pool, "contacts").await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Contact>()
        .boot()
        .await
        .unwrap();
    let old_instance = Coordinator::start(
        &pool,
        "pgevolve",
        "old build",
        Vec::new(),
        CoordinatorOptions::default().registry(Arc::new(PhaseRegistry::default())),
    )
    .await;
    let started = std::time::Instant::now();
    while phase(&evolution).await < Phase::Backfill {
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let step = evolution
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.description.contains("computed in Rust"))
        .unwrap();
    let asked = std::time::Instant::now();
    let abort = {
        let id = step.id.clone();
        tokio::spawn(async move { evolution.abort(&id).await.map(|()| evolution) })
    };
    loop {
        let recorded: String = sqlx::query_scalar(
            "SELECT phase FROM pgevolve.steps WHERE kind = 'add_computed_column'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if recorded == "aborted" {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "the walk still waits for the old build {:?} after the abort was asked",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    old_instance.stop().await;
    let evolution = abort.await.unwrap().unwrap();
    assert_eq!(phase(&evolution).await, Phase::Aborted);
    assert_eq!(catalog_snapshot(&pool, "contacts").await, before);
}

/// The walks follow the database's health like SQL backfills: a transaction held open past the
/// bound pauses them (no row is written meanwhile; the pause is recorded for `pgevolve status`
/// and journaled), and they finish once it commits (the resume journaled, the record gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_pauses_recorded_and_journaled_while_an_old_transaction_holds_the_xmin_horizon() {
    if child::in_child() {
        return;
    }
    use sqlx::Connection;
    // Batches of 100 rows at least 20 ms apart walk at most 5,000 rows a second on any machine,
    // and the pause registers about 1.3 s after the snapshot (the 1 s bound, the 200 ms
    // checks): the walk is still under way then.
    const XMIN_ROWS: i64 = 15_000;
    let (db, pool) = database(10).await;
    create_table(&pool, XMIN_ROWS).await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Contact>()
        .backfill_options(
            BackfillOptions {
                initial_batch_size: 100,
                max_batch_size: 100,
                pause: Duration::from_millis(20),
                ..BackfillOptions::default()
            }
            .health(
                pgevolve::HealthBounds::off()
                    .oldest_transaction(Duration::from_secs(1))
                    .interval(Duration::from_millis(200)),
            ),
        )
        .boot()
        .await
        .unwrap();
    while with_value(&pool).await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut snapshot = holder.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *snapshot)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM contacts")
        .execute(&mut *snapshot)
        .await
        .unwrap();
    // The walk records the pause before it waits (between two batches): polled, not slept for.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while health_pause(&pool).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the walk never paused on the transaction held open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paused_at = with_value(&pool).await;
    assert!(paused_at < XMIN_ROWS, "the walk was still under way");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        with_value(&pool).await,
        paused_at,
        "no batch while the transaction is open"
    );
    assert_eq!(
        health_pause(&pool).await.as_deref(),
        Some("xmin_horizon"),
        "the pause is recorded for pgevolve status"
    );
    snapshot.commit().await.unwrap();
    evolution.wait().await.unwrap();
    let journal: Vec<String> = sqlx::query_scalar(
        "SELECT j.event FROM pgevolve.journal j JOIN pgevolve.steps s ON s.id = j.step_id \
         WHERE s.kind = 'add_computed_column' AND j.event LIKE 'health %' ORDER BY j.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(journal, ["health paused", "health resumed"]);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pgevolve.health_pauses")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        left, 0,
        "the record of the pause is gone once the walk goes on"
    );
    evolution.contract().await.unwrap();
    assert_eq!(
        compare_every_row(&pool, &HashMap::new()).await as i64,
        XMIN_ROWS
    );
}

/// A function that panics does not unwind through the engine: the background work ends with an
/// error naming the step, the function and the batch's keys, nothing of that batch is written,
/// the service's accessors keep working, and a boot with the function fixed finishes the walk
/// from the checkpoint with every row right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_function_stops_the_walk_with_an_error_naming_the_batch_and_writes_nothing_of_it()
 {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(10).await;
    create_table(&pool, 5_000).await;
    fill::PANIC_ON.store(3_001, Ordering::SeqCst);
    let options = BackfillOptions {
        initial_batch_size: 100,
        max_batch_size: 100,
        pause: Duration::from_millis(1),
        ..BackfillOptions::default()
    };
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<touchy::Contact>()
        .backfill_options(options.clone())
        .boot()
        .await
        .unwrap();
    let err = evolution.wait().await.unwrap_err().to_string();
    for expected in [
        "crate::fill::contact_key_or_panic",
        "panicked on the batch of rows with keys 3001 to 3100",
        "no key for Name 3001",
        "table public.contacts",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from: {err}");
    }
    let written: Vec<(i64, i64)> =
        sqlx::query_as("SELECT min(id), max(id) FROM contacts WHERE contact_key IS NOT NULL")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(written, [(1, 3_000)], "rows before the batch only");
    // The service still serves through the new build's accessors.
    let inserted = touchy::Contact {
        id: 9_001,
        name: "Written".into(),
        email: "While@Stopped.ORG".into(),
        contact_key: "set by the new build".into(),
    };
    inserted.insert(&pool).await.unwrap();

    fill::PANIC_ON.store(0, Ordering::SeqCst);
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<touchy::Contact>()
        .backfill_options(options)
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    let wrote = HashMap::from([(9_001, "set by the new build".to_string())]);
    assert_eq!(compare_every_row(&pool, &wrote).await, 5_001);
}

/// The kill test under a rolling deploy: an old build writes (raw SQL, from a registered
/// instance) while a child walks, through its SIGKILL and the next leader's walk; the new build
/// writes through the accessors from the reboot on; the old build leaves, validate drains, and
/// every row is compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_walk_killed_while_old_and_new_builds_write_leaves_no_row_wrong() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(20).await;
    // The rows the writers update (ids up to `ROWS`); the child is killed after 3,000.
    create_table(&pool, ROWS).await;
    let old_instance = Coordinator::start(
        &pool,
        "pgevolve",
        "old build",
        Vec::new(),
        CoordinatorOptions::default().registry(Arc::new(PhaseRegistry::default())),
    )
    .await;
    let (stop_old, stop_new) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let old: Vec<_> = (0..2)
        .map(|lane| old_writer(&pool, lane, stop_old.clone()))
        .collect();

    let mut first = ChildProcess::start("rust_backfill_child_process", "walk", db.url(), None);
    first.progress_at_least(3_000);
    first.kill();
    child::until_no_advisory_lock(&pool).await;
    assert!(
        step_row(&pool).await.0.is_some(),
        "a checkpoint was committed"
    );

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Contact>()
        .backfill_options(small_batches())
        .boot()
        .await
        .unwrap();
    let wrote = Arc::new(Mutex::new(HashMap::new()));
    let new: Vec<_> = (0..2)
        .map(|lane| new_writer(&pool, lane, stop_new.clone(), wrote.clone()))
        .collect();
    let started = std::time::Instant::now();
    while phase(&evolution).await < Phase::Backfill {
        assert!(started.elapsed() < Duration::from_secs(120));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_old.store(true, Ordering::Release);
    for w in old {
        assert!(w.await.unwrap() > 0);
    }
    old_instance.stop().await;
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    stop_new.store(true, Ordering::Release);
    for w in new {
        assert!(w.await.unwrap() > 0);
    }
    let wrote = wrote.lock().unwrap().clone();
    compare_every_row(&pool, &wrote).await;
}

/// The walk keeps to its WAL budget (`BackfillOptions::wal_budget`), as a SQL pass does: on a
/// cluster of its own (no other test's WAL in the measure), a walk over rows of about 1.5 kB,
/// each of whose updates writes a new row version, takes at least half of the WAL written over
/// the budget (unpaced it takes a fraction of that), and journals that the budget set its pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_keeps_to_its_wal_budget() {
    if child::in_child() {
        return;
    }
    let (_cluster, pool) = support::wal::own_cluster(10).await;
    sqlx::raw_sql(
        "CREATE TABLE contacts (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL)
           WITH (autovacuum_enabled = off);
         INSERT INTO contacts SELECT g, 'Name ' || g || repeat('x', 1500), 'User' || g || '@Example.COM'
           FROM generate_series(1, 1500) g;
         ANALYZE contacts;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let budget = 512 << 10;
    let options = BackfillOptions {
        initial_batch_size: 100,
        min_batch_size: 50,
        max_batch_size: 200,
        batch_timeout: Duration::from_secs(5),
        ..BackfillOptions::default()
    }
    .wal_budget(budget)
    .health(pgevolve::HealthBounds::off());
    let before = support::wal::Before::now(&pool).await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Contact>()
        .backfill_options(options)
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let spent = before.spent(&pool).await;
    let unfilled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM contacts WHERE contact_key IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unfilled, 0);
    spent.assert_kept_to(&pool, budget, " rows wrote ").await;
}
