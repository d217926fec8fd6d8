//! Indexes and unique constraints built on a 200,000-row table under four concurrent writers:
//! `CREATE INDEX CONCURRENTLY` (and the unique index attached as a constraint) fails no write and
//! holds none up for longer than lock_timeout + 1 s, while the plain statement on the same table,
//! under the same writers, measurably blocks them. Then adoption, drift, abort and the drop of
//! an index removed from the struct.

use pgevolve_test_support as support;

use std::time::Duration;

use pgevolve::{DeployWindow, ErrorKind, Evolver, Phase, StepKind};
use support::{
    LockWaits, WriteLoad, assert_reboot_changes_nothing, catalog_snapshot, database, indexes,
    seed_users,
};

const ROWS: i64 = 200_000;
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
const INSERT: &str = "INSERT INTO users (name, email) VALUES ('writer ' || $2, $1)";
const UPDATE: &str = "UPDATE users SET email = $1 WHERE id = $2";
const WRITES: &[&str] = &["INSERT INTO users", "UPDATE users"];
const LOAD: WriteLoad = WriteLoad {
    rows: ROWS,
    insert: INSERT,
    update: UPDATE,
    prefixes: WRITES,
};

use support::users::{indexed, unique};

mod plain {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "users")]
    #[allow(dead_code)]
    pub struct User {
        #[evolve(primary_key, generated)]
        pub id: i64,
        pub name: String,
        pub email: String,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_is_built_concurrently_under_writers_and_the_plain_build_blocks_them() {
    let (db, pool) = database(20).await;
    seed_users(&pool, ROWS).await;

    let writers = LOAD.start(&pool);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waits = LockWaits::start(db.url(), WRITES).await;
    let evolution = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .lock_timeout(LOCK_TIMEOUT)
        .boot()
        .await
        .expect("boot");
    // Boot does not wait for the build: it runs in the background.
    let step = evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| matches!(s.kind, StepKind::CreateIndex(_)))
        .unwrap();
    evolution.wait().await.expect("index built");
    let safe_lock = waits.finish().await;
    let safe = writers.finish().await;

    let status = evolution.status().await.unwrap();
    assert_eq!(
        status.iter().find(|s| s.id == step.id).unwrap().phase,
        Phase::Expand
    );
    let all = indexes(&pool, "users").await;
    assert!(
        all.iter()
            .any(|(name, valid, def)| name == "users_email_idx"
                && *valid
                && def.ends_with("USING btree (email)")),
        "{all:#?}"
    );

    LOAD.assert_plain_blocks(
        &pool,
        db.url(),
        "CREATE INDEX",
        "CREATE INDEX users_email_plain ON users (email)",
        LOCK_TIMEOUT,
        &safe,
        safe_lock,
    )
    .await;

    // Booting again finds the index and does nothing.
    assert_reboot_changes_nothing::<indexed::User>(&pool, "users").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unique_constraint_is_built_concurrently_under_writers_and_the_plain_one_blocks_them() {
    let (db, pool) = database(20).await;
    seed_users(&pool, ROWS).await;

    let writers = LOAD.start(&pool);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waits = LockWaits::start(db.url(), WRITES).await;
    let evolution = Evolver::new(pool.clone())
        .model::<unique::User>()
        .lock_timeout(LOCK_TIMEOUT)
        .boot()
        .await
        .expect("boot");
    evolution
        .wait()
        .await
        .expect("unique index built and attached");
    let safe_lock = waits.finish().await;
    let safe = writers.finish().await;

    let constraints = support::constraints(&pool, "users").await;
    assert!(
        constraints.contains(&("users_email_key".into(), "u".into(), true)),
        "{constraints:#?}"
    );
    let all = indexes(&pool, "users").await;
    assert_eq!(
        all.iter()
            .filter(|(_, _, def)| def.contains("(email)"))
            .count(),
        1,
        "exactly one index on email: {all:#?}"
    );
    assert!(all.iter().all(|(_, valid, _)| *valid), "{all:#?}");

    LOAD.assert_plain_blocks(
        &pool,
        db.url(),
        "ADD CONSTRAINT UNIQUE",
        "ALTER TABLE users ADD CONSTRAINT users_email_plain_key UNIQUE (email)",
        LOCK_TIMEOUT,
        &safe,
        safe_lock,
    )
    .await;

    let journal: Vec<String> = sqlx::query_scalar(
        "SELECT event FROM pgevolve.journal WHERE detail LIKE 'add unique%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(journal, ["expand done", "validate done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_index_with_the_declared_definition_is_adopted_and_rebuilt_if_dropped() {
    let (_db, pool) = database(10).await;
    seed_users(&pool, 5_000).await;
    sqlx::raw_sql("CREATE INDEX users_email_idx ON users USING btree (email)")
        .execute(&pool)
        .await
        .unwrap();
    let oid = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT 'users_email_idx'::regclass::oid::int8")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = oid(pool.clone()).await;
    let evolution = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert_eq!(oid(pool.clone()).await, before, "the index was not rebuilt");
    let status = evolution.status().await.unwrap();
    assert!(
        status.iter().any(
            |s| s.description.starts_with("create index users_email_idx")
                && s.phase == Phase::Expand
        ),
        "{status:#?}"
    );
    drop(evolution);

    // Dropped by hand: the next boot builds it again (the catalog, not the record, decides).
    sqlx::raw_sql("DROP INDEX users_email_idx")
        .execute(&pool)
        .await
        .unwrap();
    Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(
        indexes(&pool, "users")
            .await
            .iter()
            .any(|(n, v, _)| n == "users_email_idx" && *v)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_name_with_another_definition_is_drift_and_nothing_changes() {
    let (_db, pool) = database(10).await;
    seed_users(&pool, 1_000).await;
    sqlx::raw_sql("CREATE INDEX users_email_idx ON users (lower(email))")
        .execute(&pool)
        .await
        .unwrap();
    let before = catalog_snapshot(&pool, "users").await;
    let err = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .expect_err("drift");
    let ErrorKind::Drift(problems) = err.kind() else {
        panic!("expected drift, got {err}");
    };
    let message = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        message.contains("index `users_email_idx` already exists with a different definition")
            && message.contains("lower(email)")
            && message.contains("USING btree (\"email\")")
            && message.contains("name = \"...\""),
        "{message}"
    );
    assert_eq!(catalog_snapshot(&pool, "users").await, before);
    let state: Option<String> = sqlx::query_scalar("SELECT to_regclass('pgevolve.steps')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, None, "not even the state store was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_can_be_aborted_and_one_removed_from_the_struct_is_dropped_at_contract() {
    let (_db, pool) = database(10).await;
    seed_users(&pool, 5_000).await;

    // Declared, built, then removed from the struct: contract drops it concurrently.
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(
        indexes(&pool, "users")
            .await
            .iter()
            .any(|(n, _, _)| n == "users_email_idx")
    );
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<plain::User>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert!(
        indexes(&pool, "users")
            .await
            .iter()
            .any(|(n, _, _)| n == "users_email_idx"),
        "nothing is dropped before contract"
    );
    evolution.contract().await.unwrap();
    let left: Vec<String> = indexes(&pool, "users")
        .await
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(left, ["users_pkey"]);
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, phase FROM pgevolve.steps WHERE object_name = 'users_email_idx'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows, [("drop_index".to_string(), "contract".to_string())]);
    evolution.contract().await.unwrap();
    // This instance stops serving (an abort waits for every live instance to acknowledge it).
    drop(evolution);

    // Declared again: built again. Then aborted: dropped, and not rebuilt by the next boot.
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let step = evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| matches!(s.kind, StepKind::CreateIndex(_)))
        .unwrap();
    assert!(
        indexes(&pool, "users")
            .await
            .iter()
            .any(|(n, v, _)| n == "users_email_idx" && *v)
    );
    evolution.abort(&step.id).await.unwrap();
    assert!(
        !indexes(&pool, "users")
            .await
            .iter()
            .any(|(n, _, _)| n == "users_email_idx")
    );
    let again = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    again.wait().await.unwrap();
    assert!(
        !indexes(&pool, "users")
            .await
            .iter()
            .any(|(n, _, _)| n == "users_email_idx"),
        "an aborted step is not run again"
    );
    let phase: String = sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE id = $1")
        .bind(step.id.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(phase, "aborted");
}
