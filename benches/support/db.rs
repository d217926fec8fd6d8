//! The server the benchmarks run on, a seeded template database every run copies, and the
//! catalog figures the reports need (WAL position, table size, server settings).

use std::str::FromStr;
use std::time::{Duration, Instant};

use pgevolve_testkit::{Cluster, TestDatabase};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::model;

/// Errors of the benchmark programs: anything goes, the message is what matters.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result of the benchmark programs.
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The server in use: the testkit's throwaway cluster, or `DATABASE_URL`'s server.
pub struct Server {
    /// Options of the maintenance database (`postgres`).
    admin: PgConnectOptions,
    /// Whether it is `DATABASE_URL`'s server (the throwaway cluster disappears by itself).
    pub external: bool,
    /// Databases this process created and has not dropped yet.
    created: Vec<String>,
    counter: u32,
    /// The cluster started for this server alone (durable settings); stopped when dropped.
    _cluster: Option<Cluster>,
}

/// A database holding `users` seeded with `rows` rows, copied by every run.
pub struct Template {
    /// Database name.
    pub name: String,
    /// Rows in `users`.
    pub rows: i64,
    /// How long the one-statement seed took.
    pub seed_seconds: f64,
}

/// One database of one run.
pub struct Database {
    /// Database name.
    pub name: String,
    /// Connection options.
    pub options: PgConnectOptions,
}

impl Database {
    /// Loads `users` and its indexes into shared buffers (`pg_prewarm`, created in the template
    /// by [`Server::create_template`] and so in every copy), or, where the extension is not
    /// installed, reads them once; a fresh copy would otherwise start every run with a cold
    /// cache the baseline has long left behind.
    pub async fn prewarm(&self) -> Result<()> {
        let mut conn = PgConnection::connect_with(&self.options).await?;
        let installed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_prewarm')",
        )
        .fetch_one(&mut conn)
        .await?;
        let sql = if installed {
            "SELECT pg_prewarm(c.oid::regclass) FROM pg_class c \
             WHERE c.oid = 'users'::regclass \
                OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'users'::regclass)"
        } else {
            "SELECT count(*) FROM users; SELECT count(*) FROM users WHERE id > 0"
        };
        sqlx::raw_sql(sql).execute(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    /// A pool of at most `max` connections.
    pub async fn pool(&self, max: u32) -> Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(600))
            .connect_with(self.options.clone())
            .await?)
    }
}

impl Server {
    /// Starts the throwaway cluster (or uses `DATABASE_URL`).
    pub async fn start() -> Result<Server> {
        // TestDatabase::new starts the process-wide cluster on tokio's blocking pool.
        let first = TestDatabase::new().await?;
        let url = pgevolve_testkit::server_url()?;
        let mut server = Server {
            admin: PgConnectOptions::from_str(&url)?,
            external: std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()),
            created: vec![first.name().to_string()],
            counter: 0,
            _cluster: None,
        };
        server.drop_database(first.name()).await?;
        Ok(server)
    }

    /// Uses `DATABASE_URL`'s server when it is set (its settings are its own); otherwise starts
    /// a throwaway cluster of its own with `fsync`, `synchronous_commit` and `full_page_writes`
    /// on (durable, as production runs) and the `name=value` settings of `durable`, or, with
    /// `durable` `None`, the testkit's fast settings.
    pub async fn start_durable(durable: Option<Vec<String>>) -> Result<Server> {
        let Some(extra) = durable else {
            return Server::start().await;
        };
        if std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
            return Server::start().await;
        }
        let cluster = tokio::task::spawn_blocking(move || {
            let mut settings = vec!["fsync=on", "synchronous_commit=on", "full_page_writes=on"];
            settings.extend(extra.iter().map(String::as_str));
            Cluster::start_with(&settings)
        })
        .await??;
        Ok(Server {
            admin: PgConnectOptions::from_str(&cluster.url())?,
            external: false,
            created: Vec::new(),
            counter: 0,
            _cluster: Some(cluster),
        })
    }

    /// Options for a database of this server.
    pub fn options(&self, database: &str) -> PgConnectOptions {
        self.admin.clone().database(database)
    }

    async fn admin(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect_with(&self.admin).await?)
    }

    /// `SELECT version()` and the settings that shape the figures.
    pub async fn describe(&self) -> Result<Vec<(String, String)>> {
        let mut conn = self.admin().await?;
        let mut out = Vec::new();
        let version: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(&mut conn)
            .await?;
        out.push(("version".to_string(), version));
        for setting in [
            "server_version",
            "shared_buffers",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_level",
            "max_wal_size",
            "checkpoint_timeout",
            "autovacuum",
            "max_connections",
        ] {
            let value: String = sqlx::query_scalar("SELECT current_setting($1)")
                .bind(setting)
                .fetch_one(&mut conn)
                .await?;
            out.push((setting.to_string(), value));
        }
        conn.close().await?;
        Ok(out)
    }

    fn next_name(&mut self, what: &str) -> String {
        self.counter += 1;
        format!(
            "pgevolve_bench_{}_{what}_{}",
            std::process::id(),
            self.counter
        )
    }

    /// A new database with `users` seeded with `rows` rows (one `INSERT ... SELECT
    /// generate_series`), vacuumed and analyzed, and the `pg_prewarm` extension where the server
    /// has it and the role may create it (copies inherit it; [`Database::prewarm`] checks).
    pub async fn create_template(&mut self, rows: i64) -> Result<Template> {
        let name = self.next_name("template");
        self.create_database(&name, None).await?;
        let db = Database {
            options: self.options(&name),
            name: name.clone(),
        };
        let pool = db.pool(1).await?;
        // Not installed, or not the role's to create: the copies read `users` instead.
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            .execute(&pool)
            .await;
        sqlx::query(model::CREATE_TABLE).execute(&pool).await?;
        let t = Instant::now();
        sqlx::query(model::SEED).bind(rows).execute(&pool).await?;
        let seed_seconds = t.elapsed().as_secs_f64();
        sqlx::query("VACUUM ANALYZE users").execute(&pool).await?;
        pool.close().await;
        Ok(Template {
            name,
            rows,
            seed_seconds,
        })
    }

    /// A copy of the template (`CREATE DATABASE ... TEMPLATE`), so every run starts from the
    /// same table, byte for byte. A `CHECKPOINT` follows, so the copy's WAL does not trigger a
    /// checkpoint in the middle of the run (ignored where the role may not checkpoint).
    pub async fn copy(&mut self, template: &Template) -> Result<Database> {
        let name = self.next_name("run");
        self.create_database(&name, Some(&template.name)).await?;
        let mut conn = self.admin().await?;
        let _ = sqlx::query("CHECKPOINT").execute(&mut conn).await;
        conn.close().await?;
        let db = Database {
            options: self.options(&name),
            name,
        };
        db.prewarm().await?;
        Ok(db)
    }

    async fn create_database(&mut self, name: &str, template: Option<&str>) -> Result<()> {
        let mut conn = self.admin().await?;
        // Names are [a-z0-9_] only, made here.
        let sql = match template {
            Some(t) => format!(r#"CREATE DATABASE "{name}" TEMPLATE "{t}""#),
            None => format!(r#"CREATE DATABASE "{name}""#),
        };
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
        conn.close().await?;
        self.created.push(name.to_string());
        Ok(())
    }

    /// Drops a database this process created. Sessions still connected to it (an evolution's
    /// listener or heartbeat winding down) are ended first (`WITH (FORCE)`, PostgreSQL 13+).
    pub async fn drop_database(&mut self, name: &str) -> Result<()> {
        let mut conn = self.admin().await?;
        let forced = sqlx::raw_sql(AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
        )))
        .execute(&mut conn)
        .await;
        if forced.is_err() {
            sqlx::raw_sql(AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}""#
            )))
            .execute(&mut conn)
            .await?;
        }
        conn.close().await?;
        self.created.retain(|n| n != name);
        Ok(())
    }

    /// Drops every database this process created and still holds.
    pub async fn cleanup(&mut self) {
        for name in self.created.clone() {
            if let Err(e) = self.drop_database(&name).await {
                eprintln!("could not drop database {name}: {e}");
            }
        }
    }
}

/// The current WAL position, in bytes.
pub async fn wal_lsn(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
            .fetch_one(pool)
            .await?,
    )
}

/// Sizes of `users`: the whole relation (heap, indexes, TOAST) and the heap alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableSize {
    /// `pg_total_relation_size`.
    pub total: i64,
    /// `pg_relation_size` (main fork of the heap).
    pub heap: i64,
}

/// The sizes of `users` now.
pub async fn table_size(pool: &PgPool) -> Result<TableSize> {
    let (total, heap): (i64, i64) =
        sqlx::query_as("SELECT pg_total_relation_size('users'), pg_relation_size('users')")
            .fetch_one(pool)
            .await?;
    Ok(TableSize { total, heap })
}
