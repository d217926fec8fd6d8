//! A throwaway PostgreSQL for pgevolve's tests, examples and benchmarks.
//!
//! [`TestDatabase::new`] gives every test a fresh, empty database. The databases live on one
//! cluster per process, started on first use from the installed server binaries:
//!
//! - the binaries come from `pg_config --bindir`, else from the newest
//!   `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package);
//! - `initdb` runs in a new directory under [`std::env::temp_dir`], and `postgres` listens on a
//!   free port of `127.0.0.1`, user `postgres`, `trust` authentication, durability off;
//! - as root, both run as the `postgres` OS user (PostgreSQL refuses to run as root), which must
//!   be able to reach the temporary directory (`/tmp` is fine);
//! - a guardian process stops the server and removes the directory as soon as the test process
//!   is gone, however it ended (normal exit, panic, `kill -9`). See [`Cluster`].
//!
//! When `DATABASE_URL` is set, no cluster is started: each [`TestDatabase`] is a new database
//! (`CREATE DATABASE pgevolve_test_<pid>_<n>`) on that server, which the URL's user must be
//! allowed to do. Those databases are left in place afterwards.
//!
//! # Example
//!
//! ```
//! use pgevolve_testkit::TestDatabase;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), pgevolve_testkit::Error> {
//! let db = TestDatabase::new().await?;
//! let pool = db.pool(5).await?;
//! sqlx::query("CREATE TABLE users (id bigint PRIMARY KEY)")
//!     .execute(&pool)
//!     .await?;
//! let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
//!     .fetch_one(&pool)
//!     .await?;
//! assert_eq!(tables, 1);
//! # Ok(())
//! # }
//! ```
//!
//! [`PgBouncer::start`] puts a throwaway PgBouncer in transaction pooling mode in front of the
//! server, for tests of what an application behind a transaction pooler sees.
//!
//! [`TcpProxy::start`] puts a TCP proxy in front of it whose connections can all be cut at once
//! ([`TcpProxy::cut_all`]), for tests of what a lost connection does.
//!
//! Programs that want a server of their own, stopped at a point of their choosing, can own a
//! [`Cluster`] instead, and start a streaming replica of it with [`Cluster::start_replica`]
//! (for tests of what replication lag does).

mod backup;
mod binaries;
mod bouncer;
mod cluster;
mod database;
mod error;
mod guardian;
mod proxy;
pub mod rehearsal;
mod replica;
mod server;
mod url;
mod user;

pub use binaries::BINDIR_ENV;
pub use bouncer::PgBouncer;
pub use cluster::Cluster;
pub use database::TestDatabase;
pub use error::Error;
pub use proxy::TcpProxy;
pub use server::server_url;
