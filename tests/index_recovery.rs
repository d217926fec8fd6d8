//! Concurrent builds that go wrong: a unique build that meets duplicates, a build cancelled
//! midway with `pg_cancel_backend`, an INVALID index left by someone else's build, and the
//! process killed during a build (its statement left running, or terminated too). In every case
//! the next boot ends with exactly one valid index, or the clear error for duplicates, and
//! nothing is left behind.

use pgevolve_test_support as support;

use std::time::{Duration, Instant};

use pgevolve::{ErrorKind, Evolver, Phase};
use sqlx::PgPool;
use support::builds::{build_waiting, old_snapshot};
use support::child::{self, ChildProcess};
use support::{catalog_snapshot, constraints, database, indexes, seed_users};

use support::users::{indexed, unique};

const INDEX: &str = "users_email_idx";

/// Exactly one index on `email`, valid, with the planned name and definition; no INVALID index.
async fn assert_one_valid_index(pool: &PgPool) {
    let all = indexes(pool, "users").await;
    let on_email: Vec<_> = all
        .iter()
        .filter(|(_, _, def)| def.contains("(email)"))
        .collect();
    assert_eq!(on_email.len(), 1, "{all:#?}");
    assert_eq!(on_email[0].0, INDEX);
    assert!(all.iter().all(|(_, valid, _)| *valid), "{all:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_build_that_meets_duplicates_lists_them_and_leaves_nothing_behind() {
    let (_db, pool) = database(10).await;
    seed_users(&pool, 20_000).await;
    sqlx::raw_sql(
        "UPDATE users SET email = 'twice@example.com' WHERE id IN (10, 20);
         UPDATE users SET email = 'thrice@example.com' WHERE id IN (30, 40, 50);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = catalog_snapshot(&pool, "users").await;

    let evolution = Evolver::new(pool.clone())
        .model::<unique::User>()
        .boot()
        .await
        .expect("boot does not wait for the build");
    let err = evolution.wait().await.expect_err("duplicates");
    let message = err.to_string();
    assert!(
        message.contains("unique index users_email_key on (email) cannot be built")
            && message.contains("('thrice@example.com') in 3 rows")
            && message.contains("('twice@example.com') in 2 rows")
            && message.contains("INVALID index users_email_key it left was dropped")
            && message.contains("nothing else was changed"),
        "{message}"
    );
    let ErrorKind::Background(inner) = err.kind() else {
        panic!("{err}");
    };
    assert!(
        matches!(inner.kind(), ErrorKind::Verification { .. }),
        "{inner:?}"
    );
    assert_eq!(
        catalog_snapshot(&pool, "users").await,
        before,
        "no index, no constraint, nothing else"
    );

    // The duplicates removed, the next boot builds and attaches it.
    sqlx::raw_sql("DELETE FROM users WHERE id IN (20, 40, 50)")
        .execute(&pool)
        .await
        .unwrap();
    let evolution = Evolver::new(pool.clone())
        .model::<unique::User>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert!(constraints(&pool, "users").await.contains(&(
        "users_email_key".into(),
        "u".into(),
        true
    )));
    let all = indexes(&pool, "users").await;
    assert_eq!(
        all.iter()
            .filter(|(_, v, def)| *v && def.contains("(email)"))
            .count(),
        1,
        "{all:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_cancelled_midway_is_cleaned_up_and_the_next_boot_builds_it() {
    let (db, pool) = database(10).await;
    seed_users(&pool, 20_000).await;
    let before = catalog_snapshot(&pool, "users").await;

    let mut snapshot = old_snapshot(db.url()).await;
    let evolution = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    let pid = build_waiting(&pool, INDEX).await;
    let valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('users_email_idx')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!valid, "midway, the index is INVALID");
    sqlx::query("SELECT pg_cancel_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await
        .unwrap();
    let message = evolution.wait().await.expect_err("cancelled").to_string();
    assert!(
        message.contains("building index users_email_idx failed")
            && message.contains("canceling statement due to user request")
            && message.contains("the INVALID index users_email_idx it left was dropped"),
        "{message}"
    );
    assert_eq!(
        catalog_snapshot(&pool, "users").await,
        before,
        "nothing left behind"
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut snapshot)
        .await
        .unwrap();

    let evolution = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert_one_valid_index(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_index_left_by_another_build_is_dropped_and_built_again() {
    let (db, pool) = database(10).await;
    seed_users(&pool, 20_000).await;

    // Someone's own CREATE INDEX CONCURRENTLY under the planned name, cancelled midway.
    let mut snapshot = old_snapshot(db.url()).await;
    let by_hand = tokio::spawn({
        let pool = pool.clone();
        async move {
            sqlx::raw_sql("CREATE INDEX CONCURRENTLY users_email_idx ON users (email)")
                .execute(&pool)
                .await
        }
    });
    let pid = build_waiting(&pool, INDEX).await;
    sqlx::query("SELECT pg_cancel_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await
        .unwrap();
    assert!(by_hand.await.unwrap().is_err());
    sqlx::raw_sql("COMMIT")
        .execute(&mut snapshot)
        .await
        .unwrap();
    let all = indexes(&pool, "users").await;
    assert!(
        all.contains(&(
            INDEX.into(),
            false,
            "CREATE INDEX users_email_idx ON public.users USING btree (email)".into()
        )),
        "{all:#?}"
    );

    let evolution = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert_one_valid_index(&pool).await;
    let phase: String =
        sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE kind = 'create_index'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(phase, Phase::Expand.as_str());
}

/// The child of the kill tests: boots and leaves its background build running until killed.
/// Not a test in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_child_process() {
    let Some((_, url)) = child::child_spec() else {
        return;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    let _evolution = Evolver::new(pool)
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    child::report("BOOTED");
    std::future::pending::<()>().await;
}

/// Boots a real child process, waits until its build waits for the old snapshot, and kills it
/// with SIGKILL there. Returns the pid of the build's backend.
async fn kill_during_build(url: &str, pool: &PgPool) -> i32 {
    let mut process = ChildProcess::start("build_child_process", "build", url, None);
    process.expect("BOOTED");
    let pid = build_waiting(pool, INDEX).await;
    process.kill();
    // The leader lock died with the process's sessions.
    child::until_no_advisory_lock(pool).await;
    pid
}

/// A build still running in another session when the next process boots (a process whose
/// host vanished without closing its connection, or someone's own build under the planned
/// name): the boot waits for it instead of starting another, and adopts the index it makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_running_in_another_session_is_waited_for_and_adopted_by_the_next_boot() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(10).await;
    seed_users(&pool, 20_000).await;
    let mut snapshot = old_snapshot(db.url()).await;
    let running = tokio::spawn({
        let pool = pool.clone();
        async move {
            sqlx::raw_sql("CREATE INDEX CONCURRENTLY users_email_idx ON users (email)")
                .execute(&pool)
                .await
        }
    });
    let other = build_waiting(&pool, INDEX).await;

    let evolution = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!evolution.is_finished(), "waits for the running build");
    let builds: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_progress_create_index WHERE datname = current_database()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(builds, [other], "no second build was started");
    sqlx::raw_sql("COMMIT")
        .execute(&mut snapshot)
        .await
        .unwrap();
    running.await.unwrap().unwrap();
    evolution.wait().await.unwrap();
    assert_one_valid_index(&pool).await;
}

/// A real process SIGKILLed while its build waits: its connection is closed, but the build's
/// statement runs on in the server (pgevolve's build sessions do not ask the server to check the
/// client, so that a build is not lost with its process). The next boot waits for that build
/// instead of starting another, and adopts the index it makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_during_a_build_leaves_it_running_and_the_next_boot_adopts_it() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(10).await;
    seed_users(&pool, 20_000).await;
    let mut snapshot = old_snapshot(db.url()).await;
    let orphan = kill_during_build(db.url(), &pool).await;

    let evolution = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!evolution.is_finished(), "waits for the orphaned build");
    let builds: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_progress_create_index WHERE datname = current_database()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(builds, [orphan], "no second build was started");
    sqlx::raw_sql("COMMIT")
        .execute(&mut snapshot)
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert_one_valid_index(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_during_a_build_whose_statement_died_too_is_rebuilt_from_scratch() {
    if child::in_child() {
        return;
    }
    let (db, pool) = database(10).await;
    seed_users(&pool, 20_000).await;
    let mut snapshot = old_snapshot(db.url()).await;
    let orphan = kill_during_build(db.url(), &pool).await;
    // The build's session ends too (as when the server notices the client is gone).
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(orphan)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql("COMMIT")
        .execute(&mut snapshot)
        .await
        .unwrap();
    let started = Instant::now();
    while !indexes(&pool, "users")
        .await
        .iter()
        .any(|(n, v, _)| n == INDEX && !*v)
        || sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_progress_create_index WHERE datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
            > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no INVALID index left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let evolution = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    assert_one_valid_index(&pool).await;
    let journal: Vec<String> = sqlx::query_scalar("SELECT event FROM pgevolve.journal ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        journal,
        ["expand done"],
        "recorded once, by the second process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_in_progress_can_be_aborted() {
    let (db, pool) = database(10).await;
    seed_users(&pool, 20_000).await;
    let before = catalog_snapshot(&pool, "users").await;
    let mut snapshot = old_snapshot(db.url()).await;
    let evolution = Evolver::new(pool.clone())
        .model::<indexed::User>()
        .boot()
        .await
        .unwrap();
    build_waiting(&pool, INDEX).await;
    let step = evolution
        .plans()
        .into_iter()
        .flat_map(|p| p.steps)
        .find(|s| matches!(s.kind, pgevolve::StepKind::CreateIndex(_)))
        .unwrap();
    // The build is cancelled (it would otherwise wait for the old snapshot), its INVALID index
    // dropped, and the step recorded as aborted.
    tokio::time::timeout(Duration::from_secs(30), evolution.abort(&step.id))
        .await
        .expect("the abort does not wait for the build")
        .unwrap();
    assert_eq!(catalog_snapshot(&pool, "users").await, before);
    let status = evolution.status().await.unwrap();
    assert_eq!(
        status.iter().find(|s| s.id == step.id).unwrap().phase,
        Phase::Aborted
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut snapshot)
        .await
        .unwrap();
}

/// The gap between a unique constraint's attach (its validate phase's DDL) and the record of
/// the phase, two transactions: the state store is put back to what a process that died, or
/// lost its connection, in between leaves (phase `expand`, no `validate done` in the journal).
/// The next boot finds the constraint on the catalog, records the phase and journals it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_constraint_attached_but_not_recorded_is_recorded_and_journaled_once_by_the_next_boot()
 {
    let (_db, pool) = database(10).await;
    seed_users(&pool, 2_000).await;
    let evolver = || Evolver::new(pool.clone()).model::<unique::User>();
    evolver().boot().await.unwrap().wait().await.unwrap();
    sqlx::raw_sql(
        "UPDATE pgevolve.steps SET phase = 'expand' WHERE kind = 'add_unique';
         DELETE FROM pgevolve.journal WHERE event = 'validate done'",
    )
    .execute(&pool)
    .await
    .unwrap();

    evolver().boot().await.unwrap().wait().await.unwrap();
    let phase: String =
        sqlx::query_scalar("SELECT phase FROM pgevolve.steps WHERE kind = 'add_unique'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(phase, "validate");
    let done: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM pgevolve.journal WHERE event = 'validate done'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].contains("found done on the catalog"), "{done:?}");
    support::campaign::assert_no_invalid_index(&pool).await;
}
