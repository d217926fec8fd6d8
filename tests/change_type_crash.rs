//! A type change whose process is killed (SIGKILL of a real child process) in each phase:
//! after expand, mid-backfill, in validate once the old column's index and CHECK are built over
//! the new one, after switch, just before the contract's transaction, and between recording an
//! abort and its DDL. The next boot (in the test process) takes over from what the dead one
//! left, and every value the old build (writing throughout) and the new build wrote is there.

use pgevolve_test_support as support;

use std::time::Duration;

use pgevolve::{BackfillOptions, DeployWindow, Evolver, Phase};
use sqlx::PgPool;
use support::child::{self, ChildProcess};
use support::items::*;
use support::{catalog_snapshot, database};

fn evolver(pool: &PgPool, slow: bool) -> Evolver {
    // A killed child's heartbeat expires after 2 s: the acknowledgements stop waiting for it.
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .acknowledgements(Duration::from_secs(2), Duration::from_secs(60))
        .backfill_options(BackfillOptions {
            initial_batch_size: 100,
            max_batch_size: if slow { 100 } else { 5_000 },
            pause: Duration::from_millis(if slow { 30 } else { 0 }),
            ..BackfillOptions::default()
        })
        .model::<Item>()
}

/// The child: boots and goes as far as its scenario says, then reports or pauses; the parent
/// kills it. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_change_child_process() {
    let Some((scenario, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let slow = matches!(scenario.as_str(), "expand" | "backfill");
    let evolution = evolver(&pool, slow).boot().await.unwrap();
    match scenario.as_str() {
        "expand" => child::report("BOOTED"),
        "backfill" => child::report_progress_forever(&evolution).await,
        // Pauses at `carried` in validate (PGEVOLVE_PAUSE_AT).
        "validate" => {
            let _ = evolution.wait().await;
        }
        "switch" => {
            evolution.wait().await.unwrap();
            evolution.switch().await.unwrap();
            child::report("SWITCHED");
        }
        // Validated and switched by the parent: pauses at `carried` in contract.
        "contract" => {
            let _ = evolution.contract().await;
        }
        // Pauses at `abort-recorded`.
        "abort" => {
            evolution.wait().await.unwrap();
            let step = change_step(&evolution, "qty").await;
            let _ = evolution.abort(&step.id).await;
        }
        other => panic!("unknown scenario {other}"),
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
    }
}

async fn recorded(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT column_name, phase FROM pgevolve.steps WHERE kind = 'change_type' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Kills the child in `scenario`, then boots in the test process and goes to contract (or, after
/// a killed abort, checks the abort finished): every write of both builds is there.
async fn killed_in(scenario: &str) {
    let (db, pool) = database(20).await;
    seed(&pool).await;
    let before = catalog_snapshot(&pool, "items").await;
    let log = log();
    let old = old_writer(&pool, 0, log.clone());
    let entry = "type_change_child_process";
    match scenario {
        "expand" => {
            let mut c = ChildProcess::start(entry, scenario, db.url(), None);
            c.expect("BOOTED");
            c.kill();
        }
        "backfill" => {
            let mut c = ChildProcess::start(entry, scenario, db.url(), None);
            let rows = c.progress_at_least(500);
            assert!(rows < ROWS, "the pass was over before the kill");
            c.kill();
        }
        "validate" => ChildProcess::paused_at(entry, scenario, db.url(), "carried").kill(),
        "switch" => {
            let mut c = ChildProcess::start(entry, scenario, db.url(), None);
            c.expect("SWITCHED");
            c.kill();
        }
        "contract" => {
            let first = evolver(&pool, false).boot().await.unwrap();
            first.wait().await.unwrap();
            first.switch().await.unwrap();
            drop(first);
            ChildProcess::paused_at(entry, scenario, db.url(), "carried").kill();
        }
        "abort" => ChildProcess::paused_at(entry, scenario, db.url(), "abort-recorded").kill(),
        other => panic!("unknown scenario {other}"),
    }
    child::until_no_advisory_lock(&pool).await;
    let at_kill = recorded(&pool).await;
    let expected: &[&str] = match scenario {
        "expand" | "backfill" => &["expand"],
        "validate" => &["backfill"],
        "switch" => &["switch"],
        "contract" => &["retire"],
        _ => &["aborted", "validate"],
    };
    let phases: Vec<&str> = at_kill.iter().map(|(_, p)| p.as_str()).collect();
    assert!(
        phases.iter().any(|p| expected.contains(p)),
        "{scenario}: recorded at the kill: {at_kill:?}"
    );

    // The next boot, in this process, next to the old build; the new build starts once it is up.
    let evolution = evolver(&pool, false).boot().await.unwrap();
    let new = new_writer(&pool, 2, log.clone());
    evolution.wait().await.unwrap();
    if scenario == "abort" {
        assert_eq!(change_step(&evolution, "qty").await.phase, Phase::Aborted);
        let qty = change_step(&evolution, "code").await;
        evolution.abort(&qty.id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        finished(vec![old.finish().await, new.finish().await]);
        assert_eq!(
            catalog_snapshot(&pool, "items").await,
            before,
            "{scenario}: catalog not restored"
        );
        assert_old_columns_match(&pool, &log, scenario).await;
        return;
    }
    evolution.switch().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = finished(vec![old.finish().await, new.finish().await]);
    assert!(ok > 20, "{scenario}: only {ok} writes");
    assert_both_columns_match(&pool, &log).await;
    evolution.contract().await.unwrap();
    assert_new_columns_match(&pool, &log).await;
    assert_contracted(&pool, scenario).await;
}

// One test, scenarios in sequence: the accessors' phase registry is per process and every
// scenario uses the same model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_type_change_killed_in_any_phase_is_taken_over_by_the_next_boot_with_every_write() {
    if child::in_child() {
        return;
    }
    for scenario in [
        "expand", "backfill", "validate", "switch", "contract", "abort",
    ] {
        killed_in(scenario).await;
    }
}
