//! An integer primary key widened to `bigint` (`#[evolve(primary_key, type_from = "integer")]`)
//! with the foreign key of a table that is no model of the build, while an "old build" (raw SQL
//! on the integer columns) and the "new build" (the generated accessors for the key table, raw
//! SQL for the referencing one) insert and update rows of both tables throughout: every row of
//! both tables ends as last written, references intact, the foreign key validated under its old
//! name, the primary key bigint under its old name. Aborts before contract leave the catalog of
//! both tables as it was and keep every write.

use pgevolve_test_support as support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pgevolve::{BackfillOptions, DeployWindow, Evolve, Evolver, Phase};
use sqlx::PgPool;
use support::child::{self, ChildProcess};
use support::{catalog_snapshot, database};
use tokio::sync::Mutex;

/// The new build's view of the key table.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "accounts")]
pub struct Account {
    #[evolve(primary_key, type_from = "integer")]
    pub id: i64,
    pub name: String,
}

/// The new build's view of the referencing table: its reference declared as widened with the
/// key (`type_from` with `references`), so the key's step widens it and its accessors follow.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "payments")]
pub struct Payment {
    #[evolve(primary_key, generated)]
    pub id: i64,
    #[evolve(
        type_from = "integer",
        references = "accounts(id)",
        on_delete = "cascade"
    )]
    pub account_id: i64,
    pub amount: i32,
}

/// `accounts(id serial)` and `payments(account_id integer NOT NULL REFERENCES accounts ON
/// DELETE CASCADE)` with an index on the reference.
async fn seed(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);
         CREATE TABLE payments (
             id bigserial PRIMARY KEY,
             account_id integer NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
             amount integer NOT NULL
         );
         CREATE INDEX payments_account_id_idx ON payments (account_id);
         INSERT INTO accounts (name) SELECT 'account ' || g FROM generate_series(1, 3000) g;
         INSERT INTO payments (account_id, amount) SELECT 1 + g % 3000, g FROM generate_series(1, 12000) g;
         ANALYZE accounts; ANALYZE payments;",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// What every row should hold: the last value written to it.
#[derive(Default)]
struct Expected {
    accounts: BTreeMap<i64, String>,
    payments: BTreeMap<i64, (i64, i64)>,
}

async fn expected_from(pool: &PgPool) -> Arc<Mutex<Expected>> {
    let mut e = Expected::default();
    for (id, name) in sqlx::query_as::<_, (i64, String)>("SELECT id::int8, name FROM accounts")
        .fetch_all(pool)
        .await
        .unwrap()
    {
        e.accounts.insert(id, name);
    }
    for (id, account, amount) in sqlx::query_as::<_, (i64, i64, i64)>(
        "SELECT id, account_id::int8, amount::int8 FROM payments",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        e.payments.insert(id, (account, amount));
    }
    Arc::new(Mutex::new(e))
}

#[derive(Clone, Copy, PartialEq)]
enum Build {
    /// Raw SQL on the integer columns, as the build before the change.
    Old,
    /// The generated accessors for accounts, raw SQL with bigint values for payments.
    New,
    /// The generated accessors for both tables (`Account`, `Payment`); every payment it moves
    /// is read through `Payment::find` first and must be as last written.
    Models,
}

struct Writer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Writer {
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        let errors = self.task.await.unwrap();
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

static NEW_IDS: AtomicU64 = AtomicU64::new(0);

/// One writer: in turn inserts an account, inserts a payment, renames an account, moves a
/// payment to another account; each write and its record in `expected` under one lock, so the
/// record's order is the database's.
fn writer(pool: &PgPool, build: Build, lane: u64, expected: Arc<Mutex<Expected>>) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let (pool, s, o) = (pool.clone(), stop.clone(), ok.clone());
    let task = tokio::spawn(async move {
        let mut errors = Vec::new();
        let mut n: u64 = 0;
        while !s.load(Ordering::Acquire) {
            n += 1;
            let mut e = expected.lock().await;
            let pick = |len: usize, salt: u64| ((n * 7919 + lane * 104_729 + salt) as usize) % len;
            let result: Result<(), String> = match (n % 4, build) {
                (0, Build::Old) => {
                    let name = format!("old {lane}-{n}");
                    sqlx::query_scalar::<_, i32>(
                        "INSERT INTO accounts (name) VALUES ($1) RETURNING id",
                    )
                    .bind(&name)
                    .fetch_one(&pool)
                    .await
                    .map(|id| {
                        e.accounts.insert(id as i64, name);
                    })
                    .map_err(|x| x.to_string())
                }
                (0, Build::New | Build::Models) => {
                    let id = 50_000_000 + NEW_IDS.fetch_add(1, Ordering::Relaxed) as i64;
                    let account = Account {
                        id,
                        name: format!("new {lane}-{n}"),
                    };
                    account
                        .insert(&pool)
                        .await
                        .map(|_| {
                            e.accounts.insert(id, account.name.clone());
                        })
                        .map_err(|x| x.to_string())
                }
                (1, Build::Models) => {
                    let keys: Vec<i64> = e.accounts.keys().copied().collect();
                    let account = keys[pick(keys.len(), 1)];
                    let amount = (n * 10 + lane) as i64;
                    Payment {
                        id: 0,
                        account_id: account,
                        amount: amount as i32,
                    }
                    .insert_returning(&pool)
                    .await
                    .map(|p| {
                        e.payments.insert(p.id, (account, amount));
                    })
                    .map_err(|x| x.to_string())
                }
                (1, _) => {
                    let keys: Vec<i64> = e.accounts.keys().copied().collect();
                    let account = keys[pick(keys.len(), 1)];
                    let amount = (n * 10 + lane) as i64;
                    let q = match build {
                        // The old build's statements name integer parameters, the new one's bigint
                        // (one prepared statement per text and connection: they must differ).
                        Build::Old => sqlx::query_scalar::<_, i64>(
                            "INSERT INTO payments (account_id, amount) VALUES ($1::integer, $2::integer) RETURNING id",
                        )
                        .bind(account as i32)
                        .bind(amount as i32),
                        Build::New | Build::Models => sqlx::query_scalar::<_, i64>(
                            "INSERT INTO payments (account_id, amount) VALUES ($1::bigint, $2::bigint) RETURNING id",
                        )
                        .bind(account)
                        .bind(amount),
                    };
                    q.fetch_one(&pool)
                        .await
                        .map(|id| {
                            e.payments.insert(id, (account, amount));
                        })
                        .map_err(|x| x.to_string())
                }
                (2, _) => {
                    let keys: Vec<i64> = e.accounts.keys().copied().collect();
                    let id = keys[pick(keys.len(), 2)];
                    let name = format!("renamed {lane}-{n}");
                    let done = match build {
                        Build::Old => sqlx::query("UPDATE accounts SET name = $1 WHERE id = $2")
                            .bind(&name)
                            .bind(id as i32)
                            .execute(&pool)
                            .await
                            .map(|_| ())
                            .map_err(|x| x.to_string()),
                        Build::New | Build::Models => Account {
                            id,
                            name: name.clone(),
                        }
                        .update(&pool)
                        .await
                        .map(|_| ())
                        .map_err(|x| x.to_string()),
                    };
                    done.map(|()| {
                        e.accounts.insert(id, name);
                    })
                }
                (_, Build::Models) => {
                    let payments: Vec<i64> = e.payments.keys().copied().collect();
                    let payment = payments[pick(payments.len(), 3)];
                    let keys: Vec<i64> = e.accounts.keys().copied().collect();
                    let account = keys[pick(keys.len(), 4)];
                    let (was, amount) = e.payments[&payment];
                    let read = Payment::find(&payment, &pool).await;
                    let wanted = Payment {
                        id: payment,
                        account_id: was,
                        amount: amount as i32,
                    };
                    match read {
                        Ok(Some(p)) if p == wanted => Payment {
                            account_id: account,
                            ..wanted
                        }
                        .update(&pool)
                        .await
                        .map(|_| {
                            e.payments.get_mut(&payment).unwrap().0 = account;
                        })
                        .map_err(|x| x.to_string()),
                        other => Err(format!(
                            "Payment::find({payment}) gave {other:?}, not {wanted:?}"
                        )),
                    }
                }
                _ => {
                    let payments: Vec<i64> = e.payments.keys().copied().collect();
                    let payment = payments[pick(payments.len(), 3)];
                    let keys: Vec<i64> = e.accounts.keys().copied().collect();
                    let account = keys[pick(keys.len(), 4)];
                    let q = match build {
                        Build::Old => sqlx::query(
                            "UPDATE payments SET account_id = $1::integer WHERE id = $2",
                        )
                        .bind(account as i32),
                        Build::New | Build::Models => {
                            sqlx::query("UPDATE payments SET account_id = $1::bigint WHERE id = $2")
                                .bind(account)
                        }
                    };
                    q.bind(payment)
                        .execute(&pool)
                        .await
                        .map(|_| {
                            e.payments.get_mut(&payment).unwrap().0 = account;
                        })
                        .map_err(|x| x.to_string())
                }
            };
            drop(e);
            match result {
                Ok(()) => {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                Err(x) => errors.push(x),
            }
            tokio::task::yield_now().await;
        }
        errors
    });
    Writer { stop, ok, task }
}

async fn stop_all(writers: Vec<Writer>, who: &str) -> u64 {
    let mut ok = 0;
    for w in writers {
        let (n, errors) = w.finish().await;
        assert!(errors.is_empty(), "{who} writes failed: {errors:#?}");
        ok += n;
    }
    ok
}

/// Every row of both tables is what was last written (`key_type`: the type the columns are
/// read as).
async fn assert_rows_match(pool: &PgPool, expected: &Mutex<Expected>, when: &str) {
    let e = expected.lock().await;
    let accounts: BTreeMap<i64, String> =
        sqlx::query_as::<_, (i64, String)>("SELECT id::int8, name FROM accounts")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(accounts.len(), e.accounts.len(), "{when}: account count");
    assert!(accounts == e.accounts, "{when}: accounts differ");
    let payments: BTreeMap<i64, (i64, i64)> = sqlx::query_as::<_, (i64, i64, i64)>(
        "SELECT id, account_id::int8, amount::int8 FROM payments",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, a, m)| (id, (a, m)))
    .collect();
    assert_eq!(payments.len(), e.payments.len(), "{when}: payment count");
    assert!(payments == e.payments, "{when}: payments differ");
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments p WHERE NOT EXISTS (SELECT FROM accounts a WHERE a.id = p.account_id)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "{when}: payments without their account");
}

async fn column_type(pool: &PgPool, table: &str, column: &str) -> String {
    sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2",
    )
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// After contract: the key and the reference are bigint under their old names, validated; the
/// index on the reference is there under its name; the serial sequence is bigint and still the
/// default; no helper is left; values past the integer range go in.
async fn assert_widened(pool: &PgPool) {
    let pool = pool.clone();
    // The key and the reference are bigint, under their old names, validated; the index on the
    // reference is there under its name; the serial sequence is bigint and still the default.
    assert_eq!(column_type(&pool, "accounts", "id").await, "bigint");
    assert_eq!(column_type(&pool, "payments", "account_id").await, "bigint");
    let accounts = catalog_snapshot(&pool, "accounts").await;
    assert!(
        accounts.contains(&"constraint accounts_pkey PRIMARY KEY (id) validated=true".to_string())
            && accounts.contains(
                &"column id bigint notnull=true default=nextval('accounts_id_seq'::regclass)"
                    .to_string()
            )
            && accounts.contains(
                &"index CREATE UNIQUE INDEX accounts_pkey ON public.accounts USING btree (id) valid=true"
                    .to_string()
            ),
        "{accounts:#?}"
    );
    assert!(
        !accounts.iter().any(|l| l.contains("pgevolve")),
        "helpers left on accounts: {accounts:#?}"
    );
    let payments = catalog_snapshot(&pool, "payments").await;
    assert!(
        payments.contains(
            &"constraint payments_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE CASCADE validated=true"
                .to_string()
        ) && payments.contains(&"column account_id bigint notnull=true default=".to_string())
            && payments.contains(
                &"index CREATE INDEX payments_account_id_idx ON public.payments USING btree (account_id) valid=true"
                    .to_string()
            ),
        "{payments:#?}"
    );
    assert!(
        !payments.iter().any(|l| l.contains("pgevolve")),
        "helpers left on payments: {payments:#?}"
    );
    let seq_type: String = sqlx::query_scalar(
        "SELECT format_type(seqtypid, NULL) FROM pg_sequence WHERE seqrelid = 'accounts_id_seq'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(seq_type, "bigint");
    // The widened key takes values past the integer range, and the reference follows them.
    sqlx::raw_sql(
        "INSERT INTO accounts (id, name) VALUES (5000000000, 'wide');
         INSERT INTO payments (account_id, amount) VALUES (5000000000, 1);
         INSERT INTO accounts (name) VALUES ('from the sequence');",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        Account::find(&5_000_000_000, &pool).await.unwrap(),
        Some(Account {
            id: 5_000_000_000,
            name: "wide".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_and_reference_widened_while_old_and_new_builds_write_both_tables_keep_every_row() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(24).await;
    seed(&pool).await;
    let expected = expected_from(&pool).await;
    let old: Vec<Writer> = (0..2)
        .map(|lane| writer(&pool, Build::Old, lane, expected.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let evolution = under_load(&pool, Build::New).boot().await.unwrap();
    let step = evolution
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.description.starts_with("widen primary key"))
        .expect("a widen_key step");
    assert_eq!(
        step.description,
        "widen primary key public.accounts.id from integer to bigint, with the foreign keys that reference it"
    );
    // The new build starts next to the old one once expand is done.
    let new: Vec<Writer> = (2..4)
        .map(|lane| writer(&pool, Build::New, lane, expected.clone()))
        .collect();
    evolution.wait().await.unwrap();
    // Validated: the shadows' new foreign key is there and valid, the old one still enforced.
    let fks: Vec<(String, bool)> = sqlx::query_as(
        "SELECT conname::text, convalidated FROM pg_constraint WHERE conrelid = 'payments'::regclass AND contype = 'f' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(fks.len(), 2, "{fks:?}");
    assert!(fks.iter().all(|(_, valid)| *valid), "{fks:?}");
    evolution.switch().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Contract is gated on the old build being gone: it stops first.
    let mut ok = stop_all(old, "old build").await;
    assert_rows_match(&pool, &expected, "before contract").await;
    evolution.contract().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok += stop_all(new, "new build").await;
    assert!(ok > 200, "only {ok} writes");
    assert_rows_match(&pool, &expected, "after contract").await;

    assert_widened(&pool).await;
    let status = evolution.status().await.unwrap();
    let step = status
        .iter()
        .find(|s| s.description.starts_with("widen primary key"))
        .unwrap();
    assert_eq!(step.phase, Phase::Contract);
    support::assert_reboot_changes_nothing::<Account>(&pool, "accounts").await;
}

/// The widening's evolver for the lifecycle tests: contract whenever asked, batches of 300 to
/// 1,000 keys.
fn under_load(pool: &PgPool, new: Build) -> Evolver {
    widening(pool, new)
        .deploy_window(DeployWindow::always())
        .backfill_options(BackfillOptions {
            initial_batch_size: 300,
            max_batch_size: 1_000,
            ..BackfillOptions::default()
        })
}

/// Where an abort lands.
#[derive(Debug, Clone, Copy)]
enum AbortAt {
    Expanded,
    Validated,
    Switched,
}

/// Abort after expand, after validate (shadows, triggers, unique index and new foreign keys on
/// both tables) and after switch while both builds write: the catalog of both tables is what it
/// was before boot, and every write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_before_contract_restores_both_tables_catalog_and_keeps_every_write() {
    if child::in_child() {
        return;
    }
    for at in [AbortAt::Expanded, AbortAt::Validated, AbortAt::Switched] {
        aborted_at(at, Build::New).await;
    }
}

/// The evolver of the widening, with `Payment` a model of it when the new build is
/// `Build::Models`.
fn widening(pool: &PgPool, new: Build) -> Evolver {
    let evolver = Evolver::new(pool.clone()).model::<Account>();
    match new {
        Build::Models => evolver.model::<Payment>(),
        _ => evolver,
    }
}

/// One abort round on a fresh database: the old build writes from before boot, `new` from
/// after it; the abort lands `at`; the catalog of both tables is as before boot and every row
/// as last written.
async fn aborted_at(at: AbortAt, new: Build) {
    let (_db, pool) = database(16).await;
    seed(&pool).await;
    let before = (
        catalog_snapshot(&pool, "accounts").await,
        catalog_snapshot(&pool, "payments").await,
    );
    let expected = expected_from(&pool).await;
    let old = writer(&pool, Build::Old, 0, expected.clone());
    let evolution = widening(&pool, new).boot().await.unwrap();
    let new = writer(&pool, new, 1, expected.clone());
    match at {
        AbortAt::Expanded => {}
        AbortAt::Validated => evolution.wait().await.unwrap(),
        AbortAt::Switched => {
            evolution.wait().await.unwrap();
            evolution.switch().await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let step = widen_step(&evolution).await;
    evolution.abort(&step.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = stop_all(vec![old, new], &format!("{at:?}")).await;
    assert!(ok > 20, "{at:?}: only {ok} writes");
    assert_eq!(
        (
            catalog_snapshot(&pool, "accounts").await,
            catalog_snapshot(&pool, "payments").await,
        ),
        before,
        "{at:?}: catalog not restored"
    );
    assert_rows_match(&pool, &expected, &format!("{at:?}")).await;
}

fn crash_evolver(pool: &PgPool) -> Evolver {
    // A killed child's heartbeat expires after 2 s: the acknowledgements stop waiting for it.
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(Duration::from_secs(2), Duration::from_secs(60))
        .model::<Account>()
}

async fn widen_step(evolution: &pgevolve::Evolution) -> pgevolve::StepStatus {
    evolution
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.description.starts_with("widen primary key"))
        .unwrap()
}

/// The id of `Account`'s widen step, from its plan.
fn widen_step_id() -> pgevolve::StepId {
    Account::plan()
        .steps
        .into_iter()
        .find(|s| s.kind.name() == "widen_key")
        .unwrap()
        .id
}

/// The widen step's row in the state store: phase, checkpoint, rows done.
async fn step_row(pool: &PgPool) -> (String, Option<Vec<String>>, i64) {
    let id = widen_step_id();
    sqlx::query_as("SELECT phase, checkpoint, rows_done FROM pgevolve.steps WHERE id = $1")
        .bind(id.as_str())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Rows of `table` whose pgevolve shadow column is still `NULL` while the column it shadows
/// is not.
async fn null_shadows(pool: &PgPool, table: &str) -> i64 {
    let (shadow, column): (String, String) = sqlx::query_as(
        "SELECT attname::text, CASE WHEN $1 = 'accounts' THEN 'id' ELSE 'account_id' END FROM pg_attribute \
         WHERE attrelid = $1::regclass AND attname LIKE 'pgevolve%' AND NOT attisdropped",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE \"{shadow}\" IS NULL AND \"{column}\" IS NOT NULL"
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The child of the kill tests: boots and goes as far as its scenario says, then reports or
/// pauses; the parent kills it. In `pausing`, the parent holds it and lets it go on, and it
/// ends by itself once validated. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_widening_child_process() {
    let Some((scenario, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let evolver = match scenario.as_str() {
        // Batches of 20 keys: the kill lands with most of the backfill left.
        "backfill" => crash_evolver(&pool).backfill_options(BackfillOptions {
            initial_batch_size: 20,
            min_batch_size: 20,
            max_batch_size: 20,
            ..BackfillOptions::default()
        }),
        "pausing" => pausing_evolver(&pool),
        _ => crash_evolver(&pool),
    };
    let evolution = evolver.boot().await.unwrap();
    match scenario.as_str() {
        "expand" => child::report("BOOTED"),
        // Reports its rows until killed.
        "backfill" => child::report_progress_forever(&evolution).await,
        // Pauses at `key-reference-fill-batch`, inside the referencing fill's second batch.
        "fill" => {
            let _ = evolution.wait().await;
        }
        // Held at `key-reference-fill-batch` until the parent releases it; then validates and
        // ends.
        "pausing" => {
            evolution.wait().await.unwrap();
            child::report("VALIDATED");
            return;
        }
        // Pauses at `key-references-filled` in validate.
        "validate" => {
            let _ = evolution.wait().await;
        }
        "switch" => {
            evolution.wait().await.unwrap();
            evolution.switch().await.unwrap();
            child::report("SWITCHED");
        }
        // Validated and switched by the parent: pauses at `key-reference-swapped` in contract,
        // with payments swapped and accounts not.
        "contract" => {
            let _ = evolution.contract().await;
        }
        // Pauses at `abort-recorded`.
        "abort" => {
            evolution.wait().await.unwrap();
            let step = widen_step(&evolution).await;
            let _ = evolution.abort(&step.id).await;
        }
        other => panic!("unknown scenario {other}"),
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
    }
}

/// Kills the child in `scenario` while the old build writes, then boots in the test process
/// next to it and goes to contract (or, after a killed abort, checks the abort finished): every
/// row of both tables is as last written.
async fn killed_in(scenario: &str) {
    let (db, pool) = database(20).await;
    seed(&pool).await;
    let before = (
        catalog_snapshot(&pool, "accounts").await,
        catalog_snapshot(&pool, "payments").await,
    );
    let expected = expected_from(&pool).await;
    let old = writer(&pool, Build::Old, 0, expected.clone());
    let entry = "key_widening_child_process";
    match scenario {
        "expand" => {
            let mut c = ChildProcess::start(entry, scenario, db.url(), None);
            c.expect("BOOTED");
            c.kill();
        }
        "validate" => {
            ChildProcess::paused_at(entry, scenario, db.url(), "key-references-filled").kill()
        }
        "backfill" => {
            let mut c = ChildProcess::start(entry, scenario, db.url(), None);
            c.progress_at_least(200);
            c.kill();
            // Killed mid-backfill: a checkpoint committed, keys still without their shadow.
            let (phase, checkpoint, rows_done) = step_row(&pool).await;
            assert_eq!(phase, "expand", "the backfill finished before the kill");
            assert!(
                checkpoint.is_some() && rows_done >= 200,
                "{checkpoint:?} {rows_done}"
            );
            assert!(
                null_shadows(&pool, "accounts").await > 0,
                "no key left to fill"
            );
        }
        "fill" => {
            let c = ChildProcess::paused_at(entry, scenario, db.url(), "key-reference-fill-batch");
            // Mid-fill: the first batch and its progress committed, rows left without a shadow
            // value, the second batch open (its transaction dies with the process).
            let (phase, _, rows_done) = step_row(&pool).await;
            assert_eq!(phase, "backfill");
            assert!(rows_done > 0, "no batch of the fill committed");
            let left = null_shadows(&pool, "payments").await;
            c.kill();
            assert!(left > 0, "the fill was done before the kill");
        }
        "switch" => {
            let mut c = ChildProcess::start(entry, scenario, db.url(), None);
            c.expect("SWITCHED");
            c.kill();
        }
        "contract" => {
            let first = crash_evolver(&pool).boot().await.unwrap();
            first.wait().await.unwrap();
            first.switch().await.unwrap();
            drop(first);
            ChildProcess::paused_at(entry, scenario, db.url(), "key-reference-swapped").kill();
            // payments is swapped, accounts is not: the reference is bigint, the key integer.
            assert_eq!(column_type(&pool, "payments", "account_id").await, "bigint");
            assert_eq!(column_type(&pool, "accounts", "id").await, "integer");
        }
        "abort" => ChildProcess::paused_at(entry, scenario, db.url(), "abort-recorded").kill(),
        other => panic!("unknown scenario {other}"),
    }
    child::until_no_advisory_lock(&pool).await;

    // The next boot, in this process, next to the old build (until contract); the new build
    // starts once it is up.
    let evolution = crash_evolver(&pool).boot().await.unwrap();
    let new = writer(&pool, Build::New, 1, expected.clone());
    evolution.wait().await.unwrap();
    if scenario == "abort" {
        assert_eq!(widen_step(&evolution).await.phase, Phase::Aborted);
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_all(vec![old, new], scenario).await;
        assert_eq!(
            (
                catalog_snapshot(&pool, "accounts").await,
                catalog_snapshot(&pool, "payments").await,
            ),
            before,
            "{scenario}: catalog not restored"
        );
        assert_rows_match(&pool, &expected, scenario).await;
        return;
    }
    let mut ok = 0;
    if scenario == "contract" {
        // The old build was gone before the first contract.
        ok += stop_all(vec![old], scenario).await;
    } else {
        evolution.switch().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        ok += stop_all(vec![old], scenario).await;
    }
    evolution.contract().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    ok += stop_all(vec![new], scenario).await;
    assert!(ok > 20, "{scenario}: only {ok} writes");
    assert_rows_match(&pool, &expected, scenario).await;
    assert_widened(&pool).await;
}

// One test, scenarios in sequence, as in `change_type_crash`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_widening_killed_in_any_phase_is_taken_over_by_the_next_boot_with_every_row() {
    if child::in_child() {
        return;
    }
    for scenario in ["expand", "validate", "switch", "contract", "abort"] {
        killed_in(scenario).await;
    }
}

/// SIGKILL of a real child process in the middle of the key's backfill (batches of 20 keys,
/// killed once it reported 200 rows: phase still expand, a checkpoint committed, keys left) and
/// in the middle of the referencing table's fill (paused inside its second batch: the first
/// committed with its progress, rows left), while the old build writes; the next boot finishes
/// from there: every row of both tables as last written, both widened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_widening_killed_mid_backfill_or_mid_referencing_fill_is_finished_by_the_next_boot_with_every_row()
 {
    if child::in_child() {
        return;
    }
    for scenario in ["backfill", "fill"] {
        killed_in(scenario).await;
    }
}

/// The key table's view for an identity key.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "members")]
pub struct Member {
    #[evolve(primary_key, generated, type_from = "integer")]
    pub id: i64,
    pub name: String,
}

/// An identity key (`GENERATED BY DEFAULT AS IDENTITY`) with a nullable reference: after
/// contract the identity belongs to the bigint key under the same sequence name and goes on
/// from where it stood; references and the foreign key are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_identity_key_is_widened_and_keeps_counting_from_where_it_stood() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(10).await;
    sqlx::raw_sql(
        "CREATE TABLE members (id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL);
         CREATE TABLE notes (id bigserial PRIMARY KEY, member_id integer REFERENCES members (id) ON DELETE SET NULL, body text);
         INSERT INTO members (name) SELECT 'member ' || g FROM generate_series(1, 2000) g;
         INSERT INTO notes (member_id, body) SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE 1 + g % 2000 END, 'note ' || g
           FROM generate_series(1, 5000) g;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before: Vec<(i64, Option<i64>, String)> =
        sqlx::query_as("SELECT id, member_id::int8, body FROM notes ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Member>()
        .boot()
        .await
        .unwrap();
    let inserted = Member {
        id: 0,
        name: "during".into(),
    }
    .insert_returning(&pool)
    .await
    .unwrap();
    assert_eq!(inserted.id, 2001);
    evolution.wait().await.unwrap();
    evolution.switch().await.unwrap();
    evolution.contract().await.unwrap();
    assert_eq!(column_type(&pool, "members", "id").await, "bigint");
    assert_eq!(column_type(&pool, "notes", "member_id").await, "bigint");
    let (identity, sequence): (String, String) = sqlx::query_as(
        "SELECT attidentity::text, pg_get_serial_sequence('members', 'id') FROM pg_attribute \
         WHERE attrelid = 'members'::regclass AND attname = 'id'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (identity.as_str(), sequence.as_str()),
        ("d", "public.members_id_seq")
    );
    let next = Member {
        id: 0,
        name: "after".into(),
    }
    .insert_returning(&pool)
    .await
    .unwrap();
    assert_eq!(next.id, 2002);
    let after: Vec<(i64, Option<i64>, String)> =
        sqlx::query_as("SELECT id, member_id::int8, body FROM notes ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(after == before, "notes changed");
    let fk: (String, bool) = sqlx::query_as(
        "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE conname = 'notes_member_id_fkey'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        fk,
        (
            "FOREIGN KEY (member_id) REFERENCES members(id) ON DELETE SET NULL".to_string(),
            true
        )
    );
    let pk: String = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint WHERE conrelid = 'members'::regclass AND contype = 'p'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(pk, "members_pkey");
}

/// The plan of a build with both models: the key's step widens payments.account_id, and the
/// referencing model has a `widen_reference` step without DDL, no type change of its own.
#[test]
fn a_referencing_model_plans_no_ddl_of_its_own_and_follows_the_keys_step() {
    let plan = Payment::plan();
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(
        kinds,
        ["create_table", "widen_reference", "add_foreign_key"]
    );
    let step = &plan.steps[1];
    assert!(
        step.phases.iter().all(|p| p.statements.is_empty()),
        "{step:#?}"
    );
    let key = Account::plan()
        .steps
        .into_iter()
        .find(|s| s.kind.name() == "widen_key")
        .unwrap();
    assert_eq!(
        step.describe(),
        format!(
            "widen column public.payments.account_id from integer to bigint with the key public.accounts.id it references (step {})",
            key.id
        )
    );
}

/// The helper columns pgevolve added to a table (shadows).
async fn helper_columns(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 \
         AND NOT attisdropped AND attname LIKE 'pgevolve%' ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// `Payment` is a model of the build too (`type_from = "integer", references = "accounts(id)"`):
/// while the old build (raw SQL on the integer columns) and the new one (the accessors of both
/// models, each moved payment read back first) write both tables, the key's step alone widens
/// payments.account_id (one shadow there, no type change of its own); every row of both tables
/// ends as last written, and the widened tables are as without the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_referencing_model_is_widened_by_the_keys_step_while_old_and_new_builds_write_both_tables()
 {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(24).await;
    seed(&pool).await;
    let expected = expected_from(&pool).await;
    let old: Vec<Writer> = (0..2)
        .map(|lane| writer(&pool, Build::Old, lane, expected.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let evolution = under_load(&pool, Build::Models).boot().await.unwrap();
    let new: Vec<Writer> = (2..4)
        .map(|lane| writer(&pool, Build::Models, lane, expected.clone()))
        .collect();
    evolution.wait().await.unwrap();
    // One shadow on payments, the key step's; nothing else of pgevolve's.
    let shadows = helper_columns(&pool, "payments").await;
    assert_eq!(shadows.len(), 1, "{shadows:?}");
    let key = widen_step(&evolution).await;
    assert!(shadows[0].starts_with(&format!("pgevolve_k{}", &key.id.as_str()[..12])));
    let status = evolution.status().await.unwrap();
    assert!(
        !status
            .iter()
            .any(|s| s.description.starts_with("change type")),
        "{status:#?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    evolution.switch().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ok = stop_all(old, "old build").await;
    assert_rows_match(&pool, &expected, "before contract").await;
    evolution.contract().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok += stop_all(new, "new build").await;
    assert!(ok > 200, "only {ok} writes");
    assert_rows_match(&pool, &expected, "after contract").await;
    assert_widened(&pool).await;
    // The widened reference takes a value past the integer range through the accessors.
    let wide = Payment {
        id: 0,
        account_id: 5_000_000_000,
        amount: 7,
    }
    .insert_returning(&pool)
    .await
    .unwrap();
    assert_eq!(
        Payment::find(&wide.id, &pool)
            .await
            .unwrap()
            .unwrap()
            .account_id,
        5_000_000_000
    );
    support::assert_reboot_changes_nothing::<Payment>(&pool, "payments").await;
}

/// With `Payment` a model of the build: an abort after validate and one after switch, while
/// the old build and the new one (both models' accessors, reads checked) write through and
/// after it, leave the catalog of both tables as before boot and keep every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_with_the_referencing_model_restores_both_tables_catalog_and_keeps_every_write() {
    if child::in_child() {
        return;
    }
    for at in [AbortAt::Validated, AbortAt::Switched] {
        aborted_at(at, Build::Models).await;
    }
}

/// Boots `evolver` and expects it to fail before any DDL: the error names every one of `names`,
/// and the catalog of every one of `tables` is as before.
async fn refused_unchanged(
    pool: &PgPool,
    evolver: Evolver,
    tables: &[&str],
    names: &[&str],
    case: &str,
) {
    let mut before = Vec::new();
    for table in tables {
        before.push(catalog_snapshot(pool, table).await);
    }
    let error = evolver.boot().await.map(|_| ()).unwrap_err().to_string();
    for name in names {
        assert!(
            error.contains(name),
            "{case}: `{name}` missing from: {error}"
        );
    }
    for (table, before) in tables.iter().zip(before) {
        assert_eq!(
            catalog_snapshot(pool, table).await,
            before,
            "{case}: {table} changed"
        );
    }
}

/// Other declarations of the referencing column in the new build.
mod declared {
    use pgevolve::Evolve;

    /// `i64` with no `type_from`.
    #[derive(Evolve, Debug)]
    #[evolve(table = "payments")]
    pub struct PlainWide {
        #[evolve(primary_key, generated)]
        pub id: i64,
        pub account_id: i64,
        pub amount: i32,
    }

    /// A type change of its own (no `references`).
    #[derive(Evolve, Debug)]
    #[evolve(table = "payments")]
    pub struct OwnTypeChange {
        #[evolve(primary_key, generated)]
        pub id: i64,
        #[evolve(type_from = "integer")]
        pub account_id: i64,
        pub amount: i32,
    }

    /// Still `i32`: it could not read the column once the key's contract widened it.
    #[derive(Evolve, Debug)]
    #[evolve(table = "payments")]
    pub struct StillNarrow {
        #[evolve(primary_key, generated)]
        pub id: i64,
        pub account_id: i32,
        pub amount: i32,
    }
}

/// A referencing model that does not declare its column as widened with the key (`i64` alone,
/// a type change of its own, or still `i32`): the boot fails with drift that names the field
/// and the declaration to write, and neither table changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referencing_model_not_declared_widened_with_the_key_is_drift_naming_the_fix_and_changes_nothing()
 {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(8).await;
    seed(&pool).await;
    let fix = "declare field `account_id` `i64` with `#[evolve(type_from = \"integer\", references = \"accounts(id)\")]`";
    let both = ["accounts", "payments"];
    let names = ["public.payments", fix];
    let key = || Evolver::new(pool.clone()).model::<Account>();
    for (evolver, case) in [
        (key().model::<declared::PlainWide>(), "i64"),
        (key().model::<declared::OwnTypeChange>(), "type_from"),
        (key().model::<declared::StillNarrow>(), "i32"),
    ] {
        refused_unchanged(&pool, evolver, &both, &names, case).await;
    }
}

/// The referencing model alone, its key widened by no model of the build: drift naming the
/// key's attribute to write, nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widened_reference_without_its_key_in_the_build_is_drift_and_changes_nothing() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(8).await;
    seed(&pool).await;
    let names = [
        "no model of this build widens that key",
        "#[evolve(primary_key, type_from = \"integer\")]",
    ];
    let evolver = Evolver::new(pool.clone()).model::<Payment>();
    refused_unchanged(&pool, evolver, &["accounts", "payments"], &names, "no key").await;
}

/// The widen step's recorded progress: (phase, rows done, rows estimated).
async fn recorded_progress(pool: &PgPool) -> (String, i64, Option<i64>) {
    let id = widen_step_id();
    sqlx::query_as("SELECT phase, rows_done, rows_estimated FROM pgevolve.steps WHERE id = $1")
        .bind(id.as_str())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Polls `check` every 20 ms until it gives a value, for at most `within`.
async fn until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < within, "waited in vain for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The health bound of the referencing fill's pause test: a snapshot older than 1 s pauses.
fn pausing_evolver(pool: &PgPool) -> Evolver {
    crash_evolver(pool).backfill_options(
        BackfillOptions::default().health(
            pgevolve::HealthBounds::off()
                .oldest_transaction(Duration::from_secs(1))
                .interval(Duration::from_millis(100)),
        ),
    )
}

/// The referencing fill reports its rows in the state store (what `pgevolve status` reads);
/// an operator's pause of the step (`pgevolve pause`), sent while a child process's fill is
/// held inside its second batch (`key-reference-fill-batch`), stops it before the third
/// (rows stand still) until it is resumed; a snapshot held open past the health bound pauses
/// it (recorded in `health_pauses` for the step, journaled) until it commits; then it
/// finishes, and every row of both tables is as last written by the old build writing
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_referencing_fill_reports_progress_and_honours_an_operators_pause_and_a_health_pause() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(16).await;
    seed(&pool).await;
    let expected = expected_from(&pool).await;
    let old = writer(&pool, Build::Old, 0, expected.clone());
    let step = widen_step_id();
    // The fill held inside its second batch: the first batch's rows recorded, the estimate the
    // referencing table's.
    let mut child = ChildProcess::held_at(
        "key_widening_child_process",
        "pausing",
        db.url(),
        "key-reference-fill-batch",
    );
    let (phase, first_batch, estimate) = recorded_progress(&pool).await;
    assert_eq!(phase, "backfill");
    assert!(first_batch > 0, "no batch of the fill recorded");
    assert!(estimate.unwrap_or(0) >= 12_000, "estimate {estimate:?}");

    // An operator's pause: the held batch commits, and the fill stops before the next one.
    let requests = pgevolve::__private::Requests::new("pgevolve");
    let mut conn = pool.acquire().await.unwrap();
    requests
        .submit(
            &mut conn,
            pgevolve::__private::Action::Pause,
            Some(step.as_str()),
            None,
            "test",
        )
        .await
        .unwrap();
    child.release();
    until(
        "the pause journaled by the walk",
        Duration::from_secs(30),
        || async { (journal_count(&pool, step.as_str(), "paused").await > 0).then_some(()) },
    )
    .await;
    let (_, paused_at, _) = recorded_progress(&pool).await;
    assert!(paused_at > first_batch, "the held batch did not commit");
    // Meanwhile a snapshot is opened and held past the health bound.
    let mut holder = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let mut snapshot = sqlx::Connection::begin(&mut holder).await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *snapshot)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM accounts")
        .execute(&mut *snapshot)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (phase, still, _) = recorded_progress(&pool).await;
    assert_eq!(
        (phase.as_str(), still),
        ("backfill", paused_at),
        "rows filled while paused"
    );
    assert!(
        null_shadows(&pool, "payments").await > 0,
        "the fill had finished"
    );

    // The operator's pause lifted: the fill pauses on the database's health instead.
    requests
        .submit(
            &mut conn,
            pgevolve::__private::Action::Resume,
            Some(step.as_str()),
            None,
            "test",
        )
        .await
        .unwrap();
    let reason: String = until(
        "a health pause of the step",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar("SELECT reason FROM pgevolve.health_pauses WHERE step_id = $1")
                .bind(step.as_str())
                .fetch_optional(&pool)
                .await
                .unwrap()
        },
    )
    .await;
    assert_eq!(reason, "xmin_horizon");
    let (_, before, _) = recorded_progress(&pool).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (phase, after, _) = recorded_progress(&pool).await;
    assert_eq!(
        (phase.as_str(), after),
        ("backfill", before),
        "rows filled during the health pause"
    );
    snapshot.commit().await.unwrap();
    // The child validates and ends; this process boots next and goes on.
    child.expect("VALIDATED");
    child.wait_for_success();
    let journaled: Vec<String> = sqlx::query_scalar(
        "SELECT event FROM pgevolve.journal WHERE step_id = $1 AND event IN ('health paused', 'health resumed', 'paused', 'resumed') ORDER BY id",
    )
    .bind(step.as_str())
    .fetch_all(&pool)
    .await
    .unwrap();
    for event in ["paused", "resumed", "health paused", "health resumed"] {
        assert!(
            journaled.iter().any(|e| e == event),
            "{event}: {journaled:?}"
        );
    }
    assert_eq!(null_shadows(&pool, "payments").await, 0);
    let evolution = pausing_evolver(&pool).boot().await.unwrap();
    evolution.wait().await.unwrap();
    evolution.switch().await.unwrap();
    stop_all(vec![old], "old build").await;
    evolution.contract().await.unwrap();
    assert_rows_match(&pool, &expected, "after contract").await;
    assert_widened(&pool).await;
}

/// How often the journal of `step` has `event`.
async fn journal_count(pool: &PgPool, step: &str, event: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pgevolve.journal WHERE step_id = $1 AND event = $2")
        .bind(step)
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A tree: the key and the self-reference (`parent_id -> nodes.id`) widened by one step.
#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "nodes")]
pub struct Node {
    #[evolve(primary_key, type_from = "integer")]
    pub id: i64,
    #[evolve(type_from = "integer", references = "nodes(id)")]
    pub parent_id: Option<i64>,
    pub label: String,
}

/// Every node as (parent, label), by key.
async fn nodes(pool: &PgPool) -> BTreeMap<i64, (Option<i64>, String)> {
    sqlx::query_as::<_, (i64, Option<i64>, String)>(
        "SELECT id::int8, parent_id::int8, label FROM nodes",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, parent, label)| (id, (parent, label)))
    .collect()
}

/// A self-referencing foreign key (`nodes.parent_id -> nodes.id`) is widened with the key it
/// references, on the same table, while an old build (raw SQL, integer parameters) and the new
/// one (`Node`'s accessors, each node read back first) insert nodes and re-parent them: every
/// row as last written, both columns bigint, the foreign key under its name and validated;
/// then an abort on a second database leaves its catalog as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_self_referencing_key_is_widened_with_its_reference_while_old_and_new_builds_write() {
    if child::in_child() {
        return;
    }
    for abort in [false, true] {
        let (_db, pool) = database(16).await;
        sqlx::raw_sql(
            "CREATE TABLE nodes (id serial PRIMARY KEY, parent_id integer REFERENCES nodes (id), label text NOT NULL);
             INSERT INTO nodes (label) SELECT 'node ' || g FROM generate_series(1, 2000) g;
             UPDATE nodes SET parent_id = 1 + (id * 7) % (id - 1) WHERE id > 1;
             ANALYZE nodes;",
        )
        .execute(&pool)
        .await
        .unwrap();
        let before = catalog_snapshot(&pool, "nodes").await;
        let expected = Arc::new(Mutex::new(nodes(&pool).await));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        // The old build writes from before the boot, the new one once it is up.
        let spawn = |lane: u64, new: bool| {
            let (pool, expected, stop) = (pool.clone(), expected.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let mut e = expected.lock().await;
                    let keys: Vec<i64> = e.keys().copied().collect();
                    let parent = keys[((n * 7919 + lane * 31) as usize) % keys.len()];
                    let target = keys[((n * 104_729 + lane * 17) as usize) % keys.len()];
                    let label = format!("{lane}-{n}");
                    let result: Result<(), String> = match (n % 2, new) {
                        (0, false) => sqlx::query_scalar::<_, i32>(
                            "INSERT INTO nodes (parent_id, label) VALUES ($1::integer, $2) RETURNING id",
                        )
                        .bind(parent as i32)
                        .bind(&label)
                        .fetch_one(&pool)
                        .await
                        .map(|id| {
                            e.insert(id as i64, (Some(parent), label));
                        })
                        .map_err(|x| x.to_string()),
                        (0, true) => {
                            let id = 70_000_000 + n as i64;
                            Node { id, parent_id: Some(parent), label: label.clone() }
                                .insert(&pool)
                                .await
                                .map(|_| {
                                    e.insert(id, (Some(parent), label));
                                })
                                .map_err(|x| x.to_string())
                        }
                        (_, false) => sqlx::query("UPDATE nodes SET parent_id = $1::integer WHERE id = $2::integer")
                            .bind(parent as i32)
                            .bind(target as i32)
                            .execute(&pool)
                            .await
                            .map(|_| {
                                e.get_mut(&target).unwrap().0 = Some(parent);
                            })
                            .map_err(|x| x.to_string()),
                        (_, true) => {
                            let (was, label) = e[&target].clone();
                            match Node::find(&target, &pool).await {
                                Ok(Some(node)) if node == (Node { id: target, parent_id: was, label: label.clone() }) => {
                                    Node { id: target, parent_id: Some(parent), label }
                                        .update(&pool)
                                        .await
                                        .map(|_| {
                                            e.get_mut(&target).unwrap().0 = Some(parent);
                                        })
                                        .map_err(|x| x.to_string())
                                }
                                other => Err(format!("Node::find({target}) gave {other:?}")),
                            }
                        }
                    };
                    drop(e);
                    result?;
                    tokio::task::yield_now().await;
                }
                Ok::<u64, String>(n)
            })
        };
        tasks.push(spawn(0, false));
        let evolution = Evolver::new(pool.clone())
            .deploy_window(DeployWindow::always())
            .model::<Node>()
            .boot()
            .await
            .unwrap();
        tasks.push(spawn(1, true));
        evolution.wait().await.unwrap();
        evolution.switch().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if abort {
            let step = widen_step(&evolution).await;
            evolution.abort(&step.id).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.store(true, Ordering::Release);
        let mut writes = 0;
        for t in tasks {
            writes += t.await.unwrap().expect("a write failed");
        }
        assert!(writes > 20, "only {writes} writes");
        if abort {
            assert_eq!(
                catalog_snapshot(&pool, "nodes").await,
                before,
                "catalog not restored"
            );
        } else {
            evolution.contract().await.unwrap();
            assert_eq!(column_type(&pool, "nodes", "id").await, "bigint");
            assert_eq!(column_type(&pool, "nodes", "parent_id").await, "bigint");
            let after = catalog_snapshot(&pool, "nodes").await;
            assert!(
                after.contains(
                    &"constraint nodes_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES nodes(id) validated=true"
                        .to_string()
                ) && after.contains(&"constraint nodes_pkey PRIMARY KEY (id) validated=true".to_string())
                    && !after.iter().any(|l| l.contains("pgevolve")),
                "{after:#?}"
            );
        }
        assert!(
            nodes(&pool).await == *expected.lock().await,
            "nodes differ (abort: {abort})"
        );
    }
}

/// What refuses the widening before any DDL: the setup of each case on top of `seed`, the
/// referencing table it adds, and what the error must name.
const REFUSED: &[(&str, &str, &str, &[&str])] = &[
    (
        "a multi-column foreign key",
        "ALTER TABLE accounts ADD CONSTRAINT accounts_id_name_key UNIQUE (id, name);
         CREATE TABLE ledger (id serial PRIMARY KEY, account_id integer, account_name text,
             CONSTRAINT ledger_account_fkey FOREIGN KEY (account_id, account_name) REFERENCES accounts (id, name));",
        "ledger",
        &["ledger_account_fkey", "public.ledger", "multi-column", "drop that foreign key"],
    ),
    (
        "a partitioned referencing table",
        "CREATE TABLE events (id bigint NOT NULL, account_id integer REFERENCES accounts (id)) PARTITION BY RANGE (id);
         CREATE TABLE events_0 PARTITION OF events FOR VALUES FROM (0) TO (1000000);",
        "events",
        &["events_account_id_fkey", "public.events", "partitioned", "add it again afterwards"],
    ),
];

/// A multi-column foreign key referencing the key, or a partitioned table referencing it: the
/// boot fails with drift naming the table, the constraint and what to do, and no table changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_column_or_partitioned_reference_is_refused_before_any_ddl_naming_table_and_constraint()
 {
    if child::in_child() {
        return;
    }
    for (case, setup, table, names) in REFUSED {
        let (_db, pool) = database(8).await;
        seed(&pool).await;
        sqlx::raw_sql(*setup).execute(&pool).await.unwrap();
        let evolver = Evolver::new(pool.clone()).model::<Account>();
        refused_unchanged(
            &pool,
            evolver,
            &["accounts", "payments", table],
            names,
            case,
        )
        .await;
    }
}

/// The key of a partitioned table: refused before any DDL, naming the table and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widening_the_key_of_a_partitioned_table_is_refused_before_any_ddl() {
    if child::in_child() {
        return;
    }
    let (_db, pool) = database(8).await;
    sqlx::raw_sql(
        "CREATE TABLE accounts (id integer NOT NULL, name text NOT NULL, PRIMARY KEY (id)) PARTITION BY RANGE (id);
         CREATE TABLE accounts_0 PARTITION OF accounts FOR VALUES FROM (0) TO (1000000);
         INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 100) g;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let names = ["public.accounts", "partitioned", "widen the key by hand"];
    let evolver = Evolver::new(pool.clone()).model::<Account>();
    refused_unchanged(&pool, evolver, &["accounts"], &names, "partitioned key").await;
}

/// The referencing fill keeps to its WAL budget (`BackfillOptions::wal_budget`), as a SQL pass
/// does: on a cluster of its own (no other test's WAL in the measure), the fill of 1,500
/// payments of about 1.5 kB (each shadow written is a new row version) takes at least half of
/// the WAL written over the budget (unpaced it takes a fraction of that; the key table, a
/// hundred narrow rows, adds little), and journals that the budget set its pace, in heap pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_referencing_fill_keeps_to_its_wal_budget() {
    if child::in_child() {
        return;
    }
    let (_cluster, pool) = support::wal::own_cluster(10).await;
    sqlx::raw_sql(
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);
         CREATE TABLE payments (
             id bigserial PRIMARY KEY,
             account_id integer NOT NULL REFERENCES accounts (id),
             memo text NOT NULL
         ) WITH (autovacuum_enabled = off);
         INSERT INTO accounts (name) SELECT 'account ' || g FROM generate_series(1, 100) g;
         INSERT INTO payments (account_id, memo) SELECT 1 + g % 100, repeat('m', 1500) FROM generate_series(1, 1500) g;
         ANALYZE accounts; ANALYZE payments;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let budget = 512 << 10;
    let options = BackfillOptions {
        batch_timeout: Duration::from_secs(5),
        ..BackfillOptions::default()
    }
    .wal_budget(budget)
    .health(pgevolve::HealthBounds::off());
    let before = support::wal::Before::now(&pool).await;
    let evolution = crash_evolver(&pool)
        .backfill_options(options)
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let spent = before.spent(&pool).await;
    assert_eq!(null_shadows(&pool, "payments").await, 0);
    spent
        .assert_kept_to(&pool, budget, " heap pages wrote ")
        .await;
}
