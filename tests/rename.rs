//! A hot column renamed through every phase while "old binaries" (raw SQL, old name) and "new
//! binaries" (the generated accessors) keep writing: no failed statement, and every row ends
//! with the last value written through either name. Aborts at every phase restore the catalog
//! exactly, keeping every write under the old name.

use pgevolve_test_support as support;

use std::sync::Arc;
use std::time::Duration;

use pgevolve::{BackfillOptions, DeployWindow, Evolver};
use support::database;
use support::people::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_with_old_and_new_writers_through_every_phase() {
    let (_db, pool) = database(20).await;
    seed(&pool, "people").await;
    let log: WriteLog = Arc::default();
    let old: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&pool, lane, log.clone()))
        .collect();

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Person>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 500,
            max_batch_size: 2_000,
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    // Expand is done: new binaries start, next to the old ones.
    let new: Vec<Writer> = (2..4)
        .map(|lane| new_writer(&pool, lane, log.clone()))
        .collect();
    evolution.wait().await.unwrap();
    assert!(
        Person::read_expr("full_name")
            .unwrap()
            .unwrap()
            .contains("COALESCE")
    );
    evolution.switch().await.unwrap();
    assert_eq!(
        Person::read_expr("full_name").unwrap().unwrap(),
        "\"full_name\""
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Contract starts: the old binaries are gone by now (that is what contract is gated on).
    let mut failures = Vec::new();
    let mut ok = 0;
    for w in old {
        let (n, errors) = w.finish().await;
        ok += n;
        failures.extend(errors);
    }
    evolution.contract().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in new {
        let (n, errors) = w.finish().await;
        ok += n;
        failures.extend(errors);
    }
    assert!(
        failures.is_empty(),
        "{} failed statements, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok > 200, "only {ok} writes");

    assert!(
        !column_exists(&pool, "name").await,
        "old column dropped at contract"
    );
    let status = evolution.status().await.unwrap();
    let rename = status
        .iter()
        .find(|s| s.description.starts_with("rename column"))
        .unwrap();
    // The phases, without what the pass said about its pace (`backfill paced on wal`).
    let events: Vec<&str> = rename
        .history
        .iter()
        .map(|e| e.event.as_str())
        .filter(|e| *e != "backfill paced on wal")
        .collect();
    assert_eq!(
        events,
        [
            "expand done",
            "backfill done",
            "validate done",
            "switch done",
            "retire done",
            "retire acknowledged",
            "contract done"
        ]
    );
    assert!(
        rename
            .history
            .iter()
            .all(|e| e.instance == evolution.instance_id())
    );
    let not_null: bool = sqlx::query_scalar("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'people'::regclass AND attname = 'full_name'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(not_null);
    assert_log_matches(&pool, &log, "full_name").await;
    let untouched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM people WHERE id <= $1 AND full_name = 'Name ' || id",
    )
    .bind(ROWS)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        untouched > 0,
        "rows no writer touched kept their backfilled value"
    );
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'people'::regclass AND NOT tgisinternal)
              + (SELECT count(*) FROM pg_views WHERE viewname LIKE 'pgevolve%')
              + (SELECT count(*) FROM pg_constraint WHERE conrelid = 'people'::regclass AND contype = 'c')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);
    let everyone = Person::fetch_all(&pool).await.unwrap();
    assert!(everyone.len() as i64 > ROWS);
    let some = Person::select()
        .filter("{full_name} LIKE $1")
        .bind("new%")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(some.iter().all(|p| p.full_name.starts_with("new")));
}
