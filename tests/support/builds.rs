//! Holding a concurrent index build at a known point: an old snapshot makes it wait, and
//! `pg_stat_progress_create_index` says when it does.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};

/// A session holding a snapshot older than any build started after it: a concurrent build
/// waits for it ("waiting for old snapshots"), with its INVALID index already in the catalog.
/// It touches no table, so it blocks nothing else (not even `DROP INDEX CONCURRENTLY`).
pub async fn old_snapshot(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Waits until a build of `index` waits for old snapshots, and returns its backend's pid.
pub async fn build_waiting(pool: &PgPool, index: &str) -> i32 {
    let started = Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_progress_create_index \
             WHERE index_relid = to_regclass($1) AND phase = 'waiting for old snapshots' \
               AND datname = current_database()",
        )
        .bind(index)
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the build never reached its wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
