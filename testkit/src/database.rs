//! A fresh database per test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

use crate::Error;
use crate::server::{server_url_async, with_database};

/// SQLSTATE `duplicate_database`: a name left over from an earlier process with our pid.
const DUPLICATE_DATABASE: &str = "42P04";

/// How long [`TestDatabase::pool`] waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// An empty database of its own, named `pgevolve_test_<pid>_<n>`.
///
/// It lives on the process-wide throwaway cluster (see [`server_url`](crate::server_url)) or
/// on `DATABASE_URL`'s server. Nothing is dropped when the value is: the throwaway cluster
/// disappears with the process, while databases created on a `DATABASE_URL` server stay there
/// until someone drops them (`pgevolve_test_` names them all).
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// `postgres://…/<name>`.
    url: String,
    /// `pgevolve_test_<pid>_<n>`.
    name: String,
}

impl TestDatabase {
    /// A fresh, empty database on the process-wide throwaway cluster, or on DATABASE_URL's server.
    ///
    /// The first call in a process starts the cluster (on tokio's blocking pool, so it works
    /// on both the current-thread and the multi-thread runtime).
    ///
    /// # Errors
    ///
    /// Whatever [`server_url`](crate::server_url) returns, and [`Error::Database`] when
    /// connecting or `CREATE DATABASE` fails.
    pub async fn new() -> Result<TestDatabase, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let server = server_url_async().await?;
        let mut connection = PgConnection::connect(&server).await?;
        let name = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("pgevolve_test_{}_{n}", std::process::id());
            // The name is made of [a-z0-9_] only, so quoting it is enough.
            let create = format!(r#"CREATE DATABASE "{name}""#);
            match sqlx::raw_sql(AssertSqlSafe(create))
                .execute(&mut connection)
                .await
            {
                Ok(_) => break name,
                Err(error) if is_duplicate_database(&error) => continue,
                Err(error) => return Err(error.into()),
            }
        };
        connection.close().await?;
        Ok(TestDatabase {
            url: with_database(&server, &name)?,
            name,
        })
    }

    /// `postgres://` URL of the fresh database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of the fresh database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection pool to the fresh database with at most `max_connections` connections,
    /// waiting up to 30 s to acquire one.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the first connection fails.
    pub async fn pool(&self, max_connections: u32) -> Result<PgPool, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(&self.url)
            .await?;
        Ok(pool)
    }
}

/// Whether `CREATE DATABASE` failed because the name is taken.
fn is_duplicate_database(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == DUPLICATE_DATABASE)
}
