//! The real `pgevolve` binary against a real PostgreSQL, while an evolution booted in this test
//! process serves as the application's instance: its text and JSON, the requests it records and
//! the instance carries out, and its exit codes.

use std::process::Command;
use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, Evolution, Evolver};
use pgevolve_testkit::TestDatabase;
use serde_json::Value;
use sqlx::PgPool;

mod users {
    use pgevolve::Evolve;

    /// `users` gains a NOT NULL column filled in batches.
    #[derive(Evolve)]
    #[evolve(table = "users")]
    #[allow(dead_code)]
    pub struct User {
        #[evolve(primary_key)]
        pub id: i64,
        pub email: String,
        #[evolve(backfill = "lower(email)")]
        pub email_normalized: String,
    }
}

mod orders {
    use pgevolve::Evolve;

    /// `orders` gains a NOT NULL column filled in batches, aborted by the CLI.
    #[derive(Evolve)]
    #[evolve(table = "orders")]
    #[allow(dead_code)]
    pub struct Order {
        #[evolve(primary_key)]
        pub id: i64,
        pub sku: String,
        #[evolve(backfill = "upper(sku)")]
        pub sku_upper: String,
    }
}

mod customers {
    use pgevolve::Evolve;

    /// `customers.name` renamed to `full_name`, switched and contracted through the CLI.
    #[derive(Evolve)]
    #[evolve(table = "customers")]
    #[allow(dead_code)]
    pub struct Customer {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(renamed_from = "name")]
        pub full_name: String,
    }
}

/// What one run of the binary gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "pgevolve failed: {self:#?}");
        self
    }
}

/// Runs `pgevolve args...` against `url` (off the async workers, so the evolution's tasks in
/// this process keep running).
async fn pgevolve(url: &str, args: &[&str]) -> Run {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_pgevolve"))
            .args(&args)
            .env("DATABASE_URL", &url)
            .env_remove("PGEVOLVE_STATE_SCHEMA")
            .output()
            .expect("the pgevolve binary runs");
        Run {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// The first line `pgevolve args...` prints (for `watch`, which runs until the work is done):
/// read from the running binary, which is then killed.
async fn watch_first_line(url: &str, args: &[&str]) -> String {
    use std::io::BufRead;
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgevolve"))
            .args(&args)
            .env("DATABASE_URL", &url)
            .env_remove("PGEVOLVE_STATE_SCHEMA")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the pgevolve binary runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        line
    })
    .await
    .unwrap()
}

async fn seed(pool: &PgPool, table: &str, column: &str, rows: i64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, {column} text NOT NULL);
         INSERT INTO {table} SELECT g, 'Value' || g || '@Example.COM' FROM generate_series(1, {rows}) g;
         ANALYZE {table};"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// The step of `evolution` whose description names `column`.
fn step_of(evolution: &Evolution, column: &str) -> pgevolve::PlannedStep {
    evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| s.describe().contains(column))
        .unwrap_or_else(|| panic!("no step for {column}"))
}

/// Polls `query` (one boolean) until it holds, or fails naming `what`.
async fn until(pool: &PgPool, query: &str, bind: &str, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let holds: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_string()))
            .bind(bind)
            .fetch_one(pool)
            .await
            .unwrap();
        if holds {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn checkpoint(pool: &PgPool, step: &str) -> (Option<String>, i64) {
    sqlx::query_as("SELECT checkpoint::text, rows_done FROM pgevolve.steps WHERE id = $1")
        .bind(step)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// One evolution, watched and steered through the CLI: status and plan while the backfill runs,
/// a pause that holds the checkpoint still until resume, history, and contract refused outside
/// the deploy window then run with the window overridden, the reason journaled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_plan_pause_resume_history_and_contract_through_the_binary() {
    const ROWS: i64 = 20_000;
    let db = TestDatabase::new().await.expect("throwaway PostgreSQL");
    let pool = db.pool(10).await.unwrap();
    seed(&pool, "users", "email", ROWS).await;
    // Small batches with a pause after each: the backfill takes seconds, long enough to watch.
    let evolution = Evolver::new(pool.clone())
        .model::<users::User>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 200,
            min_batch_size: 200,
            max_batch_size: 200,
            pause: Duration::from_millis(40),
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    let step = step_of(&evolution, "email_normalized");
    let id = step.id.to_string();
    until(
        &pool,
        "SELECT rows_done > 0 FROM pgevolve.steps WHERE id = $1",
        &id,
        "the backfill starting",
        Duration::from_secs(20),
    )
    .await;

    // status while the backfill runs: text, and JSON with the rate measured over a sample.
    let text = pgevolve(db.url(), &["status", "--sample", "0.5"])
        .await
        .ok();
    assert!(text.stdout.contains(&id), "{}", text.stdout);
    assert!(text.stdout.contains("backfill running"), "{}", text.stdout);
    assert!(text.stdout.contains("rows/s"), "{}", text.stdout);
    assert!(
        text.stdout.contains(evolution.instance_id()),
        "{}",
        text.stdout
    );
    let status = pgevolve(db.url(), &["status", "--json", "--sample", "0.5"])
        .await
        .ok()
        .json();
    let s = &status["steps"][0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["table"], "public.users");
    assert_eq!(s["next_phase"], "backfill");
    assert_eq!(s["backfilling"], true);
    assert_eq!(s["rows_estimated"], ROWS);
    assert!(s["rows_per_second"].as_f64().unwrap() > 0.0, "{s}");
    assert!(status["leader"]["pid"].as_i64().is_some(), "{status}");
    assert_eq!(
        status["leader"]["instance"],
        evolution.instance_id(),
        "{status}"
    );
    assert_eq!(status["instances"][0]["leads"], true, "{status}");
    assert_eq!(status["instances"][0]["id"], evolution.instance_id());

    // plan: the SQL the runtime recorded at boot, every statement of every phase.
    let plan = pgevolve(db.url(), &["plan"]).await.ok();
    for phase in &step.phases {
        assert!(
            plan.stdout
                .contains(&format!("  {}: {}", phase.phase, phase.note)),
            "{}",
            plan.stdout
        );
        for statement in &phase.statements {
            for line in statement.sql.lines() {
                assert!(
                    plan.stdout.contains(line),
                    "missing {line:?} in\n{}",
                    plan.stdout
                );
            }
        }
    }
    // The backfill still ahead shows its cost, under its phase.
    let backfill_at = plan.stdout.find("  backfill: ").expect("a backfill phase");
    assert!(
        plan.stdout[backfill_at..].contains("    -- cost: ") && plan.stdout.contains("rows/s"),
        "{}",
        plan.stdout
    );
    let plan = pgevolve(db.url(), &["plan", "--json", &id[..8]])
        .await
        .ok()
        .json();
    assert_eq!(plan[0]["id"], id.as_str());
    assert!(
        plan[0]["backfill_estimate"]["rows_per_sec"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{plan}"
    );
    let phases: Vec<&str> = plan[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["expand", "backfill", "validate", "contract", "abort"]
    );

    // pause: the leader stops before its next batch; the checkpoint then stays put.
    let paused = pgevolve(db.url(), &["pause", "--reason", "peak traffic", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(paused["outcome"], "done", "{paused}");
    until(
        &pool,
        "SELECT EXISTS (SELECT FROM pgevolve.journal WHERE step_id = $1 AND event = 'paused')",
        &id,
        "the leader journaling that it paused",
        Duration::from_secs(10),
    )
    .await;
    let held = checkpoint(&pool, &id).await;
    assert!(held.1 < ROWS, "paused before the end: {held:?}");
    let watching = Instant::now();
    while watching.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            checkpoint(&pool, &id).await,
            held,
            "the checkpoint moved while paused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = pgevolve(db.url(), &["status", "--sample", "0"]).await.ok();
    assert!(text.stdout.contains("[PAUSED]"), "{}", text.stdout);
    assert!(
        text.stdout.contains("paused: every step"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("peak traffic"), "{}", text.stdout);
    let status = pgevolve(db.url(), &["status", "--json", "--sample", "0"])
        .await
        .ok()
        .json();
    assert_eq!(status["steps"][0]["paused"], true);
    assert_eq!(status["paused"][0]["scope"], "*");

    // resume: the backfill goes on from the checkpoint and the step validates.
    let resumed = pgevolve(db.url(), &["resume"]).await.ok();
    assert!(
        resumed.stdout.contains("nothing is paused now"),
        "{}",
        resumed.stdout
    );
    tokio::time::timeout(Duration::from_secs(60), evolution.wait())
        .await
        .expect("the backfill finished after resume")
        .unwrap();
    let after = checkpoint(&pool, &id).await;
    assert!(after.1 > held.1, "{after:?} after {held:?}");
    let unfilled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE email_normalized IS DISTINCT FROM lower(email)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unfilled, 0);

    // history: the pause, the resume and the phases, as text and JSON.
    let history = pgevolve(db.url(), &["history", "--step", &id]).await.ok();
    for event in ["paused", "resumed", "backfill done", "validate done"] {
        assert!(
            history.stdout.contains(event),
            "no {event:?} in\n{}",
            history.stdout
        );
    }
    let history = pgevolve(db.url(), &["history", "--json"]).await.ok().json();
    let events: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let at = |name: &str| events.iter().position(|e| *e == name).unwrap();
    assert!(
        at("paused") < at("resumed") && at("resumed") < at("backfill done"),
        "{events:?}"
    );
    assert!(
        at("request pause done") < at("request resume done"),
        "{events:?}"
    );

    // watch ends at once: nothing is left for the background work.
    let watch = pgevolve(db.url(), &["watch"]).await.ok();
    assert!(
        watch
            .stdout
            .contains("contract waits for `pgevolve contract`"),
        "{}",
        watch.stdout
    );

    // contract: refused outside the deploy window (the test clock is a Saturday), exit 1.
    let refused = pgevolve(db.url(), &["contract", "--timeout", "30"]).await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(
        refused.stderr.contains("deploy window"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--override-window"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&id),
        "names the step: {}",
        refused.stderr
    );
    let nullable: bool = sqlx::query_scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'email_normalized'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!nullable, "the refused contract changed nothing");

    // contract --override-window: runs, and the journal keeps the reason.
    let done = pgevolve(
        db.url(),
        &[
            "contract",
            "--override-window",
            "incident 42: disk full",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(done["outcome"], "done", "{done}");
    let not_null: bool = sqlx::query_scalar(
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'email_normalized'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(not_null, "contracted: SET NOT NULL ran");
    let overridden: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM pgevolve.journal WHERE step_id = $1 AND event = 'deploy window overridden'",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(overridden.len(), 1, "{overridden:?}");
    assert!(
        overridden[0].contains("incident 42: disk full"),
        "{overridden:?}"
    );
    let status = pgevolve(db.url(), &["status", "--json"]).await.ok().json();
    assert_eq!(status["steps"][0]["phase"], "contract");
}

/// `pause STEP` pauses that step only: another table's backfill goes on and finishes while the
/// paused one's checkpoint stands still, `status` marks only the paused step, and `resume STEP`
/// lets it finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_of_one_step_holds_that_backfill_while_another_tables_backfill_finishes() {
    const ROWS: i64 = 6_000;
    let db = TestDatabase::new().await.expect("throwaway PostgreSQL");
    let pool = db.pool(10).await.unwrap();
    seed(&pool, "users", "email", ROWS).await;
    seed(&pool, "orders", "sku", ROWS).await;
    let evolution = Evolver::new(pool.clone())
        .model::<users::User>()
        .model::<orders::Order>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 100,
            min_batch_size: 100,
            max_batch_size: 100,
            pause: Duration::from_millis(20),
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    let users_step = step_of(&evolution, "email_normalized").id.to_string();
    let orders_step = step_of(&evolution, "sku_upper").id.to_string();

    // Pause the users' backfill (the first in plan order) as soon as it is under way.
    until(
        &pool,
        "SELECT rows_done > 0 FROM pgevolve.steps WHERE id = $1",
        &users_step,
        "the users' backfill starting",
        Duration::from_secs(20),
    )
    .await;
    pgevolve(
        db.url(),
        &["pause", &users_step[..8], "--reason", "users only"],
    )
    .await
    .ok();
    until(
        &pool,
        "SELECT EXISTS (SELECT FROM pgevolve.journal WHERE step_id = $1 AND event = 'paused')",
        &users_step,
        "the users' backfill pausing",
        Duration::from_secs(10),
    )
    .await;
    let held = checkpoint(&pool, &users_step).await;

    // The orders' backfill is not held by it: it fills every row meanwhile.
    until(
        &pool,
        "SELECT phase <> 'expand' FROM pgevolve.steps WHERE id = $1",
        &orders_step,
        "the orders' backfill finishing while the users' is paused",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        checkpoint(&pool, &users_step).await,
        held,
        "the paused step's checkpoint moved"
    );
    let status = pgevolve(db.url(), &["status", "--json", "--sample", "0"])
        .await
        .ok()
        .json();
    let paused_of = |step: &str| {
        status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == step)
            .map(|s| s["paused"].clone())
    };
    assert_eq!(paused_of(&users_step), Some(Value::Bool(true)), "{status}");
    assert_eq!(
        paused_of(&orders_step),
        Some(Value::Bool(false)),
        "{status}"
    );

    // resume STEP: the users' backfill finishes from its checkpoint.
    pgevolve(db.url(), &["resume", &users_step[..8]]).await.ok();
    tokio::time::timeout(Duration::from_secs(60), evolution.wait())
        .await
        .expect("the backfills finished after resume")
        .unwrap();
    let wrong: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM users WHERE email_normalized IS DISTINCT FROM lower(email)) \
              + (SELECT count(*) FROM orders WHERE sku_upper IS DISTINCT FROM upper(sku))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
}

/// `switch` then `contract` of a rename through the binary, carried out by the live instance:
/// the phases are recorded, the instance's accessors follow them (a row an old build wrote to
/// the old column reads back through the new name at every phase), the old column is gone after
/// contract, and `history` shows both requests done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switch_then_contract_of_a_rename_through_the_binary_take_effect_in_the_live_instance() {
    let db = TestDatabase::new().await.expect("throwaway PostgreSQL");
    let pool = db.pool(10).await.unwrap();
    seed(&pool, "customers", "name", 1_000).await;
    let evolution = Evolver::new(pool.clone())
        .deploy_window(pgevolve::DeployWindow::always())
        .model::<customers::Customer>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let id = step_of(&evolution, "full_name").id.to_string();
    let phase = || async {
        sqlx::query_scalar::<_, String>("SELECT phase FROM pgevolve.steps WHERE id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let read = || async {
        customers::Customer::find(&7, &pool)
            .await
            .unwrap()
            .expect("row 7")
            .full_name
    };
    // An old build writes the old column; the new build reads it through the new name.
    sqlx::query("UPDATE customers SET name = 'Written by the old build' WHERE id = 7")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(read().await, "Written by the old build");

    let switched = pgevolve(db.url(), &["switch", "--json"]).await.ok().json();
    assert_eq!(switched["outcome"], "done", "{switched}");
    assert_eq!(phase().await, "switch");
    assert_eq!(read().await, "Written by the old build");

    let contracted = pgevolve(db.url(), &["contract", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(contracted["outcome"], "done", "{contracted}");
    assert_eq!(phase().await, "contract");
    let old_column: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'customers'::regclass \
         AND attname = 'name' AND NOT attisdropped",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(old_column, 0, "the old column is gone after contract");
    assert_eq!(read().await, "Written by the old build");

    let history = pgevolve(db.url(), &["history", "--json"]).await.ok().json();
    let events: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for done in ["request switch done", "request contract done"] {
        assert!(events.contains(&done), "no {done:?} in {events:?}");
    }
}

/// The table's columns, constraints and triggers, to compare before and after an abort.
async fn shape(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'column ' || attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull \
           FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped \
         UNION ALL SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass \
         UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgrelid = $1::regclass \
         UNION ALL SELECT 'index ' || indexrelid::regclass::text FROM pg_index WHERE indrelid = $1::regclass \
         ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// `abort STEP` through the binary puts the table back as it was; `doctor` reports on the
/// server; a request no live instance takes ends with exit code 3 and says so; bad input gets
/// exit code 2 with its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_restores_the_table_and_requests_without_an_instance_say_so() {
    let db = TestDatabase::new().await.expect("throwaway PostgreSQL");
    let pool = db.pool(10).await.unwrap();
    seed(&pool, "orders", "sku", 2_000).await;
    let before = shape(&pool, "orders").await;

    // Before any boot: no state store, exit 2.
    let none = pgevolve(db.url(), &["status"]).await;
    assert_eq!(none.code, 2, "{none:#?}");
    assert!(
        none.stderr
            .contains("no pgevolve state store in schema \"pgevolve\""),
        "{}",
        none.stderr
    );

    let evolution = Evolver::new(pool.clone())
        .model::<orders::Order>()
        .backfill_options(BackfillOptions::unthrottled())
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let id = step_of(&evolution, "sku_upper").id.to_string();
    assert_ne!(
        shape(&pool, "orders").await,
        before,
        "the expand changed the table"
    );

    let unknown = pgevolve(db.url(), &["abort", "nosuchstep"]).await;
    assert_eq!(unknown.code, 2, "{unknown:#?}");
    assert!(
        unknown.stderr.contains("no step matches \"nosuchstep\""),
        "{}",
        unknown.stderr
    );

    let aborted = pgevolve(db.url(), &["abort", &id]).await.ok();
    assert!(
        aborted.stdout.contains("aborted step"),
        "{}",
        aborted.stdout
    );
    assert_eq!(
        shape(&pool, "orders").await,
        before,
        "the abort restored the table"
    );
    let phase: String = sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(phase, "aborted");
    let history = pgevolve(db.url(), &["history", "--step", &id]).await.ok();
    assert!(history.stdout.contains("abort done"), "{}", history.stdout);
    assert!(
        history.stdout.contains("request abort done"),
        "{}",
        history.stdout
    );

    let doctor = pgevolve(db.url(), &["doctor", "--json"]).await.ok().json();
    let checks = doctor["checks"].as_array().unwrap();
    let status_of = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {doctor}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status_of("server version"), "ok");
    assert_eq!(status_of("privileges"), "ok");
    assert_eq!(status_of("pooler"), "ok");
    assert_eq!(status_of("invalid indexes"), "ok");
    assert_eq!(status_of("state store"), "ok");
    let text = pgevolve(db.url(), &["doctor"]).await.ok();
    assert!(text.stdout.contains("long transactions"), "{}", text.stdout);

    // No instance left: a request is not picked up, says so, exits 3, and is cancelled.
    drop(evolution);
    until(
        &pool,
        "SELECT NOT EXISTS (SELECT FROM pgevolve.instances WHERE $1 = $1)",
        "",
        "the instance deregistering",
        Duration::from_secs(10),
    )
    .await;
    let lonely = pgevolve(db.url(), &["switch", "--timeout", "2"]).await;
    assert_eq!(lonely.code, 3, "{lonely:#?}");
    assert!(
        lonely.stderr.contains("no live instance picked up request"),
        "{}",
        lonely.stderr
    );
    assert!(
        lonely.stderr.contains("is the application running?"),
        "{}",
        lonely.stderr
    );
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM pgevolve.requests WHERE action = 'switch'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(outcome, "cancelled");
}

/// A backfill waiting for the database's health, as the binary shows it: a session holding a
/// snapshot open past the bound, `status` (text and JSON) naming the reason and what was
/// measured, then nothing once the snapshot is gone and the backfill finished, and both
/// events in `history`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_a_backfill_waiting_for_an_open_snapshot_until_it_commits() {
    use sqlx::Connection;
    // Batches of 200 rows at least 20 ms apart fill at most 10,000 rows a second on any machine,
    // and the wait starts about 1.3 s after the snapshot (the 1 s bound, the 200 ms checks): the
    // backfill is still under way then.
    const ROWS: i64 = 40_000;
    let db = TestDatabase::new().await.expect("throwaway PostgreSQL");
    let pool = db.pool(10).await.unwrap();
    seed(&pool, "users", "email", ROWS).await;
    let evolution = Evolver::new(pool.clone())
        .model::<users::User>()
        .backfill_options(
            BackfillOptions {
                initial_batch_size: 200,
                min_batch_size: 200,
                max_batch_size: 200,
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
    let id = step_of(&evolution, "email_normalized").id.to_string();
    until(
        &pool,
        "SELECT rows_done > 0 FROM pgevolve.steps WHERE id = $1",
        &id,
        "the backfill starting",
        Duration::from_secs(20),
    )
    .await;

    let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut snapshot = holder.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *snapshot)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM users")
        .execute(&mut *snapshot)
        .await
        .unwrap();
    until(
        &pool,
        "SELECT EXISTS (SELECT FROM pgevolve.health_pauses WHERE step_id = $1)",
        &id,
        "the backfill waiting for the snapshot",
        Duration::from_secs(20),
    )
    .await;

    let text = pgevolve(db.url(), &["status"]).await.ok().stdout;
    assert!(
        text.contains("[WAITING FOR HEALTH: xmin_horizon] session "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "health: the backfill of step {id} waits (xmin_horizon) for "
        )),
        "{text}"
    );
    let status = pgevolve(db.url(), &["status", "--json"]).await.ok().json();
    let pause = &status["steps"][0]["health_pause"];
    assert_eq!(pause["reason"], "xmin_horizon", "{status}");
    assert!(
        pause["detail"]
            .as_str()
            .is_some_and(|d| d.contains("has had a transaction open for")),
        "{status}"
    );
    // watch shows the wait too: its first look, as text and as JSON.
    let first = watch_first_line(db.url(), &["watch", "--interval", "0.2"]).await;
    assert!(
        first.contains(&id) && first.contains("[WAITING FOR HEALTH: xmin_horizon] session "),
        "{first}"
    );
    let first: Value =
        serde_json::from_str(&watch_first_line(db.url(), &["watch", "--json"]).await).unwrap();
    assert_eq!(
        first["steps"][0]["health_pause"]["reason"], "xmin_horizon",
        "{first}"
    );

    snapshot.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), evolution.wait())
        .await
        .expect("the backfill finished")
        .unwrap();
    let status = pgevolve(db.url(), &["status", "--json"]).await.ok().json();
    assert!(status["steps"][0]["health_pause"].is_null(), "{status}");
    let history = pgevolve(db.url(), &["history"]).await.ok().stdout;
    assert!(history.contains("health paused"), "{history}");
    assert!(history.contains("health resumed"), "{history}");
}
