//! Several builds at once, as in a rolling deploy: build N leads long background work (a
//! backfill of a million rows, or an `auto_contract` waiting for a closed deploy window) when
//! build N+1 boots in another process. N+1's boot takes seconds, it serves at once, and both
//! builds' steps finish, with old and new writers running and every row checked at the end.

use pgevolve_test_support as support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, DeployWindow, Evolution, Evolver, Phase, PinnedClock, Weekday};
use sqlx::PgPool;
use support::child::{self, ChildProcess};
use support::database;

const BOOT_BOUND: Duration = Duration::from_secs(5);

/// Build N: a backfilled column.
mod build_n {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "accounts")]
    pub struct Account {
        #[evolve(primary_key)]
        pub id: i64,
        pub email: String,
        #[evolve(backfill = "lower(email)")]
        pub email_lower: String,
    }
}

/// Build N+1: build N's model plus a nullable column and an index.
mod build_next {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "accounts")]
    pub struct Account {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(index)]
        pub email: String,
        #[evolve(backfill = "lower(email)")]
        pub email_lower: String,
        pub nickname: Option<String>,
    }
}

/// Ids the child inserts through build N+1's accessors.
const CHILD_IDS: std::ops::Range<i64> = 5_000_000..5_000_020;

/// Build N+1 in its own process: boots, reports how long it took, serves (inserts through its
/// accessors), waits for its background work and reports that too. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_build_process() {
    let Some((_, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let started = Instant::now();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<build_next::Account>()
        .boot()
        .await
        .unwrap();
    println!("\nBOOTED {}", started.elapsed().as_millis());
    for id in CHILD_IDS {
        build_next::Account {
            id,
            email: format!("Next{id}@Example.COM"),
            email_lower: format!("next{id}@example.com"),
            nickname: Some(format!("nick {id}")),
        }
        .insert(&pool)
        .await
        .unwrap();
    }
    println!("SERVED");
    std::io::stdout().flush().unwrap();
    evolution.wait().await.unwrap();
    println!("FINISHED");
    std::io::stdout().flush().unwrap();
}

/// Build N+1's process.
struct NextBuild(ChildProcess);

impl NextBuild {
    fn start(scenario: &str, url: &str) -> NextBuild {
        NextBuild(ChildProcess::start(
            "next_build_process",
            scenario,
            url,
            None,
        ))
    }

    /// Boot time reported by the child.
    fn booted(&mut self) -> Duration {
        let line = self.0.expect("BOOTED ");
        Duration::from_millis(line["BOOTED ".len()..].trim().parse().unwrap())
    }
}

async fn phase(pool: &PgPool, kind: &str) -> Option<String> {
    sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE kind = $1")
        .bind(kind)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Build N's writer: updates through build N's accessors, logging the email each row last got.
fn build_n_writer(pool: &PgPool, rows: i64, stop: Arc<AtomicBool>) -> WriterHandle {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut log = Vec::new();
        let mut n = 0i64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            // Even ids: a row a knowing writer set keeps its value against old writers' updates
            // (fill semantics), so the two kinds of writers keep to their own rows.
            let id = 2 + 2 * ((n * 7_919) % (rows / 2 - 1));
            let email = format!("Writer{n}@Example.ORG");
            let account = build_n::Account {
                id,
                email: email.clone(),
                email_lower: email.to_lowercase(),
            };
            match account.update(&pool).await {
                Ok(1) => log.push((id, email)),
                Ok(other) => panic!("update of row {id} touched {other} rows"),
                Err(e) => panic!("build N's writer failed: {e}"),
            }
        }
        log
    })
}

type WriterHandle = tokio::task::JoinHandle<Vec<(i64, String)>>;

/// A binary older than both builds: raw SQL that never names `email_lower`.
fn old_writer(pool: &PgPool, rows: i64, stop: Arc<AtomicBool>) -> WriterHandle {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut log = Vec::new();
        let mut n = 0i64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            // Odd ids (see `build_n_writer`).
            let id = 1 + 2 * ((n * 104_729) % (rows / 2));
            let email = format!("Old{n}@Example.NET");
            sqlx::query("UPDATE accounts SET email = $1 WHERE id = $2")
                .bind(&email)
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            log.push((id, email));
        }
        log
    })
}

/// Every row: `email_lower` is `lower(email)`, the last logged email of each row is there, and
/// the child's rows hold what build N+1 wrote.
async fn assert_every_row(pool: &PgPool, logs: Vec<Vec<(i64, String)>>) {
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM accounts WHERE email_lower IS DISTINCT FROM lower(email)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "rows whose email_lower is not lower(email)");
    // The writers' rows may overlap: the one that wrote last is not known across writers, so
    // each row must hold one of the values logged for it, and rows written by one writer only
    // its last value.
    let mut last: std::collections::HashMap<i64, Vec<String>> = Default::default();
    for log in &logs {
        let mut mine: std::collections::HashMap<i64, String> = Default::default();
        for (id, email) in log {
            mine.insert(*id, email.clone());
        }
        for (id, email) in mine {
            last.entry(id).or_default().push(email);
        }
    }
    assert!(
        last.len() > 50,
        "the writers barely ran: {} rows",
        last.len()
    );
    let ids: Vec<i64> = last.keys().copied().collect();
    let stored: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, email FROM accounts WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), ids.len(), "every written row exists");
    for (id, email) in stored {
        assert!(
            last[&id].contains(&email),
            "row {id} holds {email:?}, not a last value written to it: {:?}",
            last[&id]
        );
    }
    let child: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, email, email_lower, nickname FROM accounts WHERE id >= $1 ORDER BY id",
    )
    .bind(CHILD_IDS.start)
    .fetch_all(pool)
    .await
    .unwrap();
    let expected: Vec<(i64, String, String, Option<String>)> = CHILD_IDS
        .map(|id| {
            (
                id,
                format!("Next{id}@Example.COM"),
                format!("next{id}@example.com"),
                Some(format!("nick {id}")),
            )
        })
        .collect();
    assert_eq!(child, expected, "build N+1's rows as it wrote them");
}

async fn seed(pool: &PgPool, rows: i64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL);
         INSERT INTO accounts SELECT g, 'User' || g || '@Example.COM' FROM generate_series(1, {rows}) g;
         ANALYZE accounts;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

async fn stop_writers(stop: &AtomicBool, writers: Vec<WriterHandle>) -> Vec<Vec<(i64, String)>> {
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for w in writers {
        logs.push(w.await.unwrap());
    }
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_build_boots_within_5_s_while_an_older_build_backfills_a_million_rows() {
    if child::in_child() {
        return;
    }
    const ROWS: i64 = 1_000_000;
    let (db, pool) = database(20).await;
    seed(&pool, ROWS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let old = old_writer(&pool, ROWS, stop.clone());

    // Build N: even unthrottled, a million rows under two writers keep the backfill going for
    // many times N+1's boot bound (the default duty cycle would triple the test's time and
    // prove nothing more: N+1 must not wait for the pass, however fast it goes).
    let first: Evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<build_n::Account>()
        .backfill_options(BackfillOptions::unthrottled())
        .boot()
        .await
        .unwrap();
    let writer = build_n_writer(&pool, ROWS, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while phase(&pool, "add_backfilled_column").await.as_deref() != Some("expand")
        || first.progress().iter().all(|p| p.rows_done == 0)
    {
        assert!(
            Instant::now() < deadline,
            "build N's backfill did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Build N+1 boots in another process while N backfills.
    let mut next = NextBuild::start("backfill", db.url());
    let booted = next.booted();
    let during: Option<String> = phase(&pool, "add_backfilled_column").await;
    assert!(
        booted < BOOT_BOUND,
        "build N+1 took {booted:?} to boot while build N backfilled"
    );
    assert_eq!(
        during.as_deref(),
        Some("expand"),
        "build N's backfill was still running when N+1 had booted"
    );
    assert!(!first.is_finished());
    next.0.expect("SERVED");

    // Both builds' steps finish; nothing runs twice.
    first.wait().await.unwrap();
    next.0.expect("FINISHED");
    let logs = stop_writers(&stop, vec![old, writer]).await;
    assert_eq!(
        phase(&pool, "add_backfilled_column").await.as_deref(),
        Some("validate")
    );
    assert_eq!(
        phase(&pool, "add_nullable_column").await.as_deref(),
        Some("expand")
    );
    assert_eq!(
        phase(&pool, "create_index").await.as_deref(),
        Some("expand")
    );
    let backfills: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgevolve.journal WHERE event = 'backfill done'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(backfills, 1, "the backfill ran once");
    assert_every_row(&pool, logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_build_boots_and_finishes_while_an_older_build_waits_for_a_closed_deploy_window() {
    if child::in_child() {
        return;
    }
    const ROWS: i64 = 20_000;
    let (db, pool) = database(20).await;
    seed(&pool, ROWS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let old = old_writer(&pool, ROWS, stop.clone());

    // Build N contracts by itself, but it is Saturday: its contract waits for Monday.
    let first = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::default())
        .clock(Arc::new(PinnedClock::on(Weekday::Saturday, 12, 0)))
        .auto_contract(true)
        .model::<build_n::Account>()
        .boot()
        .await
        .unwrap();
    let writer = build_n_writer(&pool, ROWS, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while phase(&pool, "add_backfilled_column").await.as_deref() != Some("validate") {
        assert!(Instant::now() < deadline, "build N did not validate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut next = NextBuild::start("window", db.url());
    let booted = next.booted();
    assert!(booted < BOOT_BOUND, "build N+1 took {booted:?} to boot");
    next.0.expect("SERVED");
    // N+1's own background work (a concurrent index build) runs while N waits for the window.
    next.0.expect("FINISHED");
    let logs = stop_writers(&stop, vec![old, writer]).await;
    assert_eq!(
        phase(&pool, "create_index").await.as_deref(),
        Some("expand")
    );
    let valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'accounts_email_idx'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(valid);
    assert_eq!(
        phase(&pool, "add_backfilled_column").await.as_deref(),
        Some("validate"),
        "build N's contract still waits for the window"
    );
    assert!(!first.is_finished());
    assert!(first.progress().iter().any(|p| p.phase == Phase::Validate));
    assert_every_row(&pool, logs).await;
}
