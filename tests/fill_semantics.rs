//! Who a backfill expression applies to: only rows written by code that does not know the
//! column (inserts that leave it NULL, old builds' updates of the expression's inputs). A value
//! a build that knows the column wrote is never replaced, not when it writes the same value
//! again, not by later updates of old builds, not by the backfill pass, restarted or not.
//!
//! Each test uses its own table: the accessors' phase registry is per process and per model.

use pgevolve_test_support as support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgevolve::{BackfillOptions, DeployWindow, Evolver, Phase, StepKind};
use sqlx::PgPool;
use support::{catalog_snapshot, database};
use tokio::task::JoinHandle;

mod plans {
    use pgevolve::Evolve;

    /// The new build of `accounts`: `plan` is new, `'free'` for rows old builds write.
    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "accounts")]
    pub struct Account {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: String,
        #[evolve(backfill = "'free'")]
        pub plan: String,
    }
}

/// The scenario of the bug: a new build inserts `pro`, then calls `update()` after changing
/// another field (which writes `plan = 'pro'` again): the row must still say `pro`, and again
/// after a second update writing the same value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_new_build_wrote_survives_its_own_updates_that_write_it_again() {
    use plans::Account;
    let (_db, pool) = database(10).await;
    sqlx::raw_sql(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO accounts SELECT g, 'old ' || g FROM generate_series(1, 100) g;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Account>()
        .boot()
        .await
        .unwrap();

    let mut account = Account {
        id: 1_000,
        name: "Ada".into(),
        plan: "pro".into(),
    };
    account.insert(&pool).await.unwrap();
    account.name = "Ada Lovelace".into();
    account.update(&pool).await.unwrap();
    let found = Account::find(&1_000, &pool).await.unwrap().unwrap();
    assert_eq!(found.plan, "pro", "an update() writing the same plan again");
    found.update(&pool).await.unwrap();
    let plan: String = sqlx::query_scalar("SELECT plan FROM accounts WHERE id = 1000")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        plan, "pro",
        "a second update() writing the same value again"
    );

    // The same on a row that existed before expand: the new build sets `pro`, then writes it
    // again while changing the name.
    let mut old_row = Account::find(&7, &pool).await.unwrap().unwrap();
    assert_eq!(old_row.plan, "free");
    old_row.plan = "pro".into();
    old_row.update(&pool).await.unwrap();
    old_row.name = "renamed".into();
    old_row.update(&pool).await.unwrap();
    assert_eq!(Account::find(&7, &pool).await.unwrap().unwrap().plan, "pro");

    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    let plans: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, plan FROM accounts WHERE plan <> 'free' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(plans, [(7, "pro".to_string()), (1_000, "pro".to_string())]);
}

mod members {
    use pgevolve::Evolve;

    /// The new build of `members`: `email_key` is new, `lower(email)` for rows old builds write.
    /// This build writes values the expression can never produce (`N:...`, upper case).
    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "members")]
    pub struct Member {
        #[evolve(primary_key)]
        pub id: i64,
        pub email: String,
        pub name: String,
        #[evolve(backfill = "lower(email)")]
        pub email_key: String,
    }
}

const MEMBERS: i64 = 30_000;
/// Rows both kinds of writers update, spread over the whole key range so that the pass meets
/// them all along its walk.
const HOT: i64 = 3_000;

/// What the writers did to one row, in commit order (a row's writes are serialized by the
/// test's row locks, held across the statement and the record).
#[derive(Debug, Clone, Default)]
struct RowRecord {
    /// The value the last writer that knows the column wrote, if any wrote.
    known: Option<String>,
    /// An old build updated the expression's input after a knowing writer set the value.
    old_after_known: bool,
    /// An old build updated the expression's input.
    old_updates: u32,
}

type Record = Arc<Mutex<HashMap<i64, RowRecord>>>;
type RowLocks = Arc<Vec<tokio::sync::Mutex<()>>>;

fn row_lock(locks: &RowLocks, id: i64) -> &tokio::sync::Mutex<()> {
    &locks[(id as usize) % locks.len()]
}

fn hot_id(n: i64, lane: i64) -> i64 {
    1 + ((n * 7919 + lane * 104_729) % HOT) * (MEMBERS / HOT)
}

/// An old build: plain SQL that never names `email_key`. Changes emails (the expression's
/// input) of hot rows, sometimes only names, and inserts rows of its own.
fn old_member_writer(
    pool: &PgPool,
    lane: i64,
    record: Record,
    locks: RowLocks,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(u64, Vec<String>)> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let email = format!("Old{lane}.{n}@Example.ORG");
            let (id, result, input_changed) = match n % 5 {
                0 => {
                    let id = 10_000_000 * (lane + 1) + n;
                    let r = sqlx::query(
                        "INSERT INTO members (id, email, name) VALUES ($1, $2, 'old insert')",
                    )
                    .bind(id)
                    .bind(&email)
                    .execute(&pool)
                    .await;
                    (id, r, false)
                }
                1 => {
                    let id = hot_id(n, lane);
                    let _row = row_lock(&locks, id).lock().await;
                    let r = sqlx::query("UPDATE members SET name = $1 WHERE id = $2")
                        .bind(format!("old name {lane}.{n}"))
                        .bind(id)
                        .execute(&pool)
                        .await;
                    (id, r, false)
                }
                _ => {
                    let id = hot_id(n, lane);
                    let _row = row_lock(&locks, id).lock().await;
                    let r = sqlx::query("UPDATE members SET email = $1 WHERE id = $2")
                        .bind(&email)
                        .bind(id)
                        .execute(&pool)
                        .await;
                    if r.is_ok() {
                        let mut record = record.lock().unwrap();
                        let row = record.entry(id).or_default();
                        row.old_after_known |= row.known.is_some();
                        row.old_updates += 1;
                    }
                    (id, r, true)
                }
            };
            match result {
                Ok(done) if done.rows_affected() == 1 => {
                    ok += 1;
                    if !input_changed {
                        record.lock().unwrap().entry(id).or_default();
                    }
                }
                Ok(_) => errors.push(format!("row {id} missing")),
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    })
}

/// A new build: the generated accessors only. Inserts rows with its own `email_key`, sets
/// `email` and `email_key` of hot rows, and (the bug's scenario) changes only the name of a
/// hot row, which writes back the `email_key` it read.
fn new_member_writer(
    pool: &PgPool,
    lane: i64,
    record: Record,
    locks: RowLocks,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(u64, Vec<String>)> {
    use members::Member;
    let pool = pool.clone();
    tokio::spawn(async move {
        let (mut ok, mut errors, mut n) = (0u64, Vec::new(), 0i64);
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let key = format!("N:{lane}:{n}");
            let result: pgevolve::Result<(i64, String)> = if n % 4 == 0 {
                let member = Member {
                    id: 100_000_000 * (lane + 1) + n,
                    email: format!("New{lane}.{n}@Example.ORG"),
                    name: "new insert".into(),
                    email_key: key,
                };
                member
                    .insert(&pool)
                    .await
                    .map(|_| (member.id, member.email_key))
            } else {
                let id = hot_id(n, lane + 7);
                let _row = row_lock(&locks, id).lock().await;
                match Member::find(&id, &pool).await {
                    Ok(Some(mut member)) => {
                        if n % 4 == 1 {
                            member.name = format!("new name {lane}.{n}");
                        } else {
                            member.email = format!("New{lane}.{n}@Example.ORG");
                            member.email_key = key;
                        }
                        let written = member.email_key.clone();
                        let r = member.update(&pool).await.map(|_| (id, written));
                        if let Ok((id, written)) = &r {
                            let mut record = record.lock().unwrap();
                            let row = record.entry(*id).or_default();
                            row.known = Some(written.clone());
                            row.old_after_known = false;
                        }
                        r
                    }
                    Ok(None) => {
                        errors.push(format!("row {id} missing"));
                        continue;
                    }
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok((id, written)) => {
                    ok += 1;
                    record.lock().unwrap().entry(id).or_default().known = Some(written);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (ok, errors)
    })
}

/// Old and new builds write the same rows concurrently while the backfill pass runs. At the
/// end every row of the table is compared with what must be there: the value the last
/// knowing writer wrote (even after later old-build changes of `email`), else `lower(email)`
/// of the row's current email.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_old_and_new_writers_during_the_pass_leave_every_row_as_its_last_knowing_writer_or_the_expression_says()
 {
    use members::Member;
    let (_db, pool) = database(20).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE members (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL);
         INSERT INTO members SELECT g, 'Member' || g || '@Example.COM', 'name ' || g
           FROM generate_series(1, {MEMBERS}) g;
         ANALYZE members;"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let record: Record = Arc::default();
    let locks: RowLocks = Arc::new((0..1024).map(|_| tokio::sync::Mutex::new(())).collect());
    let stop = Arc::new(AtomicBool::new(false));
    // Old builds write before, during and after expand.
    let mut writers: Vec<_> = (0..2)
        .map(|lane| old_member_writer(&pool, lane, record.clone(), locks.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Member>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 300,
            max_batch_size: 300,
            pause: Duration::from_millis(20),
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    // Expand is done: new builds start next to the old ones, on the same rows.
    writers.extend(
        (0..2).map(|lane| {
            new_member_writer(&pool, lane, record.clone(), locks.clone(), stop.clone())
        }),
    );
    evolution.wait().await.unwrap();
    let filled = evolution
        .progress()
        .iter()
        .map(|p| p.rows_done)
        .max()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for writer in writers {
        let (ok, errors) = writer.await.unwrap();
        assert!(errors.is_empty(), "writes failed: {:?}", errors.first());
        writes += ok;
    }
    assert!(
        filled > 1_000,
        "the pass filled {filled} rows while writers ran"
    );

    let record = record.lock().unwrap().clone();
    let known = record.values().filter(|r| r.known.is_some()).count();
    let overwritten = record.values().filter(|r| r.old_after_known).count();
    let old_only = record
        .values()
        .filter(|r| r.known.is_none() && r.old_updates > 0)
        .count();
    println!(
        "{writes} writes; rows set by the new build: {known}, of which later changed by an old build: {overwritten}; \
         rows only old builds changed: {old_only}; rows the pass filled: {filled}"
    );
    assert!(
        known > 200 && overwritten > 50 && old_only > 200,
        "too few interleavings: {known} known, {overwritten} changed after, {old_only} old only"
    );
    assert_every_row(&pool, &record, "members").await;

    // Validated; contract keeps every value.
    evolution.contract().await.unwrap();
    assert_every_row(&pool, &record, "members").await;
}

/// Every row of `table`: `email_key` is the value the last knowing writer wrote, else
/// `lower(email)`; and every row a writer inserted is there.
async fn assert_every_row(pool: &PgPool, record: &HashMap<i64, RowRecord>, table: &str) {
    let (ids, values): (Vec<i64>, Vec<Option<String>>) =
        record.iter().map(|(id, r)| (*id, r.known.clone())).unzip();
    let (rows, missing, wrong, sample): (i64, i64, i64, Option<String>) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH r AS (SELECT * FROM unnest($1::int8[], $2::text[]) AS r(id, known)),
                  w AS (SELECT m.id, m.email, m.email_key, coalesce(r.known, lower(m.email)) AS expected
                          FROM {table} m LEFT JOIN r ON r.id = m.id
                         WHERE m.email_key IS DISTINCT FROM coalesce(r.known, lower(m.email)))
             SELECT (SELECT count(*) FROM {table}),
                    (SELECT count(*) FROM r WHERE NOT EXISTS (SELECT FROM {table} m WHERE m.id = r.id)),
                    (SELECT count(*) FROM w),
                    (SELECT format('row %s: email %s, email_key %s, expected %s', id, email, email_key, expected)
                       FROM w ORDER BY id LIMIT 1)"
        )))
        .bind(&ids)
        .bind(&values)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(missing, 0, "rows the writers wrote are missing");
    assert!(rows >= MEMBERS, "{rows} rows");
    assert_eq!(wrong, 0, "rows whose email_key is wrong, first: {sample:?}");
}

mod teams {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "teams")]
    pub struct Team {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: String,
        #[evolve(backfill = "upper(name)")]
        pub label: String,
    }
}

/// `(schema.)table` with `rows` rows `(id, name)`.
async fn seed_named(pool: &PgPool, table: &str, rows: i64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO {table} SELECT g, 'name ' || g FROM generate_series(1, {rows}) g;
         ANALYZE {table};"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// pgevolve's helper columns, triggers and functions left on `table`.
async fn helpers_left(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'column ' || attname FROM pg_attribute
          WHERE attrelid = $1::regclass AND attname LIKE 'pgevolve%' AND NOT attisdropped
         UNION ALL
         SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal
         UNION ALL
         SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'pgevolve%'
         UNION ALL
         SELECT 'constraint ' || conname FROM pg_constraint WHERE conrelid = $1::regclass AND conname LIKE 'pgevolve%'",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Validate and contract keep every value (known or computed) and remove the marker column,
/// both triggers and both functions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_removes_the_marker_and_both_triggers_and_keeps_every_value() {
    use teams::Team;
    let (_db, pool) = database(10).await;
    seed_named(&pool, "teams", 2_000).await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Team>()
        .boot()
        .await
        .unwrap();
    assert_eq!(
        helpers_left(&pool, "teams").await.len(),
        6,
        "marker, two triggers, two functions, check: {:?}",
        helpers_left(&pool, "teams").await
    );
    for id in (1..=2_000).step_by(7) {
        let mut team = Team::find(&id, &pool).await.unwrap().unwrap();
        team.label = format!("Custom {id}");
        team.update(&pool).await.unwrap();
    }
    // An old build renames every team: computed labels follow, custom ones stay.
    sqlx::raw_sql("UPDATE teams SET name = 'team ' || id")
        .execute(&pool)
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let data = || async {
        sqlx::query_as::<_, (i64, String, String)>("SELECT id, name, label FROM teams ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let before = data().await;
    for (id, name, label) in &before {
        let expected = if id % 7 == 1 {
            format!("Custom {id}")
        } else {
            name.to_uppercase()
        };
        assert_eq!(label, &expected, "row {id}");
    }
    evolution.contract().await.unwrap();
    assert_eq!(data().await, before, "contract changed data");
    assert_eq!(helpers_left(&pool, "teams").await, Vec::<String>::new());
    let not_null: bool = sqlx::query_scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'teams'::regclass AND attname = 'label'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(not_null);
}

mod trials {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "trials")]
    pub struct Trial {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: String,
        #[evolve(backfill = "upper(name)")]
        pub label: String,
    }
}

async fn abort_at(mid_backfill: bool) {
    use trials::Trial;
    let (_db, pool) = database(10).await;
    seed_named(&pool, "trials", 20_000).await;
    let before = catalog_snapshot(&pool, "trials").await;
    let evolution = Evolver::new(pool.clone())
        .model::<Trial>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 100,
            max_batch_size: 100,
            pause: Duration::from_millis(20),
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    let step = evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| matches!(s.kind, StepKind::AddFilledColumn(_)))
        .unwrap()
        .id;
    // Writers of both builds, so the marker holds both kinds of rows.
    let mut trial = Trial::find(&5, &pool).await.unwrap().unwrap();
    trial.label = "known".into();
    trial.update(&pool).await.unwrap();
    sqlx::raw_sql("UPDATE trials SET name = 'renamed' WHERE id IN (5, 6)")
        .execute(&pool)
        .await
        .unwrap();
    if mid_backfill {
        loop {
            let p = evolution
                .progress()
                .into_iter()
                .find(|p| p.step == step)
                .unwrap();
            if p.rows_done > 1_000 {
                assert!(p.phase < Phase::Backfill, "still backfilling");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    evolution.abort(&step).await.unwrap();
    assert_eq!(
        catalog_snapshot(&pool, "trials").await,
        before,
        "abort (mid backfill: {mid_backfill}) left the catalog changed"
    );
    assert_eq!(helpers_left(&pool, "trials").await, Vec::<String>::new());
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM trials WHERE id IN (5, 6) ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(names, ["renamed", "renamed"]);
}

/// Abort right after expand and in the middle of the pass: the catalog is exactly as before
/// expand (marker column, triggers, functions, check and column gone). One test, in sequence:
/// the accessors' phase registry is per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_at_expand_and_mid_backfill_restores_the_catalog_exactly() {
    abort_at(false).await;
    abort_at(true).await;
}

mod ledger_v1 {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug)]
    #[evolve(table = "ledger")]
    #[allow(dead_code)]
    pub struct Entry {
        #[evolve(primary_key)]
        pub id: i64,
        pub email: String,
        pub name: String,
        #[evolve(backfill = "lower(email)")]
        pub email_key: String,
    }
}

mod ledger_v2 {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug)]
    #[evolve(table = "ledger")]
    #[allow(dead_code)]
    pub struct Entry {
        #[evolve(primary_key)]
        pub id: i64,
        pub email: String,
        pub name: String,
        #[evolve(backfill = "lower(email)")]
        pub email_key: String,
        #[evolve(backfill = "upper(name)")]
        pub name_key: String,
    }
}

const LEDGER_ROWS: i64 = 20_000;

/// The child of the kill test: the first build's pass fills in small batches, reporting its
/// progress, until killed. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_pass_child_process() {
    let Some((_, url)) = support::child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<ledger_v1::Entry>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 200,
            max_batch_size: 200,
            pause: Duration::from_millis(10),
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    support::child::report_progress_forever(&evolution).await;
}

/// A pass killed midway (a real child process, SIGKILLed), then a second pass over the same
/// rows: the next build adds a second backfilled column, so its pass (both columns, no shared
/// checkpoint) starts again from the first key and rewrites `email_key` of the rows the first
/// pass filled (`COALESCE` keeps the value). Neither pass may mark what it computed as written
/// by a knowing writer: afterwards, an old build changing the inputs of every row still has
/// both columns recomputed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_pass_does_not_mark_computed_rows_as_known() {
    use support::child::{self, ChildProcess};
    if child::in_child() {
        return;
    }
    const ROWS: i64 = LEDGER_ROWS;
    let (db, pool) = database(10).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL);
         INSERT INTO ledger SELECT g, 'Entry' || g || '@Example.COM', 'name ' || g
           FROM generate_series(1, {ROWS}) g;
         ANALYZE ledger;"
    )))
    .execute(&pool)
    .await
    .unwrap();

    // First process: a real child whose first pass fills a few thousand rows, SIGKILLed then.
    let mut first = ChildProcess::start("ledger_pass_child_process", "ledger", db.url(), None);
    first.progress_at_least(4_000);
    first.kill();
    child::until_no_advisory_lock(&pool).await;

    let half_filled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger WHERE email_key IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        (4_000..ROWS).contains(&half_filled),
        "{half_filled} rows filled at the crash"
    );
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<ledger_v2::Entry>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let rows_done: Vec<i64> = sqlx::query_scalar(
        "SELECT rows_done FROM pgevolve.steps WHERE kind = 'add_backfilled_column' ORDER BY rows_done",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // The second pass filled every row (`name_key` was NULL everywhere), rewriting the
    // `email_key` the first one had computed. (The first step's `rows_done` also keeps
    // the first pass's count: rows are counted per pass.)
    assert_eq!(rows_done[0], ROWS, "the second pass walked every row");

    // No row is marked as set by a writer that knows a column.
    let markers: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(attname) FROM pg_attribute
          WHERE attrelid = 'ledger'::regclass AND attname LIKE 'pgevolve_set%' AND NOT attisdropped",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(markers.len(), 2, "{markers:?}");
    let marked: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM ledger WHERE {}",
        markers
            .iter()
            .map(|m| format!("{m} = 1"))
            .collect::<Vec<_>>()
            .join(" OR ")
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(marked, 0, "rows marked as known by a pass");

    // An old build changes the inputs of every row: both columns follow.
    sqlx::raw_sql("UPDATE ledger SET email = 'X' || email, name = name || ' changed'")
        .execute(&pool)
        .await
        .unwrap();
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger WHERE email_key IS DISTINCT FROM lower(email) \
         OR name_key IS DISTINCT FROM upper(name)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "rows not recomputed after the old build's update");
}

mod legacy {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "legacy")]
    pub struct Legacy {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: String,
        #[evolve(backfill = "upper(name)")]
        pub label: String,
    }
}

/// A step expanded by an earlier pgevolve (fill trigger of the old kind, no marker column, no
/// mark trigger) and recorded at expand: the next boot completes its expand before the pass
/// (which writes the marker) runs, and the new semantics hold from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_expanded_by_an_earlier_version_gets_its_marker_at_boot() {
    use legacy::Legacy;
    let (_db, pool) = database(10).await;
    seed_named(&pool, "legacy", 1_000).await;
    // Run to validate, then put back the state an earlier version leaves at expand: the old
    // fill trigger, no marker column or mark trigger, the check not validated, half the rows
    // not filled, the step recorded at expand.
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Legacy>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let step = evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| matches!(s.kind, StepKind::AddFilledColumn(_)))
        .unwrap();
    let helpers = helpers_left(&pool, "legacy").await;
    let name = |prefix: &str| {
        helpers
            .iter()
            .find_map(|h| h.split(' ').nth(1).filter(|n| n.starts_with(prefix)))
            .unwrap()
            .to_string()
    };
    let (marker, mark, fill, check) = (
        name("pgevolve_set"),
        name("pgevolve_explicit"),
        name("pgevolve_fill"),
        name("pgevolve_nn"),
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TRIGGER {mark} ON legacy; DROP FUNCTION {mark}();
         ALTER TABLE legacy DROP COLUMN {marker};
         CREATE OR REPLACE FUNCTION {fill}() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF TG_OP = 'INSERT' THEN
             IF NEW.label IS NULL THEN NEW.label := upper(NEW.name); END IF;
           ELSIF NEW.label IS NOT DISTINCT FROM OLD.label THEN
             NEW.label := upper(NEW.name);
           END IF;
           RETURN NEW;
         END $$;
         ALTER TABLE legacy DROP CONSTRAINT {check};
         UPDATE legacy SET label = NULL WHERE id > 500;
         ALTER TABLE legacy ADD CONSTRAINT {check} CHECK (label IS NOT NULL) NOT VALID;
         UPDATE pgevolve.steps SET phase = 'expand', checkpoint = NULL, upper_bound = NULL, rows_done = 0
          WHERE id = '{}';",
        step.id
    )))
    .execute(&pool)
    .await
    .unwrap();

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Legacy>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert_eq!(
        helpers_left(&pool, "legacy").await,
        helpers,
        "helpers restored"
    );
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event FROM pgevolve.journal WHERE step_id = $1 ORDER BY id")
            .bind(step.id.as_str())
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(events.iter().any(|e| e == "expand completed"), "{events:?}");
    let mut row = Legacy::find(&700, &pool).await.unwrap().unwrap();
    row.label = "kept".into();
    row.update(&pool).await.unwrap();
    row.name = "other".into();
    row.update(&pool).await.unwrap();
    sqlx::raw_sql("UPDATE legacy SET name = name || ' x'")
        .execute(&pool)
        .await
        .unwrap();
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM legacy WHERE label IS DISTINCT FROM \
         CASE WHEN id = 700 THEN 'kept' ELSE upper(name) END",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
}
