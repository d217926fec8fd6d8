//! The WAL budget's tests (`BackfillOptions::wal_budget`): a cluster whose WAL only the test
//! writes, its WAL position, and the least time a walk paced on a budget takes.

use std::time::{Duration, Instant};

use pgevolve_testkit::Cluster;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A throwaway cluster of the test's own and a pool on its `postgres` database. The WAL
/// position is the whole server's: on the cluster the tests share, the tests running beside
/// this one would write into the WAL it measures.
pub async fn own_cluster(max_connections: u32) -> (Cluster, PgPool) {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .unwrap()
        .expect("throwaway PostgreSQL");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(&cluster.url())
        .await
        .expect("pool");
    (cluster, pool)
}

/// The server's WAL insert position in bytes (what the runtime's batches read).
pub async fn position(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::int8")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The least time a walk that wrote `wal` bytes in all while keeping to `budget` bytes per
/// second takes, with a generous margin: half of `wal / budget` (the walk's last batch is
/// followed by no pause, and some of the WAL measured is not the walk's: its DDL, the state
/// store's rows). A walk that ignored the budget would take a fraction of it.
pub fn least_time(wal: i64, budget: u64) -> Duration {
    Duration::from_secs_f64(0.5 * wal.max(0) as f64 / budget as f64)
}

/// Where the server's WAL was, and when, before a walk paced on a budget started.
pub struct Before {
    wal: i64,
    at: Instant,
}

/// What a walk wrote, and how long it took, since [`Before`].
pub struct Spent {
    pub wal: i64,
    pub took: Duration,
}

impl Before {
    pub async fn now(pool: &PgPool) -> Before {
        Before {
            wal: position(pool).await,
            at: Instant::now(),
        }
    }

    /// Read as soon as the walk has ended, before the test's own checks add to either.
    pub async fn spent(self, pool: &PgPool) -> Spent {
        let took = self.at.elapsed();
        Spent {
            wal: position(pool).await - self.wal,
            took,
        }
    }
}

impl Spent {
    /// The walk wrote over a megabyte of WAL, took at least [`least_time`] for it at `budget`
    /// bytes per second, and journaled `backfill paced on wal` with `detail` in its detail
    /// (`" rows wrote "`, `" heap pages wrote "`: which loop it was).
    pub async fn assert_kept_to(&self, pool: &PgPool, budget: u64, detail: &str) {
        let (wal, took) = (self.wal, self.took);
        let least = least_time(wal, budget);
        assert!(
            wal > 1_000_000 && took >= least,
            "{wal} bytes of WAL in {took:?}: at {budget} bytes/s, at least {least:?}"
        );
        let paced: Vec<String> = sqlx::query_scalar(
            "SELECT detail FROM pgevolve.journal WHERE event = 'backfill paced on wal' \
             AND strpos(detail, $1) > 0",
        )
        .bind(detail)
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(
            !paced.is_empty(),
            "the walk never journaled its WAL pace (no `backfill paced on wal` with {detail:?})"
        );
    }
}
