//! Fresh databases on the process-wide server.

use pgevolve_testkit::{TestDatabase, server_url};

async fn user_tables(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_databases_are_separate_and_empty() {
    let first = TestDatabase::new().await.unwrap();
    let second = TestDatabase::new().await.unwrap();
    assert_ne!(first.name(), second.name());
    assert_ne!(first.url(), second.url());
    assert!(first.url().ends_with(&format!("/{}", first.name())));

    let first_pool = first.pool(2).await.unwrap();
    let second_pool = second.pool(2).await.unwrap();
    for (db, pool) in [(&first, &first_pool), (&second, &second_pool)] {
        let version: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(version.starts_with("PostgreSQL"), "{version}");
        let current: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(current, db.name());
        assert_eq!(user_tables(pool).await, 0);
    }

    sqlx::query("CREATE TABLE only_in_first (id bigint PRIMARY KEY)")
        .execute(&first_pool)
        .await
        .unwrap();
    assert_eq!(user_tables(&first_pool).await, 1);
    assert_eq!(user_tables(&second_pool).await, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_the_current_thread_runtime() {
    let db = TestDatabase::new().await.unwrap();
    let pool = db.pool(1).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_server() {
    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(TestDatabase::new())).collect();
    let mut names = Vec::new();
    for task in tasks {
        names.push(task.await.unwrap().unwrap().name().to_owned());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8);

    // All of them are on the one server `server_url` names.
    let server = sqlx::PgPool::connect(&server_url().unwrap()).await.unwrap();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = ANY($1)")
        .bind(&names)
        .fetch_one(&server)
        .await
        .unwrap();
    assert_eq!(found, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_accepts_many_connections() {
    let db = TestDatabase::new().await.unwrap();
    let pool = db.pool(50).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(pool.acquire().await.unwrap());
    }
    assert_eq!(held.len(), 50);
}
