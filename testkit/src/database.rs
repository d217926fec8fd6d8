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

    /// `postgres://` URL of the fresh database as another role: `user` (and `password`, when
    /// given) in place of the server URL's, both percent-encoded; host, port and query kept.
    ///
    /// On the throwaway cluster every local connection is trusted (`initdb --auth=trust`), so a
    /// role created with `CREATE ROLE name LOGIN` connects without a password; on a
    /// `DATABASE_URL` server, give the role a password and pass it here.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), pgevolve_testkit::Error> {
    /// let db = pgevolve_testkit::TestDatabase::new().await?;
    /// let admin = db.pool(1).await?;
    /// let role = format!("{}_app", db.name());
    /// sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE ROLE "{role}" LOGIN PASSWORD 'secret'"#)))
    ///     .execute(&admin)
    ///     .await?;
    /// let app = db.pool_as(1, &role, Some("secret")).await?;
    /// let user: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&app).await?;
    /// assert_eq!(user, role);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::BadUrl`] when the server URL has no `scheme://` part.
    pub fn url_as(&self, user: &str, password: Option<&str>) -> Result<String, Error> {
        with_user(&self.url, user, password)
    }

    /// Like [`TestDatabase::pool`], connected as another role (see [`TestDatabase::url_as`]).
    ///
    /// # Errors
    ///
    /// [`Error::BadUrl`] as [`TestDatabase::url_as`], [`Error::Database`] when the first
    /// connection fails (no such role, no `LOGIN`, no `CONNECT` on the database, a wrong
    /// password).
    pub async fn pool_as(
        &self,
        max_connections: u32,
        user: &str,
        password: Option<&str>,
    ) -> Result<PgPool, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(&self.url_as(user, password)?)
            .await?;
        Ok(pool)
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

/// `url` with its user information replaced by `user` and `password`, percent-encoded.
fn with_user(url: &str, user: &str, password: Option<&str>) -> Result<String, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::BadUrl(url.to_owned()))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let credentials = match password {
        Some(password) => format!("{}:{}", percent_encode(user), percent_encode(password)),
        None => percent_encode(user),
    };
    Ok(format!("{scheme}://{credentials}@{host}{tail}"))
}

/// Every byte but the URL's unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `CREATE DATABASE` failed because the name is taken.
fn is_duplicate_database(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == DUPLICATE_DATABASE)
}

#[cfg(test)]
mod tests {
    use super::with_user;

    #[test]
    fn replaces_only_the_user_information() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/db",
                "app",
                None,
                "postgres://app@127.0.0.1:5432/db",
            ),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "app",
                Some("s3cr@t/"),
                "postgres://app:s3cr%40t%2F@h/db?sslmode=disable",
            ),
            (
                "postgresql://h:5432/db",
                "a b",
                None,
                "postgresql://a%20b@h:5432/db",
            ),
        ];
        for (url, user, password, expected) in cases {
            assert_eq!(with_user(url, user, password).unwrap(), expected, "{url}");
        }
    }
}
