//! Foreign keys and CHECK constraints on a 200,000-row table under four concurrent writers:
//! added `NOT VALID` then validated, they fail no write and hold none up for longer than
//! lock_timeout + 1 s, while the plain `ADD CONSTRAINT` under the same writers measurably blocks
//! them. Then violations (an error with examples, the constraint dropped), adoption and abort.

use pgevolve_test_support as support;

use std::time::Duration;

use pgevolve::{ErrorKind, Evolver, Phase, StepKind};
use sqlx::PgPool;
use support::{
    LockWaits, WriteLoad, assert_reboot_changes_nothing, catalog_snapshot, constraints, database,
    seed_users,
};

const ROWS: i64 = 200_000;
const ACCOUNTS: i64 = 1_000;
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
const INSERT: &str =
    "INSERT INTO users (name, email, account_id) VALUES ('writer', $1, 1 + $2 % 1000)";
const UPDATE: &str = "UPDATE users SET email = $1 WHERE id = $2";
const WRITES: &[&str] = &["INSERT INTO users", "UPDATE users"];
const LOAD: WriteLoad = WriteLoad {
    rows: ROWS,
    insert: INSERT,
    update: UPDATE,
    prefixes: WRITES,
};

mod with_fk {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "users")]
    #[allow(dead_code)]
    pub struct User {
        #[evolve(primary_key, generated)]
        pub id: i64,
        pub name: String,
        pub email: String,
        #[evolve(references = "accounts(id)", on_delete = "cascade")]
        pub account_id: Option<i64>,
    }
}

mod with_check {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "users")]
    #[evolve(check(name = "users_name_not_blank", expr = "name <> ''"))]
    #[allow(dead_code)]
    pub struct User {
        #[evolve(primary_key, generated)]
        pub id: i64,
        pub name: String,
        #[evolve(check = "position('@' in email) > 1")]
        pub email: String,
        pub account_id: Option<i64>,
    }
}

/// `users` (from `seed_users`) plus `account_id`, every row pointing at one of `ACCOUNTS`
/// accounts.
async fn seed(pool: &PgPool, rows: i64) {
    seed_users(pool, rows).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, {ACCOUNTS}) g;
         ALTER TABLE users ADD COLUMN account_id bigint;
         UPDATE users SET account_id = 1 + id % {ACCOUNTS};"
    )))
    .execute(pool)
    .await
    .unwrap();
    sqlx::raw_sql("VACUUM ANALYZE users")
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_key_is_validated_under_writers_and_the_plain_one_blocks_them() {
    let (db, pool) = database(20).await;
    seed(&pool, ROWS).await;

    let writers = LOAD.start(&pool);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waits = LockWaits::start(db.url(), WRITES).await;
    let evolution = Evolver::new(pool.clone())
        .model::<with_fk::User>()
        .lock_timeout(LOCK_TIMEOUT)
        .boot()
        .await
        .expect("boot");
    // NOT VALID at boot: new writes are checked from now on.
    let at_boot = constraints(&pool, "users").await;
    assert!(
        at_boot.contains(&("users_account_id_fkey".into(), "f".into(), false))
            || at_boot.contains(&("users_account_id_fkey".into(), "f".into(), true)),
        "{at_boot:#?}"
    );
    evolution.wait().await.expect("validated");
    let safe_lock = waits.finish().await;
    let safe = writers.finish().await;
    assert!(constraints(&pool, "users").await.contains(&(
        "users_account_id_fkey".into(),
        "f".into(),
        true
    )));
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'users_account_id_fkey'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        definition,
        "FOREIGN KEY (account_id) REFERENCES accounts(id) ON DELETE CASCADE"
    );

    LOAD.assert_plain_blocks(&pool, db.url(), "ADD FOREIGN KEY", "ALTER TABLE users ADD CONSTRAINT users_account_plain_fkey FOREIGN KEY (account_id) REFERENCES accounts (id)", LOCK_TIMEOUT, &safe, safe_lock).await;

    let journal: Vec<String> = sqlx::query_scalar(
        "SELECT event FROM pgevolve.journal WHERE detail LIKE 'add foreign key%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(journal, ["expand done", "validate done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_check_is_validated_under_writers_and_the_plain_one_blocks_them() {
    let (db, pool) = database(20).await;
    seed(&pool, ROWS).await;

    let writers = LOAD.start(&pool);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waits = LockWaits::start(db.url(), WRITES).await;
    let evolution = Evolver::new(pool.clone())
        .model::<with_check::User>()
        .lock_timeout(LOCK_TIMEOUT)
        .boot()
        .await
        .expect("boot");
    evolution.wait().await.expect("validated");
    let safe_lock = waits.finish().await;
    let safe = writers.finish().await;
    let all = constraints(&pool, "users").await;
    for name in ["users_email_check", "users_name_not_blank"] {
        assert!(
            all.contains(&(name.into(), "c".into(), true)),
            "{name} in {all:#?}"
        );
    }

    LOAD.assert_plain_blocks(&pool, db.url(), "ADD CHECK", "ALTER TABLE users ADD CONSTRAINT users_email_plain_check CHECK (position('@' in email) > 1)", LOCK_TIMEOUT, &safe, safe_lock).await;

    // Booting again adopts both validated checks and changes nothing.
    assert_reboot_changes_nothing::<with_check::User>(&pool, "users").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_violating_a_foreign_key_are_listed_and_the_constraint_is_dropped() {
    let (_db, pool) = database(10).await;
    seed(&pool, 10_000).await;
    sqlx::raw_sql("UPDATE users SET account_id = 99999 WHERE id IN (17, 4242)")
        .execute(&pool)
        .await
        .unwrap();
    let before = catalog_snapshot(&pool, "users").await;
    let evolution = Evolver::new(pool.clone())
        .model::<with_fk::User>()
        .boot()
        .await
        .expect("boot: NOT VALID checks no existing row");
    let err = evolution.wait().await.expect_err("validation fails");
    let message = err.to_string();
    assert!(
        message.contains("foreign key users_account_id_fkey")
            && message.contains("row id=17 (account_id = 99999)")
            && message.contains("row id=4242 (account_id = 99999)")
            && message.contains("the constraint was dropped"),
        "{message}"
    );
    let ErrorKind::Background(inner) = err.kind() else {
        panic!("{err}");
    };
    assert!(
        matches!(inner.kind(), ErrorKind::Verification { phase, .. } if phase == "validate"),
        "{inner}"
    );
    assert_eq!(catalog_snapshot(&pool, "users").await, before);
    let phase: String =
        sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE kind = 'add_foreign_key'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(phase, "pending");

    // Fixed, then booted again: added and validated.
    sqlx::raw_sql("UPDATE users SET account_id = NULL WHERE account_id = 99999")
        .execute(&pool)
        .await
        .unwrap();
    Evolver::new(pool.clone())
        .model::<with_fk::User>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(constraints(&pool, "users").await.contains(&(
        "users_account_id_fkey".into(),
        "f".into(),
        true
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_violating_a_check_are_listed_and_the_constraint_is_dropped() {
    let (_db, pool) = database(10).await;
    seed(&pool, 10_000).await;
    sqlx::raw_sql("UPDATE users SET email = 'no-at-sign' WHERE id = 99")
        .execute(&pool)
        .await
        .unwrap();
    let before = catalog_snapshot(&pool, "users").await;
    let evolution = Evolver::new(pool.clone())
        .model::<with_check::User>()
        .boot()
        .await
        .unwrap();
    let message = evolution.wait().await.expect_err("violation").to_string();
    assert!(
        message.contains("check users_email_check")
            && message.contains("row id=99")
            && message.contains("the constraint was dropped"),
        "{message}"
    );
    // The other check validated before this one was tried; this one is gone.
    let all = constraints(&pool, "users").await;
    assert!(
        !all.iter().any(|(n, _, _)| n == "users_email_check"),
        "{all:#?}"
    );
    let mut expected = before.clone();
    expected.retain(|c| !c.contains("users_name_not_blank"));
    let mut after = catalog_snapshot(&pool, "users").await;
    after.retain(|c| !c.contains("users_name_not_blank"));
    assert_eq!(after, expected, "nothing else changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_can_be_aborted_and_an_existing_foreign_key_is_adopted() {
    let (_db, pool) = database(10).await;
    seed(&pool, 2_000).await;

    // Adopted: the constraint exists (under another name) with the declared definition.
    sqlx::raw_sql(
        "ALTER TABLE users ADD CONSTRAINT by_hand FOREIGN KEY (account_id) REFERENCES accounts (id) ON DELETE CASCADE",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_reboot_changes_nothing::<with_fk::User>(&pool, "users").await;

    // Drift: the same foreign key with another ON DELETE.
    sqlx::raw_sql(
        "ALTER TABLE users DROP CONSTRAINT by_hand;
         ALTER TABLE users ADD CONSTRAINT by_hand FOREIGN KEY (account_id) REFERENCES accounts (id)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = Evolver::new(pool.clone())
        .model::<with_fk::User>()
        .boot()
        .await
        .expect_err("drift");
    assert!(
        matches!(err.kind(), ErrorKind::Drift(_)) && err.to_string().contains("ON DELETE CASCADE"),
        "{err}"
    );

    // Abort of checks added by pgevolve: dropped, recorded, not added again.
    sqlx::raw_sql("ALTER TABLE users DROP CONSTRAINT by_hand")
        .execute(&pool)
        .await
        .unwrap();
    let evolution = Evolver::new(pool.clone())
        .model::<with_check::User>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let step = evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| matches!(s.kind, StepKind::AddCheck(c) if c.column == Some("email")))
        .unwrap();
    evolution.abort(&step.id).await.unwrap();
    let all = constraints(&pool, "users").await;
    assert!(
        !all.iter().any(|(n, _, _)| n == "users_email_check"),
        "{all:#?}"
    );
    let again = Evolver::new(pool.clone())
        .model::<with_check::User>()
        .boot()
        .await
        .unwrap();
    again.wait().await.unwrap();
    let status = again.status().await.unwrap();
    assert_eq!(
        status.iter().find(|s| s.id == step.id).unwrap().phase,
        Phase::Aborted
    );
    assert!(
        !constraints(&pool, "users")
            .await
            .iter()
            .any(|(n, _, _)| n == "users_email_check")
    );
}

mod fresh {
    use pgevolve::Evolve;

    #[derive(Evolve)]
    #[evolve(table = "authors")]
    #[allow(dead_code)]
    pub struct Author {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(unique)]
        pub handle: String,
    }

    #[derive(Evolve)]
    #[evolve(table = "posts")]
    #[evolve(index(
        name = "posts_live_slug",
        columns("slug"),
        unique,
        where = "deleted_at IS NULL"
    ))]
    #[evolve(check(
        name = "posts_dates",
        expr = "deleted_at IS NULL OR deleted_at >= created_at"
    ))]
    #[allow(dead_code)]
    pub struct Post {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(references = "authors(id)", on_delete = "cascade", index)]
        pub author_id: i64,
        #[evolve(references = "authors(handle)", on_delete = "set null")]
        pub editor: Option<String>,
        pub slug: String,
        #[evolve(check = "score >= 0")]
        pub score: i32,
        pub created_at: i64,
        pub deleted_at: Option<i64>,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tables_are_created_with_their_indexes_and_constraints() {
    let (_db, pool) = database(10).await;
    let evolution = Evolver::new(pool.clone())
        .model::<fresh::Author>()
        .model::<fresh::Post>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    let mut all = constraints(&pool, "posts").await;
    all.extend(constraints(&pool, "authors").await);
    for (name, kind) in [
        ("posts_pkey", "p"),
        ("posts_author_id_fkey", "f"),
        ("posts_editor_fkey", "f"),
        ("posts_score_check", "c"),
        ("posts_dates", "c"),
        ("authors_pkey", "p"),
        ("authors_handle_key", "u"),
    ] {
        assert!(
            all.contains(&(name.into(), kind.into(), true)),
            "{name} in {all:#?}"
        );
    }
    assert_eq!(all.len(), 7, "{all:#?}");
    let indexes: Vec<String> = support::indexes(&pool, "posts")
        .await
        .into_iter()
        .map(|(n, valid, def)| {
            assert!(valid, "{def}");
            n
        })
        .collect();
    assert_eq!(
        indexes,
        ["posts_author_id_idx", "posts_live_slug", "posts_pkey"]
    );
    let status = evolution.status().await.unwrap();
    assert!(
        status
            .iter()
            .filter(|s| s.table == "public.posts")
            .all(|s| s.phase >= Phase::Expand),
        "{status:#?}"
    );
    drop(evolution);

    // Booting again changes nothing.
    let before = (
        catalog_snapshot(&pool, "posts").await,
        catalog_snapshot(&pool, "authors").await,
    );
    Evolver::new(pool.clone())
        .model::<fresh::Author>()
        .model::<fresh::Post>()
        .boot()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        (
            catalog_snapshot(&pool, "posts").await,
            catalog_snapshot(&pool, "authors").await
        ),
        before
    );
}
