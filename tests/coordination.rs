//! Phase propagation between instances on a real PostgreSQL: two coordinators on one database,
//! each with a registry of its own, as two processes would have. A phase change reaches the
//! other instance through NOTIFY within a second, through polling when the notification is
//! lost, and the leader's wait for acknowledgements ends once every live instance has moved on,
//! ignoring one that crashed once its heartbeat expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

// The coordinator and the phase registry are internals, reached through the hidden surface.
use pgevolve::__private::{Coordinator, CoordinatorOptions, PhaseRegistry, wait_for_acks};
use pgevolve::{ErrorKind, Evolve, Phase, Plan, StepId};
use pgevolve_testkit::TestDatabase;
use sqlx::{AssertSqlSafe, PgPool};
use support::child::{self, ChildProcess};

use pgevolve_test_support as support;

const SCHEMA: &str = "pgevolve";

#[derive(Evolve)]
#[evolve(table = "users")]
#[allow(dead_code)]
struct User {
    #[evolve(primary_key)]
    id: i64,
    email: String,
    #[evolve(backfill = "lower(email)")]
    email_normalized: String,
    nickname: Option<String>,
}

/// Two step ids of a real plan: the backfilled column and the nullable one.
fn steps() -> (StepId, StepId) {
    let plan = Plan::for_model(&User::MODEL);
    let id = |kind: &str| {
        plan.steps
            .iter()
            .find(|s| s.kind.name() == kind)
            .map(|s| s.id.clone())
            .unwrap_or_else(|| panic!("no {kind} step in {plan}"))
    };
    (id("add_backfilled_column"), id("add_nullable_column"))
}

/// A fresh database with the coordinator's tables and a reduced `steps` table.
async fn database() -> (TestDatabase, PgPool) {
    let db = TestDatabase::new().await.expect("throwaway PostgreSQL");
    let pool = db.pool(10).await.expect("pool");
    create_state(&pool).await;
    (db, pool)
}

async fn create_state(pool: &PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    Coordinator::bootstrap(&mut conn, SCHEMA).await.unwrap();
    sqlx::raw_sql("CREATE TABLE pgevolve.steps (id text PRIMARY KEY, phase text NOT NULL)")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// Records `phase` the way the leader does, with the notification in the same transaction
/// unless `notify` is false (a lost notification).
async fn set_phase(pool: &PgPool, step: &StepId, phase: Phase, notify: bool) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO pgevolve.steps (id, phase) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET phase = EXCLUDED.phase",
    )
    .bind(step.as_str())
    .bind(phase.as_str())
    .execute(&mut *tx)
    .await
    .unwrap();
    if notify {
        sqlx::query(AssertSqlSafe(Coordinator::notify_sql(SCHEMA, step, phase)))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn start(
    pool: &PgPool,
    id: &str,
    steps: Vec<StepId>,
    options: CoordinatorOptions,
) -> (Coordinator, Arc<PhaseRegistry>) {
    let registry = Arc::new(PhaseRegistry::default());
    let coordinator =
        Coordinator::start(pool, SCHEMA, id, steps, options.registry(registry.clone())).await;
    (coordinator, registry)
}

/// An instance whose build knows one step, with default options.
async fn instance(pool: &PgPool, id: &str, step: &StepId) -> (Coordinator, Arc<PhaseRegistry>) {
    start(pool, id, vec![step.clone()], CoordinatorOptions::default()).await
}

/// How long until `done` holds, checking every 5 ms; `None` after `limit`.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

async fn acks(pool: &PgPool, step: &StepId) -> Vec<(String, String)> {
    sqlx::query_as("SELECT instance_id, phase FROM pgevolve.acks WHERE step_id = $1 ORDER BY 1, 2")
        .bind(step.as_str())
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notified_phase_change_reaches_the_other_instance_within_a_second() {
    let (_db, pool) = database().await;
    let (fill, nullable) = steps();
    // Polling every minute: only the notification can be this fast.
    let slow_poll = CoordinatorOptions {
        poll_interval: Duration::from_secs(60),
        ..CoordinatorOptions::default()
    };
    let steps = vec![fill.clone(), nullable.clone()];
    let (a, ra) = start(&pool, "a", steps.clone(), slow_poll.clone()).await;
    let (b, rb) = start(&pool, "b", steps, slow_poll).await;

    // Started: no step has a row yet, so both are pending.
    assert_eq!(rb.get(&fill), Some(Phase::Pending));
    assert_eq!(ra.get(&nullable), Some(Phase::Pending));
    let generation = rb.generation();

    set_phase(&pool, &fill, Phase::Expand, true).await;
    let took = until(Duration::from_secs(1), || {
        rb.get(&fill) == Some(Phase::Expand)
    })
    .await
    .expect("b sees the new phase within a second of the notification");
    println!("notified phase change reached b in {took:?}");
    assert!(rb.generation() > generation);
    until(Duration::from_secs(1), || {
        ra.get(&fill) == Some(Phase::Expand)
    })
    .await
    .expect("a too");
    assert_eq!(rb.get(&nullable), Some(Phase::Pending));

    // Sent through the API on a connection of its own, outside any explicit transaction.
    sqlx::query("UPDATE pgevolve.steps SET phase = 'backfill' WHERE id = $1")
        .bind(fill.as_str())
        .execute(&pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    Coordinator::notify(&mut conn, SCHEMA, &fill, Phase::Backfill)
        .await
        .unwrap();
    until(Duration::from_secs(1), || {
        rb.get(&fill) == Some(Phase::Backfill)
    })
    .await
    .expect("b sees the second change within a second");

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_notification_polling_delivers_the_phase() {
    let (_db, pool) = database().await;
    let (fill, _) = steps();
    let (a, ra) = instance(&pool, "a", &fill).await;
    let (b, rb) = instance(&pool, "b", &fill).await;

    set_phase(&pool, &fill, Phase::Validate, false).await;
    let took = until(Duration::from_secs(3), || {
        rb.get(&fill) == Some(Phase::Validate)
    })
    .await
    .expect("b polls the new phase within the poll interval");
    println!("polled phase change reached b in {took:?}");
    assert!(took <= Duration::from_millis(2_500), "took {took:?}");
    until(Duration::from_secs(3), || {
        ra.get(&fill) == Some(Phase::Validate)
    })
    .await
    .expect("a too");

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_waits_until_every_instance_acknowledged() {
    let (_db, pool) = database().await;
    let (fill, _) = steps();
    let (a, _) = instance(&pool, "a", &fill).await;
    let (b, rb) = instance(&pool, "b", &fill).await;

    // Nobody is at switch yet: the wait ends at its deadline, naming both.
    let error = wait_for_acks(
        &pool,
        SCHEMA,
        &fill,
        Phase::Switch,
        Duration::from_secs(10),
        Duration::from_millis(300),
    )
    .await
    .expect_err("no instance is at switch");
    let ErrorKind::NotReady { message, phase, .. } = error.kind() else {
        panic!("unexpected error: {error}");
    };
    assert_eq!(phase, "pending", "the step has no row yet");
    assert!(message.contains("a (heartbeat"), "{message}");
    assert!(message.contains("b (heartbeat"), "{message}");
    assert!(message.contains("at phase pending"), "{message}");
    println!("{error}");

    set_phase(&pool, &fill, Phase::Switch, true).await;
    let outcome = wait_for_acks(
        &pool,
        SCHEMA,
        &fill,
        Phase::Switch,
        Duration::from_secs(10),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(rb.get(&fill), Some(Phase::Switch));
    let ids: Vec<&str> = outcome.acknowledged.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(outcome.expired.is_empty());
    assert!(
        outcome
            .acknowledged
            .iter()
            .all(|i| i.acknowledged == Some(Phase::Switch) && i.knows_step)
    );
    println!("both acknowledged switch after {:?}", outcome.waited);
    assert_eq!(
        acks(&pool, &fill).await,
        [
            ("a".to_string(), "pending".to_string()),
            ("a".into(), "switch".into()),
            ("b".into(), "pending".into()),
            ("b".into(), "switch".into()),
        ]
    );

    // An earlier phase is covered by a later acknowledgement.
    let earlier = wait_for_acks(
        &pool,
        SCHEMA,
        &fill,
        Phase::Expand,
        Duration::from_secs(10),
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(earlier.acknowledged.len(), 2);

    // An instance whose build does not know the step never acknowledges it.
    let (old, _) = start(
        &pool,
        "old-build",
        Vec::new(),
        CoordinatorOptions::default(),
    )
    .await;
    let error = wait_for_acks(
        &pool,
        SCHEMA,
        &fill,
        Phase::Switch,
        Duration::from_secs(10),
        Duration::from_millis(500),
    )
    .await
    .expect_err("the old build blocks");
    let message = error.to_string();
    assert!(message.contains("old-build (heartbeat"), "{message}");
    assert!(
        message.contains("acknowledged nothing, runs a build that does not know this step)"),
        "{message}"
    );
    assert!(!error.to_string().contains("a (heartbeat"), "{error}");

    // Once it stops cleanly, its row is gone and nothing waits for it.
    old.stop().await;
    let outcome = wait_for_acks(
        &pool,
        SCHEMA,
        &fill,
        Phase::Switch,
        Duration::from_secs(10),
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(outcome.acknowledged.len(), 2);
    assert!(outcome.expired.is_empty());

    a.stop().await;
    b.stop().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pgevolve.instances")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "stopped instances deregister");
    assert!(acks(&pool, &fill).await.is_empty(), "with their acks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_is_not_waited_for_once_its_heartbeat_expires() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database().await;
    let (fill, _) = steps();
    let (a, _) = instance(&pool, "a", &fill).await;
    // Instance b is a real process, SIGKILLed once registered: it never deregisters and its
    // heartbeat simply stops.
    let mut crashed = ChildProcess::start("coordinator_child_process", "b", db.url(), None);
    crashed.expect("READY");
    let registered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgevolve.instances WHERE id = 'b'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(registered, 1, "b registered before it was killed");
    crashed.kill();

    set_phase(&pool, &fill, Phase::Retire, true).await;
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let outcome = wait_for_acks(
        &pool,
        SCHEMA,
        &fill,
        Phase::Retire,
        timeout,
        Duration::from_secs(15),
    )
    .await
    .expect("proceeds once b's heartbeat is older than the timeout");
    let waited = started.elapsed();
    println!("proceeded without the crashed instance after {waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let ids: Vec<&str> = outcome.acknowledged.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a"]);
    assert_eq!(outcome.expired.len(), 1);
    let b = &outcome.expired[0];
    assert_eq!(b.id, "b");
    assert!(b.heartbeat_age >= timeout, "{b}");
    assert_eq!(b.acknowledged, Some(Phase::Pending));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_waits_for_the_state_tables() {
    let db = TestDatabase::new().await.expect("throwaway PostgreSQL");
    let pool = db.pool(5).await.unwrap();
    let (fill, _) = steps();
    let (a, ra) = instance(&pool, "a", &fill).await;
    // No state store yet: nothing has run, so the step is pending.
    assert_eq!(ra.get(&fill), Some(Phase::Pending));

    create_state(&pool).await;
    set_phase(&pool, &fill, Phase::Expand, true).await;
    until(Duration::from_secs(3), || {
        ra.get(&fill) == Some(Phase::Expand)
    })
    .await
    .expect("the phase arrives once the tables exist");
    let outcome = wait_for_acks(
        &pool,
        SCHEMA,
        &fill,
        Phase::Expand,
        Duration::from_secs(10),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(outcome.acknowledged.len(), 1);
    a.stop().await;
}

/// The child of the crash test: instance `b` registered on the fill step, its heartbeat
/// running, until the parent kills it. Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_child_process() {
    let Some((id, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let (fill, _) = steps();
    let _coordinator = Coordinator::start(
        &pool,
        SCHEMA,
        id,
        vec![fill],
        CoordinatorOptions::default().registry(Arc::default()),
    )
    .await;
    child::report("READY");
    std::future::pending::<()>().await;
}
