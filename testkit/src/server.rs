//! The server every [`TestDatabase`](crate::TestDatabase) lives on: `DATABASE_URL`'s, or one
//! throwaway cluster per process, started on first use.

use std::sync::{Arc, OnceLock};

use crate::{Cluster, Error};

/// The process-wide cluster, or the error that prevented it. Never dropped: the guardian
/// removes it when the process ends.
static CLUSTER: OnceLock<Result<Cluster, Arc<Error>>> = OnceLock::new();

/// URL of the maintenance database (`postgres`) of the server in use, starting the
/// process-wide throwaway cluster if needed.
///
/// When the `DATABASE_URL` environment variable is set (and not empty), that server is used
/// and no cluster is started; the result is `DATABASE_URL` with its database replaced by
/// `postgres`. Otherwise the first call starts a [`Cluster`] that lives until the process
/// exits; concurrent first calls wait for the same one. This blocks while the cluster starts:
/// async code should use [`TestDatabase::new`](crate::TestDatabase::new), which does it on
/// tokio's blocking pool.
///
/// # Errors
///
/// [`Error::BadUrl`] when `DATABASE_URL` is not a `postgres://` URL, and [`Error::Shared`]
/// holding the reason when the cluster could not be started (the same error for every caller).
pub fn server_url() -> Result<String, Error> {
    if let Some(url) = database_url() {
        return with_database(&url, "postgres");
    }
    match CLUSTER.get_or_init(|| Cluster::start().map_err(Arc::new)) {
        Ok(cluster) => Ok(cluster.url()),
        Err(error) => Err(Error::Shared(Arc::clone(error))),
    }
}

/// [`server_url`] without blocking an async runtime's worker thread.
pub(crate) async fn server_url_async() -> Result<String, Error> {
    let started = database_url().is_some() || CLUSTER.get().is_some();
    if started || tokio::runtime::Handle::try_current().is_err() {
        return server_url();
    }
    match tokio::task::spawn_blocking(server_url).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(Error::Io {
            context: "starting the cluster on tokio's blocking pool".to_owned(),
            source: std::io::Error::other(error),
        }),
    }
}

/// `DATABASE_URL`, unless unset or blank.
fn database_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// `url` with its database (the path) replaced by `database`, keeping user, host and query.
pub(crate) fn with_database(url: &str, database: &str) -> Result<String, Error> {
    let bad_url = || Error::BadUrl(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad_url)?;
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(bad_url());
    }
    let (before_query, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    let authority = before_query.split('/').next().unwrap_or_default();
    Ok(format!("{scheme}://{authority}/{database}{query}"))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_only_the_database() {
        let cases = [
            ("postgres://u:p@h:5432/app", "postgres://u:p@h:5432/x"),
            ("postgres://u@h", "postgres://u@h/x"),
            ("postgres://u@h/", "postgres://u@h/x"),
            (
                "postgresql://h/app?sslmode=disable",
                "postgresql://h/x?sslmode=disable",
            ),
            (
                "postgres:///app?host=/var/run/postgresql",
                "postgres:///x?host=/var/run/postgresql",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "x").unwrap(), expected, "{url}");
        }
    }

    #[test]
    fn rejects_other_urls() {
        assert!(with_database("mysql://h/app", "x").is_err());
        assert!(with_database("host=h dbname=app", "x").is_err());
    }
}
