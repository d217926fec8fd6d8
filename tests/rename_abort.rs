//! Aborting a rename at each phase before contract (after expand, mid-backfill, after validate,
//! after switch) while old and new binaries write: the catalog is exactly what it was, and every
//! write made during the attempt is there under the old name.

use pgevolve_test_support as support;

use std::time::Duration;

use pgevolve::{BackfillOptions, Evolver, Phase, StepKind};
use support::people::*;
use support::{catalog_snapshot, database};

#[derive(Debug, Clone, Copy)]
enum AbortAt {
    AfterExpand,
    MidBackfill,
    AfterValidate,
    AfterSwitch,
}

async fn abort_at(at: AbortAt) {
    let (_db, pool) = database(20).await;
    seed(&pool, "people").await;
    let before = catalog_snapshot(&pool, "people").await;
    let log: WriteLog = Default::default();
    let old = old_writer(&pool, 0, log.clone());

    // Slow batches when the abort must land before the pass ends (after expand, mid-backfill).
    let slow = matches!(at, AbortAt::AfterExpand | AbortAt::MidBackfill);
    let evolution = Evolver::new(pool.clone())
        .model::<Person>()
        .backfill_options(BackfillOptions {
            initial_batch_size: if slow { 100 } else { 1_000 },
            max_batch_size: if slow { 100 } else { 5_000 },
            pause: Duration::from_millis(if slow { 20 } else { 0 }),
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    let new = new_writer(&pool, 1, log.clone());
    let step = evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| matches!(s.kind, StepKind::RenameColumn(_)))
        .unwrap()
        .id;
    if !matches!(at, AbortAt::AfterExpand) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    match at {
        // Boot returns once expand is done: abort right away, before the slow pass can end.
        AbortAt::AfterExpand => {}
        AbortAt::MidBackfill => loop {
            let p = evolution
                .progress()
                .into_iter()
                .find(|p| p.step == step)
                .unwrap();
            if p.rows_done > 1_000 {
                assert!(
                    p.phase < Phase::Backfill && !evolution.is_finished(),
                    "still backfilling"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        },
        AbortAt::AfterValidate => evolution.wait().await.unwrap(),
        AbortAt::AfterSwitch => evolution.switch().await.unwrap(),
    }
    // The phase the abort is named after, read back from the state store just before it.
    let expected = match at {
        AbortAt::AfterExpand | AbortAt::MidBackfill => Phase::Expand,
        AbortAt::AfterValidate => Phase::Validate,
        AbortAt::AfterSwitch => Phase::Switch,
    };
    let recorded = evolution.status().await.unwrap();
    let recorded = recorded.iter().find(|s| s.id == step).unwrap();
    assert_eq!(
        recorded.phase, expected,
        "{at:?}: aborted in the wrong phase"
    );
    if matches!(at, AbortAt::AfterExpand | AbortAt::MidBackfill) {
        assert!(
            recorded.rows_done < ROWS && !evolution.is_finished(),
            "{at:?}: the pass was over before the abort ({} rows)",
            recorded.rows_done
        );
    }

    evolution.abort(&step).await.unwrap();
    // Both kinds of writers keep going after the abort: new binaries fall back to the old name.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (n_old, old_errors) = old.finish().await;
    let (n_new, new_errors) = new.finish().await;
    assert!(
        old_errors.is_empty(),
        "{at:?}: old writer failed: {:?}",
        old_errors.first()
    );
    assert!(
        new_errors.is_empty(),
        "{at:?}: new writer failed: {:?}",
        new_errors.first()
    );
    assert!(
        n_old > 10 && n_new > 10,
        "{at:?}: writers barely ran ({n_old}, {n_new})"
    );

    assert_eq!(
        catalog_snapshot(&pool, "people").await,
        before,
        "{at:?}: catalog not restored"
    );
    assert!(!column_exists(&pool, "full_name").await);
    assert_log_matches(&pool, &log, "name").await;
    let status = evolution.status().await.unwrap();
    assert_eq!(
        status.iter().find(|s| s.id == step).unwrap().phase,
        Phase::Aborted
    );
    assert_eq!(Person::read_expr("full_name").unwrap().unwrap(), "\"name\"");

    // A later boot leaves the aborted step alone.
    let again = Evolver::new(pool.clone())
        .model::<Person>()
        .boot()
        .await
        .unwrap();
    again.wait().await.unwrap();
    assert_eq!(
        catalog_snapshot(&pool, "people").await,
        before,
        "{at:?}: boot after abort changed the table"
    );
}

// One test, phases in sequence: the accessors' phase registry is per process and all four use
// the same model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_at_every_phase_restores_the_table_and_keeps_every_write() {
    for at in [
        AbortAt::AfterExpand,
        AbortAt::MidBackfill,
        AbortAt::AfterValidate,
        AbortAt::AfterSwitch,
    ] {
        abort_at(at).await;
    }
}
