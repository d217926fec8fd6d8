//! NOT NULL on (`set_not_null`, with a backfill for the NULL rows), NOT NULL off
//! (`drop_not_null`) and a changed default (`set_default`) on a live table while an "old build"
//! (raw SQL in the old shape: `priority` may be NULL, `assignee` never is, `state` always
//! written) and the "new build" (the generated accessors) write the same rows: every value
//! written is kept, every NULL of `priority` gets the backfill's value, no NULL reaches
//! `assignee` while the old build may read it. Aborts before retire leave the catalog as it was
//! and every write; a child process SIGKILLed at each phase is recovered by the next boot.

use pgevolve_test_support as support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgevolve::{BackfillOptions, DeployWindow, ErrorKind, Evolve, Evolver, Phase};
use sqlx::PgPool;
use support::child::{self, ChildProcess};
use support::{catalog_snapshot, database};

const ROWS: i64 = 3_000;

/// The new build: `priority` required (its NULL rows get `'p' || id`), `assignee` optional, and
/// `state` defaults to `'open'` instead of `'new'`.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "tickets")]
pub struct Ticket {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(set_not_null, backfill = "'p' || id")]
    pub priority: String,
    #[evolve(drop_not_null)]
    pub assignee: Option<String>,
    #[evolve(set_default = "'open'")]
    pub state: String,
}

/// The same change without the default (abort tests: a changed default is done at boot).
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "tickets")]
pub struct TicketNoDefault {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(set_not_null, backfill = "'p' || id")]
    pub priority: String,
    #[evolve(drop_not_null)]
    pub assignee: Option<String>,
    pub state: String,
}

/// `priority` required with no backfill: the struct promises that no row is NULL.
#[derive(Evolve, Debug)]
#[evolve(table = "tickets")]
#[allow(dead_code)]
struct PromisedOnly {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(set_not_null)]
    priority: String,
    assignee: String,
}

/// `priority` declared as a new column by mistake (`backfill` without `set_not_null`).
#[derive(Evolve, Debug)]
#[evolve(table = "tickets")]
#[allow(dead_code)]
struct NewColumnByMistake {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(backfill = "'p' || id")]
    priority: String,
    assignee: String,
}

/// `tickets` as the old build made it: every third `priority` NULL.
async fn seed(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE tickets (id bigint PRIMARY KEY, priority text, assignee text NOT NULL,
                               state text NOT NULL DEFAULT 'new');
         INSERT INTO tickets SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE 's' || g END, 'a' || g, 'new'
           FROM generate_series(1, {ROWS}) g;
         ANALYZE tickets;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// A row as written: `priority` `None` where a NULL was written.
type Row = (Option<String>, Option<String>, String);

/// What each row must hold, and one lock per stripe of ids so that the old and new builds write
/// the same rows but never at the same instant (the log then knows which write came last).
#[derive(Clone)]
struct Log {
    rows: Arc<Mutex<HashMap<i64, Row>>>,
    stripes: Arc<Vec<tokio::sync::Mutex<()>>>,
}

impl Log {
    fn seeded() -> Log {
        Log {
            rows: Arc::new(Mutex::new(
                (1..=ROWS)
                    .map(|g| {
                        let priority = (g % 3 != 0).then(|| format!("s{g}"));
                        (g, (priority, Some(format!("a{g}")), "new".to_string()))
                    })
                    .collect(),
            )),
            stripes: Arc::new((0..64).map(|_| tokio::sync::Mutex::new(())).collect()),
        }
    }

    fn stripe(&self, id: i64) -> &tokio::sync::Mutex<()> {
        &self.stripes[(id % 64) as usize]
    }
}

use support::TaskWriter as Writer;

/// The id a writer touches at its `n`th write: a seeded row (shared by every writer), or on
/// every fifth write a new row of its own.
fn target(lane: i64, n: i64) -> (i64, bool) {
    if n % 5 == 0 {
        (1_000_000 * (lane + 1) + n, true)
    } else {
        (1 + (n * 37 + lane * 11) % ROWS, false)
    }
}

/// The old build: raw SQL, `priority` NULL on every other write, `assignee` never NULL.
fn old_writer(pool: &PgPool, lane: i64, log: Log) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let (id, insert) = target(lane, n);
            let priority = (n % 2 == 0).then(|| format!("old{lane}-{n}"));
            let assignee = format!("olda{lane}-{n}");
            let state = format!("olds{n}");
            let _row = log.stripe(id).lock().await;
            let sql = if insert {
                "INSERT INTO tickets (id, priority, assignee, state) VALUES ($1, $2, $3, $4)"
            } else {
                "UPDATE tickets SET priority = $2, assignee = $3, state = $4 WHERE id = $1"
            };
            match sqlx::query(sql)
                .bind(id)
                .bind(&priority)
                .bind(&assignee)
                .bind(&state)
                .execute(&pool)
                .await
            {
                Ok(_) => {
                    let row = (priority, Some(assignee), state);
                    log.rows.lock().unwrap().insert(id, row);
                    ok += 1;
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// The new build: the accessors of `T` (find, change, update; insert), `assignee` written
/// `None` on every third write once `nulls` is set (after contract).
fn new_writer<T: TicketLike>(pool: &PgPool, lane: i64, log: Log, nulls: Arc<AtomicBool>) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let (id, insert) = target(lane, n);
            let priority = format!("new{lane}-{n}");
            let assignee =
                (!(nulls.load(Ordering::Relaxed) && n % 3 == 0)).then(|| format!("newa{lane}-{n}"));
            let _row = log.stripe(id).lock().await;
            let result = if insert {
                let row = (Some(priority), assignee, format!("news{n}"));
                T::make(id, &row).insert_row(&pool).await.map(|_| row)
            } else {
                match T::find_row(id, &pool).await {
                    Ok(Some(mut row)) => {
                        row.0 = Some(priority);
                        row.1 = assignee;
                        T::make(id, &row).update_row(&pool).await.map(|_| row)
                    }
                    Ok(None) => Err(format!("row {id} missing")),
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(row) => {
                    log.rows.lock().unwrap().insert(id, row);
                    ok += 1;
                }
                Err(e) => errors.push(e),
            }
        }
        (ok, errors)
    });
    Writer { stop, handle }
}

/// The two new-build structs, for one writer.
trait TicketLike: Sized + Send + 'static {
    fn make(id: i64, row: &Row) -> Self;
    fn find_row(
        id: i64,
        pool: &PgPool,
    ) -> impl std::future::Future<Output = Result<Option<Row>, String>> + Send;
    fn insert_row(
        &self,
        pool: &PgPool,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    fn update_row(
        &self,
        pool: &PgPool,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

macro_rules! ticket_like {
    ($t:ident) => {
        impl TicketLike for $t {
            fn make(id: i64, row: &Row) -> Self {
                $t {
                    id,
                    priority: row.0.clone().unwrap(),
                    assignee: row.1.clone(),
                    state: row.2.clone(),
                }
            }
            async fn find_row(id: i64, pool: &PgPool) -> Result<Option<Row>, String> {
                let found = $t::find(&id, pool).await.map_err(|e| e.to_string())?;
                Ok(found.map(|t| (Some(t.priority), t.assignee, t.state)))
            }
            async fn insert_row(&self, pool: &PgPool) -> Result<(), String> {
                self.insert(pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            async fn update_row(&self, pool: &PgPool) -> Result<(), String> {
                self.update(pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    };
}
ticket_like!(Ticket);
ticket_like!(TicketNoDefault);

async fn finish_all(writers: Vec<Writer>) -> u64 {
    let (mut ok, mut failures) = (0, Vec::new());
    for w in writers {
        let (n, errors) = w.finish().await;
        ok += n;
        failures.extend(errors);
    }
    assert!(
        failures.is_empty(),
        "{} failed writes, first: {:?}",
        failures.len(),
        failures.first()
    );
    ok
}

/// Every row of the table against the log. A NULL written to `priority` is the backfill's
/// value (`'p' || id`) wherever the trigger or the pass reached it; `filled`: every one of
/// them must have been reached.
async fn assert_rows_match(pool: &PgPool, log: &Log, filled: bool) {
    let actual: HashMap<i64, Row> = sqlx::query_as::<
        _,
        (i64, Option<String>, Option<String>, String),
    >("SELECT id, priority, assignee, state FROM tickets")
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, p, a, s)| (id, (p, a, s)))
    .collect();
    let expected = log.rows.lock().unwrap().clone();
    assert_eq!(actual.len(), expected.len(), "row count");
    for (id, (priority, assignee, state)) in &expected {
        let Some((p, a, s)) = actual.get(id) else {
            panic!("row {id} missing")
        };
        assert_eq!((a, s), (assignee, state), "assignee and state of row {id}");
        match priority {
            Some(want) => assert_eq!(p.as_ref(), Some(want), "priority of row {id}"),
            None => {
                let fill = format!("p{id}");
                let ok = p.as_ref() == Some(&fill) || (!filled && p.is_none());
                assert!(ok, "priority of row {id}: {p:?}, written NULL");
            }
        }
    }
}

async fn step_of(evolution: &pgevolve::Evolution, kind: &str) -> pgevolve::StepStatus {
    let id = evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| s.kind.name() == kind)
        .unwrap_or_else(|| panic!("no {kind} step"))
        .id;
    evolution
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("the {kind} step is not recorded"))
}

/// `attnotnull` and the default of a column.
async fn column(pool: &PgPool, name: &str) -> (bool, Option<String>) {
    sqlx::query_as(
        "SELECT attnotnull, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE attrelid = 'tickets'::regclass AND attname = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// pgevolve's helpers left on the table: check constraints and triggers.
async fn helpers(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_constraint WHERE conrelid = 'tickets'::regclass AND contype = 'c') \
              + (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tickets'::regclass AND NOT tgisinternal)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn slow_backfill() -> BackfillOptions {
    BackfillOptions {
        initial_batch_size: 100,
        max_batch_size: 100,
        pause: Duration::from_millis(20),
        ..BackfillOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_null_on_off_and_a_new_default_with_old_and_new_writers_keep_every_value() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(20).await;
    seed(&pool).await;
    let log = Log::seeded();
    let nulls = Arc::new(AtomicBool::new(false));
    let old: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&pool, lane, log.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Ticket>()
        .backfill_options(slow_backfill())
        .boot()
        .await
        .unwrap();
    // Expand: the default is the new one at once; NOT NULL is neither on nor off yet.
    assert_eq!(
        column(&pool, "state").await,
        (true, Some("'open'::text".into()))
    );
    assert!(!column(&pool, "priority").await.0);
    assert!(column(&pool, "assignee").await.0);
    // A row the pass has not reached reads the backfill's value through the accessors.
    let unfilled = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT max(id) FROM tickets WHERE priority IS NULL AND id <= $1",
    )
    .bind(ROWS)
    .fetch_one(&pool)
    .await
    .unwrap()
    .expect("rows the pass has not reached");
    let read = Ticket::find(&unfilled, &pool).await.unwrap().unwrap();
    assert_eq!(read.priority, format!("p{unfilled}"));
    // A writer that leaves `state` out gets the new default.
    let state: String = sqlx::query_scalar(
        "INSERT INTO tickets (id, priority, assignee) VALUES (9000000, NULL, 'x') RETURNING state",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(state, "open");
    sqlx::query("DELETE FROM tickets WHERE id = 9000000")
        .execute(&pool)
        .await
        .unwrap();

    let new: Vec<Writer> = (2..4)
        .map(|lane| new_writer::<Ticket>(&pool, lane, log.clone(), nulls.clone()))
        .collect();
    evolution.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        step_of(&evolution, "set_not_null").await.phase,
        Phase::Validate
    );
    assert_eq!(
        step_of(&evolution, "drop_not_null").await.phase,
        Phase::Expand
    );
    assert_eq!(
        step_of(&evolution, "set_default").await.phase,
        Phase::Expand
    );
    // NOT NULL off has not happened: a NULL the new build writes is refused, so old builds
    // never read one.
    let refused = Ticket {
        id: 9_000_001,
        priority: "x".into(),
        assignee: None,
        state: "x".into(),
    }
    .insert(&pool)
    .await
    .expect_err("assignee is still NOT NULL before contract");
    assert!(refused.to_string().contains("assignee"), "{refused}");

    // The old build is gone: contract may run.
    let mut ok = finish_all(old).await;
    evolution.contract().await.unwrap();
    assert!(column(&pool, "priority").await.0, "NOT NULL on at contract");
    assert!(
        !column(&pool, "assignee").await.0,
        "NOT NULL off at contract"
    );
    nulls.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    ok += finish_all(new).await;
    assert!(ok > 300, "only {ok} writes");
    assert_rows_match(&pool, &log, true).await;
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE assignee IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(none > 0, "the new build wrote NULL after contract");
    assert_eq!(helpers(&pool).await, 0, "no helper left");
    for kind in ["set_not_null", "drop_not_null", "set_default"] {
        let step = step_of(&evolution, kind).await;
        let last = if kind == "set_default" {
            Phase::Expand
        } else {
            Phase::Contract
        };
        assert_eq!(step.phase, last, "{kind}");
    }
    support::assert_reboot_changes_nothing::<Ticket>(&pool, "tickets").await;
}

#[derive(Debug, Clone, Copy)]
enum AbortAt {
    AfterExpand,
    MidBackfill,
    AfterValidate,
}

async fn abort_at(at: AbortAt) {
    let (_db, pool) = database(20).await;
    seed(&pool).await;
    let before = catalog_snapshot(&pool, "tickets").await;
    let log = Log::seeded();
    let nulls = Arc::new(AtomicBool::new(false));
    let old = old_writer(&pool, 0, log.clone());
    let evolution = Evolver::new(pool.clone())
        .model::<TicketNoDefault>()
        .backfill_options(slow_backfill())
        .boot()
        .await
        .unwrap();
    let new = new_writer::<TicketNoDefault>(&pool, 1, log.clone(), nulls);
    match at {
        AbortAt::AfterExpand => {}
        AbortAt::MidBackfill => loop {
            let step = step_of(&evolution, "set_not_null").await;
            if step.rows_done > 300 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        },
        AbortAt::AfterValidate => evolution.wait().await.unwrap(),
    }
    let expected = match at {
        AbortAt::AfterValidate => Phase::Validate,
        _ => Phase::Expand,
    };
    let set = step_of(&evolution, "set_not_null").await;
    assert_eq!(set.phase, expected, "{at:?}");
    let drop = step_of(&evolution, "drop_not_null").await;
    assert_eq!(drop.phase, Phase::Expand, "{at:?}");
    evolution.abort(&set.id).await.unwrap();
    evolution.abort(&drop.id).await.unwrap();
    assert_eq!(
        step_of(&evolution, "set_not_null").await.phase,
        Phase::Aborted
    );
    assert_eq!(
        step_of(&evolution, "drop_not_null").await.phase,
        Phase::Aborted
    );
    // Both builds go on writing after the abort; the new one still reads `priority` whole.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = finish_all(vec![old, new]).await;
    assert!(ok > 50, "only {ok} writes");
    assert_eq!(catalog_snapshot(&pool, "tickets").await, before, "{at:?}");
    assert_rows_match(&pool, &log, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_after_expand_mid_backfill_and_after_validate_restores_the_catalog_and_keeps_every_write()
 {
    if child::in_child() {
        return;
    }
    for at in [
        AbortAt::AfterExpand,
        AbortAt::MidBackfill,
        AbortAt::AfterValidate,
    ] {
        abort_at(at).await;
    }
}

#[tokio::test]
async fn a_missing_column_or_an_existing_one_declared_new_is_drift_and_nulls_without_a_backfill_are_refused()
 {
    if child::in_child() {
        return;
    }
    #[derive(Evolve, Debug)]
    #[evolve(table = "tickets")]
    #[allow(dead_code)]
    struct Promised {
        #[evolve(primary_key)]
        id: i64,
        #[evolve(set_not_null)]
        priority: String,
        assignee: String,
        #[evolve(set_not_null, backfill = "0")]
        missing: i64,
    }
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    let before = catalog_snapshot(&pool, "tickets").await;
    let err = Evolver::new(pool.clone())
        .model::<Promised>()
        .boot()
        .await
        .expect_err("a missing column is drift");
    let ErrorKind::Drift(problems) = err.kind() else {
        panic!("expected drift, got {err}")
    };
    let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("`set_not_null`") && messages[0].contains("missing"),
        "{messages:?}"
    );
    assert_eq!(catalog_snapshot(&pool, "tickets").await, before);

    // `backfill` alone declares a new column: over an existing one with values it is drift,
    // which names `set_not_null` (a new column's abort would drop it).
    let err = Evolver::new(pool.clone())
        .model::<NewColumnByMistake>()
        .boot()
        .await
        .expect_err("an existing column declared as a new one is drift");
    let ErrorKind::Drift(problems) = err.kind() else {
        panic!("expected drift, got {err}")
    };
    let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("#[evolve(set_not_null, backfill"),
        "{messages:?}"
    );
    assert_eq!(catalog_snapshot(&pool, "tickets").await, before);

    // Without a backfill the user promised no NULL: validation finds the seeded ones and says
    // how many, and nothing goes further.
    let evolution = Evolver::new(pool.clone())
        .model::<PromisedOnly>()
        .boot()
        .await
        .unwrap();
    let err = evolution
        .wait()
        .await
        .expect_err("NULL rows fail validation");
    assert!(
        err.to_string().contains(&format!(
            "{} rows still have NULL in column priority",
            ROWS / 3
        )),
        "{err}"
    );
    let null_write = sqlx::query("UPDATE tickets SET priority = NULL WHERE id = 1")
        .execute(&pool)
        .await
        .expect_err("the check refuses new NULLs");
    assert!(
        null_write
            .to_string()
            .contains("pgevolve_nn_tickets_priority"),
        "{null_write}"
    );
}

/// The child of the kill test: boots `Ticket` with a slow backfill and goes as far as its
/// scenario says, reporting where it is, until killed. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_null_child_process() {
    let Some((scenario, url)) = child::child_spec() else {
        return;
    };
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Ticket>()
        .backfill_options(slow_backfill())
        .boot()
        .await
        .unwrap();
    child::report("BOOTED");
    match scenario.as_str() {
        "backfill" => child::report_progress_forever(&evolution).await,
        "validate" => {
            evolution.wait().await.unwrap();
            child::report("VALIDATED");
        }
        "contract" => {
            evolution.wait().await.unwrap();
            child::report("VALIDATED");
            // The parent takes a lock on the table first, then says go: the contract retries
            // behind the lock until the process is killed.
            while !sqlx::query_scalar::<_, bool>("SELECT to_regclass('go_contract') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            evolution.contract().await.unwrap();
        }
        _ => {}
    }
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// Where the kill test kills its child, and the phase the store must show then.
async fn killed_at(scenario: &str) {
    let (db, pool) = database(10).await;
    seed(&pool).await;
    let log = Log::seeded();
    // A lock that keeps the child's contract waiting (and retrying) until it is killed.
    let mut blocker = None;
    let mut process = ChildProcess::start("not_null_child_process", scenario, db.url(), None);
    let recorded = match scenario {
        "expand" => {
            process.expect("BOOTED");
            Phase::Expand
        }
        "backfill" => {
            process.progress_at_least(500);
            Phase::Expand
        }
        "validate" => {
            process.expect("VALIDATED");
            Phase::Validate
        }
        "contract" => {
            process.expect("VALIDATED");
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("LOCK TABLE tickets IN ACCESS SHARE MODE")
                .execute(&mut *tx)
                .await
                .unwrap();
            blocker = Some(tx);
            sqlx::query("CREATE TABLE go_contract ()")
                .execute(&pool)
                .await
                .unwrap();
            // Retire recorded, the contract retrying behind the lock.
            while support::recorded_phase(&pool, "set_not_null").await != Some(Phase::Retire) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            Phase::Retire
        }
        _ => unreachable!(),
    };
    process.kill();
    drop(blocker);
    child::until_no_advisory_lock(&pool).await;
    assert_eq!(
        support::recorded_phase(&pool, "set_not_null").await,
        Some(recorded),
        "{scenario}"
    );
    assert!(
        !column(&pool, "priority").await.0,
        "{scenario}: NOT NULL not on before contract"
    );
    assert!(
        column(&pool, "assignee").await.0,
        "{scenario}: NOT NULL not off before contract"
    );
    // What the dead process left takes writes: a NULL gets the backfill's value.
    sqlx::query("UPDATE tickets SET priority = NULL WHERE id = 2")
        .execute(&pool)
        .await
        .unwrap();
    log.rows.lock().unwrap().get_mut(&2).unwrap().0 = None;

    // The dead child's heartbeat expires after 2 s (not the default 10 s): the contract stops
    // waiting for its acknowledgement then.
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(Duration::from_secs(2), Duration::from_secs(60))
        .model::<Ticket>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    assert!(column(&pool, "priority").await.0, "{scenario}");
    assert!(!column(&pool, "assignee").await.0, "{scenario}");
    assert_eq!(
        column(&pool, "state").await.1.as_deref(),
        Some("'open'::text")
    );
    assert_eq!(helpers(&pool).await, 0, "{scenario}: no helper left");
    // Every NULL got its value; every other value is as seeded or written.
    assert_rows_match(&pool, &log, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_at_expand_backfill_validate_or_contract_is_recovered_by_the_next_boot() {
    if child::in_child() {
        return;
    }
    for scenario in ["expand", "backfill", "validate", "contract"] {
        killed_at(scenario).await;
    }
}

/// The contract's `SET NOT NULL` does not scan the table: the validated check is PostgreSQL's
/// proof. Shown on the server at hand by a check marked validated by hand (a superuser's
/// catalog update) over a table that still has NULL rows: a scan would find them and fail.
#[tokio::test]
async fn contract_sets_not_null_through_the_validated_check_without_a_scan() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<PromisedOnly>()
        .boot()
        .await
        .unwrap();
    // An update of pg_constraint invalidates no cached relation (only a foreign key's would):
    // a harmless change of a column does, so every session sees the check as validated.
    sqlx::raw_sql(
        "UPDATE pg_constraint SET convalidated = true \
         WHERE conrelid = 'tickets'::regclass AND conname LIKE 'pgevolve_nn_%'; \
         ALTER TABLE tickets ALTER COLUMN assignee SET STATISTICS 100",
    )
    .execute(&pool)
    .await
    .unwrap();
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    assert!(column(&pool, "priority").await.0, "NOT NULL on");
    // `num_nulls`, not `IS NULL`: PostgreSQL 17 and later drop `IS NULL` on a NOT NULL column.
    let nulls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tickets WHERE num_nulls(priority) = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(nulls, ROWS / 3, "no scan saw the NULL rows");
}
