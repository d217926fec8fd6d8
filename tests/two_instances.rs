//! Two instances of a service on one database, each in its own process, as in production: the
//! second one's accessors follow the first one's switch within a second, and contract waits for
//! the second one to stop writing the old column (or for its heartbeat to expire if it died).
//!
//! The second instance is this test binary run again with `PGEVOLVE_SECOND_INSTANCE` set, on
//! the `second_instance_process` entry point, talking to the first over stdout lines.

use pgevolve_test_support as support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgevolve::{DeployWindow, Evolver};
use support::database;
use support::people::*;

const ENV: &str = "PGEVOLVE_SECOND_INSTANCE";
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

fn micros_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// The second instance: boots on the database named by the environment, reports its instance
/// id, then every change of what its accessors read (with the time it saw it). Right after it
/// sees the switch it starts an accessor call that lasts two seconds, and reports when it ends.
/// Runs until its stdin closes. In a normal test run (variable unset) it is not a test at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_process() {
    let Ok(url) = std::env::var(ENV) else { return };
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let evolution = Evolver::new(pool.clone())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    println!("\nREADY {}", evolution.instance_id());
    let closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
    let mut last = String::new();
    let mut slow_call = None;
    while !closed.is_finished() {
        let expr = Person::read_expr("full_name").unwrap().unwrap();
        if expr != last {
            println!("EXPR {} {expr}", micros_now());
            if expr == "\"full_name\"" && slow_call.is_none() {
                let pool = pool.clone();
                slow_call = Some(tokio::spawn(async move {
                    let rows = Person::select()
                        .filter("{id} = $1 AND pg_sleep(2) IS NOT NULL")
                        .bind(1i64)
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                    println!("SLOW_CALL_DONE {} {}", micros_now(), rows.len());
                }));
            }
            last = expr;
        }
        std::io::stdout().flush().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The first instance: booted, backfilled and validated, with a short heartbeat timeout.
async fn first_instance(pool: &sqlx::PgPool) -> pgevolve::Evolution {
    let first = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(HEARTBEAT_TIMEOUT, Duration::from_secs(60))
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    first.wait().await.unwrap();
    first
}

struct Second {
    child: Child,
    lines: mpsc::Receiver<String>,
    instance: String,
}

impl Second {
    fn start(url: &str) -> Second {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "second_instance_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut second = Second {
            child,
            lines,
            instance: String::new(),
        };
        let ready = second.expect("READY ");
        second.instance = ready.trim_start_matches("READY ").to_string();
        second
    }

    /// The next line starting with `prefix` (waiting at most 30 s).
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {prefix:?} from the second instance"));
            if let Some(at) = line.find(prefix) {
                return line[at..].to_string();
            }
        }
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

async fn journal(pool: &sqlx::PgPool, event: &str) -> (String, i64) {
    sqlx::query_as("SELECT coalesce(detail, ''), (extract(epoch FROM at) * 1000000)::int8 FROM pgevolve.journal WHERE event = $1 ORDER BY id DESC LIMIT 1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_second_instance_follows_the_switch_and_contract_waits_for_it() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let (db, pool) = database(10).await;
    seed(&pool, "people").await;
    let first = first_instance(&pool).await;

    let mut second = Second::start(db.url());
    assert!(
        second
            .expect("EXPR ")
            .ends_with("COALESCE(\"full_name\", \"name\")")
    );

    let switched_at = micros_now();
    first.switch().await.unwrap();
    let seen = second.expect("EXPR ");
    assert!(seen.ends_with(" \"full_name\""), "{seen}");
    let seen_at: u128 = seen.split(' ').nth(1).unwrap().parse().unwrap();
    let lag = Duration::from_micros((seen_at.saturating_sub(switched_at)) as u64);
    assert!(
        lag < Duration::from_secs(1),
        "the second instance followed the switch after {lag:?}"
    );

    // The second instance now has an accessor call running for two seconds with SQL that writes
    // both columns' era; contract must not drop `name` before it is over and acknowledged.
    first.contract().await.unwrap();
    let slow_done: i64 = second
        .expect("SLOW_CALL_DONE ")
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let (acks, acked_at) = journal(&pool, "retire acknowledged").await;
    let (_, contracted_at) = journal(&pool, "contract done").await;
    assert!(
        acks.contains("acknowledged by [") && acks.contains(&second.instance),
        "{acks}"
    );
    assert!(
        slow_done <= acked_at && acked_at <= contracted_at,
        "contract waited for the second instance's call and acknowledgement"
    );
    second.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_stops_waiting_for_an_instance_whose_heartbeat_expired() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let (db, pool) = database(10).await;
    seed(&pool, "people").await;
    let first = first_instance(&pool).await;
    let mut second = Second::start(db.url());
    second.expect("EXPR ");
    first.switch().await.unwrap();
    second.expect("EXPR ");
    // The second instance dies without a word (kill -9): no deregistration.
    second.child.kill().unwrap();
    let _ = second.child.wait();

    first.contract().await.unwrap();
    let (acks, _) = journal(&pool, "retire acknowledged").await;
    let expired = acks
        .split("heartbeat expired: [")
        .nth(1)
        .unwrap_or_default();
    assert!(
        expired.contains(&second.instance),
        "the dead instance is named as not waited for: {acks}"
    );
    assert!(!column_exists(&pool, "name").await);
}
