//! An abort asked of an instance that does not lead, while the leader backfills: it does not
//! wait for the leader's whole walk. The abort is recorded at once, every live instance follows
//! it, the leader drops what the step added before its next batch and goes on with the other
//! steps. Old and new writers run throughout; every row is checked at the end.

use pgevolve_test_support as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgevolve::{BackfillOptions, DeployWindow, Evolve, Evolver, StepKind};
use sqlx::PgPool;
use support::database;

const ROWS: i64 = 100_000;

#[derive(Evolve, Debug, Clone)]
#[evolve(table = "events")]
pub struct Event {
    #[evolve(primary_key)]
    pub id: i64,
    pub name: String,
    #[evolve(backfill = "lower(name)")]
    pub name_lower: String,
    #[evolve(backfill = "upper(name)")]
    pub name_upper: String,
}

fn evolver(pool: &PgPool) -> Evolver {
    // Busier than the default duty cycle: the pass still outlasts the abort many times over,
    // and the leader's finish after it takes a third of the time.
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Event>()
        .backfill_options(BackfillOptions {
            duty_cycle: 0.75,
            ..BackfillOptions::default()
        })
}

/// A writer's task: the last name it wrote to each row, and its errors.
type Writer = tokio::task::JoinHandle<(Vec<(i64, String)>, Vec<String>)>;

/// Writes until stopped; returns the last name written to each row it wrote, and its errors.
fn writer(pool: &PgPool, lane: i64, through_accessors: bool, stop: Arc<AtomicBool>) -> Writer {
    let pool = pool.clone();
    tokio::spawn(async move {
        let (mut log, mut errors, mut n) = (Vec::new(), Vec::new(), 0i64);
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let id = lane + 4 * (1 + (n * 7_919) % (ROWS / 4 - 1));
            let name = format!("Lane{lane} Write{n}");
            let result = if through_accessors {
                let event = Event {
                    id,
                    name: name.clone(),
                    name_lower: name.to_lowercase(),
                    name_upper: name.to_uppercase(),
                };
                event
                    .update(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                sqlx::query("UPDATE events SET name = $1 WHERE id = $2")
                    .bind(&name)
                    .bind(id)
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            match result {
                Ok(()) => log.push((id, name)),
                Err(e) => errors.push(e),
            }
        }
        (log, errors)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_on_a_follower_does_not_wait_for_the_leaders_backfill() {
    let (_db, pool) = database(20).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE events (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO events SELECT g, 'Event ' || g FROM generate_series(1, {ROWS}) g;"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let leader = evolver(&pool).boot().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader.progress().iter().all(|p| p.rows_done == 0) {
        assert!(Instant::now() < deadline, "the backfill never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let follower = evolver(&pool).boot().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = vec![
        writer(&pool, 0, false, stop.clone()),
        writer(&pool, 1, true, stop.clone()),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;

    let upper = Event::plan()
        .steps
        .into_iter()
        .find(|s| matches!(s.kind, StepKind::AddFilledColumn(c) if c.name == "name_upper"))
        .unwrap()
        .id;
    follower.abort(&upper).await.unwrap();
    assert!(
        !leader.is_finished(),
        "the abort returned while the leader was still backfilling"
    );
    let upper_exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'events'::regclass \
         AND attname = 'name_upper' AND NOT attisdropped)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        !upper_exists,
        "the aborted column is gone when abort returns"
    );
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event FROM pgevolve.journal WHERE step_id = $1 AND id >= \
           (SELECT max(id) FROM pgevolve.journal WHERE step_id = $1 AND event = 'abort started') \
         ORDER BY id",
    )
    .bind(upper.as_str())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        ["abort started", "aborted acknowledged", "abort done"]
    );

    // The leader finishes the other fill.
    leader.wait().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut last = std::collections::HashMap::new();
    for w in writers {
        let (log, errors) = w.await.unwrap();
        assert!(errors.is_empty(), "failed writes: {:?}", errors.first());
        assert!(log.len() > 20, "a writer barely ran");
        for (id, name) in log {
            last.insert(id, name);
        }
    }
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE name_lower IS DISTINCT FROM lower(name)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "every row's fill is right");
    let (ids, names): (Vec<i64>, Vec<String>) = last.into_iter().unzip();
    let differing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::int8[], $2::text[]) AS w(id, name) \
         JOIN events e USING (id) WHERE e.name <> w.name",
    )
    .bind(&ids)
    .bind(&names)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(differing, 0, "every row holds the last name written to it");
    let phase: String = sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE id = $1")
        .bind(upper.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(phase, "aborted");
}
