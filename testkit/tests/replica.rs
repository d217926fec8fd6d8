//! A streaming replica of an owned cluster: it replays what the primary writes, its replay can
//! be paused (the primary then sees replay lag in bytes), and it goes away with its value.

use std::time::{Duration, Instant};

use pgevolve_testkit::Cluster;
use sqlx::PgPool;

/// Polls `check` every 50 ms until it holds, failing with `what` after 30 s.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn replay_lag_bytes(primary: &PgPool) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8 FROM pg_stat_replication",
    )
    .fetch_optional(primary)
    .await
    .unwrap()
    .flatten()
}

#[tokio::test]
async fn a_replica_replays_the_primary_and_lags_while_its_replay_is_paused() {
    let (primary, replica) = tokio::task::spawn_blocking(|| {
        let primary = Cluster::start().unwrap();
        let replica = primary.start_replica().unwrap();
        (primary, replica)
    })
    .await
    .unwrap();
    let root = replica.data_dir().parent().unwrap().to_owned();
    let on_primary = PgPool::connect(&primary.url()).await.unwrap();
    let on_replica = PgPool::connect(&replica.url()).await.unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&on_replica)
        .await
        .unwrap();
    assert!(in_recovery, "the replica is a standby");

    sqlx::raw_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .execute(&on_primary)
        .await
        .unwrap();
    until("the replica replays the insert", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM t")
            .fetch_one(&on_replica)
            .await
            .is_ok_and(|n| n == 1)
    })
    .await;
    until("the primary sees the replica streaming", || async {
        replay_lag_bytes(&on_primary).await.is_some()
    })
    .await;

    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&on_replica)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t SELECT g FROM generate_series(2, 20000) g")
        .execute(&on_primary)
        .await
        .unwrap();
    until("replay lag past 100 kB while replay is paused", || async {
        replay_lag_bytes(&on_primary).await.unwrap_or(0) > 100_000
    })
    .await;
    let replayed: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&on_replica)
        .await
        .unwrap();
    assert_eq!(replayed, 1, "nothing replayed while paused");

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&on_replica)
        .await
        .unwrap();
    until("the replica catches up", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM t")
            .fetch_one(&on_replica)
            .await
            .is_ok_and(|n| n == 20_000)
    })
    .await;

    on_replica.close().await;
    on_primary.close().await;
    replica.shutdown().unwrap();
    assert!(!root.exists(), "the replica's directory is removed");
    primary.shutdown().unwrap();
}
