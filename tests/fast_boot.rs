//! The boot fast path: once every step is done, a boot of the same build on an unchanged catalog
//! is one statement that registers the instance and fills the registry. Anything that changed
//! (the table by hand, a recorded phase, the build) sends the boot the slow way, which checks
//! and repairs as before.
//!
//! The registry is per process and tests run in parallel, so every test has a model (and table)
//! of its own.

use pgevolve_test_support as support;

use pgevolve::{DeployWindow, Evolution, Evolve, Evolver, Phase};
use sqlx::PgPool;
use support::{catalog_snapshot, database};

async fn boot<T: Evolve>(pool: &PgPool) -> Evolution {
    Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<T>()
        .boot()
        .await
        .unwrap()
}

/// Boots, lets the background work finish and contracts: every step is then done.
async fn evolve_to_the_end<T: Evolve>(pool: &PgPool) {
    let evolution = boot::<T>(pool).await;
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    assert!(
        evolution
            .progress()
            .iter()
            .all(|p| p.phase == Phase::Contract || p.phase == Phase::Expand),
        "{:#?}",
        evolution.progress()
    );
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until no instance is registered: the coordinators of dropped evolutions stop (and
/// deregister) in the background.
async fn no_instance_left(pool: &PgPool) -> bool {
    for _ in 0..100 {
        if count(pool, "SELECT count(*) FROM pgevolve.instances").await == 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// Boots, waits for the background work, and says whether the boot took the fast path.
async fn boots_fast<T: Evolve>(pool: &PgPool) -> bool {
    let evolution = boot::<T>(pool).await;
    evolution.wait().await.unwrap();
    evolution.booted_fast()
}

mod members {
    use pgevolve::Evolve;

    #[derive(Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "members")]
    pub struct Member {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(renamed_from = "name")]
        pub full_name: String,
        pub email: String,
        #[evolve(backfill = "lower(email)")]
        #[evolve(index)]
        pub email_normalized: String,
        pub nickname: Option<String>,
    }
}
use members::Member;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contracted_model_boots_in_one_statement_and_its_accessors_work() {
    let (_db, pool) = database(5).await;
    sqlx::raw_sql(
        "CREATE TABLE members (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
         INSERT INTO members SELECT g, 'Member ' || g, 'M' || g || '@Example.COM' FROM generate_series(1, 500) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    evolve_to_the_end::<Member>(&pool).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM pgevolve.verified_builds").await,
        1,
        "contract recorded the build as verified"
    );

    // As in a new process: the registry knows nothing of the model's phases (once the last
    // evolution's coordinator has stopped writing to it). The old column is gone, so SQL for the
    // pending phases fails.
    assert!(no_instance_left(&pool).await);
    let ids: Vec<_> = Member::plan().steps.iter().map(|s| s.id.clone()).collect();
    for id in &ids {
        pgevolve::__private::registry_for(&pool).set(id, Phase::Pending);
    }
    assert!(Member::find(&1, &pool).await.is_err(), "reads `name`");

    let catalog = catalog_snapshot(&pool, "members").await;
    let journal = count(&pool, "SELECT count(*) FROM pgevolve.journal").await;
    let evolution = boot::<Member>(&pool).await;
    assert!(evolution.booted_fast());
    assert!(evolution.is_finished(), "no background work");
    evolution.wait().await.unwrap();

    // The registry and the progress come from the one statement.
    for step in Member::plan().steps {
        assert_eq!(
            pgevolve::__private::registry_for(&pool).get(&step.id),
            Some(step.kind.last_phase()),
            "{}",
            step.describe()
        );
    }
    let progress = evolution.progress();
    assert_eq!(progress.len(), ids.len());
    assert!(
        progress
            .iter()
            .all(|p| ids.contains(&p.step) && p.phase >= Phase::Expand)
    );
    let found = Member::find(&7, &pool).await.unwrap().unwrap();
    assert_eq!(found.full_name, "Member 7");
    assert_eq!(found.email_normalized, "m7@example.com");
    let member = Member {
        id: 1000,
        full_name: "New".into(),
        email: "New@X.org".into(),
        email_normalized: "new@x.org".into(),
        nickname: None,
    };
    member.insert(&pool).await.unwrap();
    assert_eq!(Member::find(&1000, &pool).await.unwrap(), Some(member));

    // Registered in the same statement, with the steps of its build.
    let steps: Vec<String> =
        sqlx::query_scalar("SELECT unnest(steps) FROM pgevolve.instances WHERE id = $1 ORDER BY 1")
            .bind(evolution.instance_id())
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut expected: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    expected.sort();
    assert_eq!(steps, expected);

    // Nothing ran: no DDL, no journal entry.
    assert_eq!(catalog_snapshot(&pool, "members").await, catalog);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM pgevolve.journal").await,
        journal
    );
    // The rest of the API works as after any boot.
    evolution.contract().await.unwrap();
    assert!(
        evolution
            .status()
            .await
            .unwrap()
            .iter()
            .all(|s| s.phase >= Phase::Expand)
    );
}

mod tickets {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "tickets")]
    #[allow(dead_code)]
    pub struct Ticket {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(index)]
        pub title: String,
        #[evolve(default = "0")]
        pub priority: i32,
    }
}
use tickets::Ticket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_by_hand_send_the_next_boot_the_slow_way() {
    let (_db, pool) = database(5).await;
    evolve_to_the_end::<Ticket>(&pool).await;
    assert!(boots_fast::<Ticket>(&pool).await);

    // A column added by hand: not drift, but not what was verified either. The slow boot
    // accepts it and records the build again.
    sqlx::raw_sql("ALTER TABLE tickets ADD COLUMN note text")
        .execute(&pool)
        .await
        .unwrap();
    assert!(!boots_fast::<Ticket>(&pool).await);
    assert!(boots_fast::<Ticket>(&pool).await, "verified again");

    // An index dropped by hand: the slow boot builds it again.
    let index: String = sqlx::query_scalar(
        "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE indrelid = 'tickets'::regclass AND NOT indisprimary",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX {index}")))
        .execute(&pool)
        .await
        .unwrap();
    assert!(!boots_fast::<Ticket>(&pool).await);
    let valid: bool =
        sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)")
            .bind(&index)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(valid, "the slow path rebuilt {index}");
    assert!(boots_fast::<Ticket>(&pool).await);

    // A recorded phase changed (by an operator, or another build's leader): the slow boot
    // sees that the index is there and records its phase again.
    let index_step = Ticket::plan()
        .steps
        .iter()
        .find(|s| s.describe().contains("index"))
        .unwrap()
        .id
        .clone();
    sqlx::query("UPDATE pgevolve.steps SET phase = 'pending' WHERE id = $1")
        .bind(index_step.as_str())
        .execute(&pool)
        .await
        .unwrap();
    assert!(!boots_fast::<Ticket>(&pool).await);
    let phase: String = sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE id = $1")
        .bind(index_step.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(phase, "expand");
    assert!(boots_fast::<Ticket>(&pool).await);

    // A column type changed by hand: the slow path's drift check reports it, as before.
    sqlx::raw_sql("ALTER TABLE tickets ALTER COLUMN priority TYPE bigint")
        .execute(&pool)
        .await
        .unwrap();
    let err = Evolver::new(pool.clone())
        .model::<Ticket>()
        .boot()
        .await
        .expect_err("drift");
    assert!(matches!(err.kind(), pgevolve::ErrorKind::Drift(_)), "{err}");
    assert!(
        no_instance_left(&pool).await,
        "a failed boot leaves no registration behind"
    );
}

mod notes {
    pub mod v1 {
        use pgevolve::Evolve;

        #[derive(Evolve)]
        #[evolve(table = "notes")]
        #[allow(dead_code)]
        pub struct Note {
            #[evolve(primary_key)]
            pub id: i64,
            pub body: String,
        }
    }

    pub mod v2 {
        use pgevolve::Evolve;

        #[derive(Evolve)]
        #[evolve(table = "notes")]
        #[allow(dead_code)]
        pub struct Note {
            #[evolve(primary_key)]
            pub id: i64,
            pub body: String,
            pub tag: Option<String>,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_build_takes_the_slow_path_and_both_builds_are_verified_apart() {
    let (_db, pool) = database(5).await;
    evolve_to_the_end::<notes::v1::Note>(&pool).await;
    assert!(boots_fast::<notes::v1::Note>(&pool).await);

    // The new build: another key, so the slow path runs and adds the column.
    assert!(!boots_fast::<notes::v2::Note>(&pool).await);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'notes'::regclass AND attname = 'tag'"
        )
        .await,
        1
    );
    assert!(boots_fast::<notes::v2::Note>(&pool).await);

    // The old build (a rollback, or an instance not yet replaced) sees a changed catalog once,
    // then both builds boot fast.
    assert!(!boots_fast::<notes::v1::Note>(&pool).await);
    assert!(boots_fast::<notes::v1::Note>(&pool).await);
    assert!(boots_fast::<notes::v2::Note>(&pool).await);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM pgevolve.verified_builds").await,
        2
    );
}

mod events {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "events")]
    #[allow(dead_code)]
    pub struct Event {
        #[evolve(primary_key)]
        pub id: i64,
        pub kind: String,
        #[evolve(backfill = "upper(kind)")]
        pub kind_upper: String,
    }
}
use events::Event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_left_to_contract_keeps_the_slow_path() {
    let (_db, pool) = database(5).await;
    sqlx::raw_sql(
        "CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL);
         INSERT INTO events SELECT g, 'k' || g FROM generate_series(1, 100) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Backfilled and validated, not contracted: the step is not done.
    assert!(!boots_fast::<Event>(&pool).await);
    assert!(!boots_fast::<Event>(&pool).await);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM pgevolve.verified_builds").await,
        0
    );

    let evolution = boot::<Event>(&pool).await;
    assert!(!evolution.booted_fast());
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    assert!(boots_fast::<Event>(&pool).await);
}

mod labels {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "labels")]
    #[allow(dead_code)]
    pub struct Label {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: String,
    }
}
use labels::Label;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_store_of_the_previous_version_boots_slowly_once() {
    let (_db, pool) = database(2).await;
    evolve_to_the_end::<Label>(&pool).await;
    // As a store written by the previous version: no `verified_builds`, older version comment.
    sqlx::raw_sql(
        "DROP TABLE pgevolve.verified_builds; COMMENT ON TABLE pgevolve.steps IS 'pgevolve state 2'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(!boots_fast::<Label>(&pool).await);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM pgevolve.verified_builds").await,
        1,
        "bootstrapped again, and recorded"
    );
    assert!(boots_fast::<Label>(&pool).await);
    assert!(no_instance_left(&pool).await);
}
