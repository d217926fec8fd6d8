//! A TCP proxy on 127.0.0.1 in front of a server, whose connections can all be cut at once: the
//! network failures of a test (a restarted load balancer, a NAT table flushed, a failover), on
//! demand and without touching the server.
//!
//! [`TcpProxy::start`] listens on a free port and forwards every connection it accepts to the
//! upstream address, byte for byte, in both directions (so it needs `sslmode=disable`, which the
//! testkit's URLs use). [`TcpProxy::cut_all`] closes every connection open at that moment on both
//! sides: the client reads end of file (sqlx: "connection reset" or "unexpected end of file") and
//! the server's backend sees its client gone, exactly as when the network drops the connection.
//! New connections are accepted as before, so a client that reconnects carries on.
//!
//! ```
//! use pgevolve_testkit::{TcpProxy, TestDatabase};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), pgevolve_testkit::Error> {
//! let db = TestDatabase::new().await?;
//! let proxy = TcpProxy::for_url(db.url()).await?;
//! let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&proxy.url_for(db.url())?).await?;
//! sqlx::query("SELECT 1").execute(&mut conn).await?;
//! assert_eq!(proxy.cut_all(), 1);
//! assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());
//! assert_eq!((proxy.cuts(), proxy.connections_cut()), (1, 1));
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use crate::Error;

/// A running proxy; stops listening and closes every connection when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    /// The forwarding task of every open connection, by a number of its own.
    open: Mutex<HashMap<u64, AbortHandle>>,
    next: AtomicU64,
    accepted: AtomicU64,
    cuts: AtomicU64,
    connections_cut: AtomicU64,
}

impl Shared {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`
    /// (`host:port`). A connection whose upstream refuses it is closed at once.
    pub async fn start(upstream: String) -> Result<TcpProxy, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("binding the proxy's port on 127.0.0.1"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("reading the proxy's port"))?;
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream.as_str()).await else {
                    continue;
                };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let id = state.next.fetch_add(1, Ordering::SeqCst);
                // Registered before it runs, so a cut right now closes it too.
                let mut open = state.open();
                let gone = state.clone();
                let task = tokio::spawn(async move {
                    let (mut client, mut server) = (client, server);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    gone.open().remove(&id);
                });
                open.insert(id, task.abort_handle());
            }
        });
        Ok(TcpProxy {
            addr,
            shared,
            accept,
        })
    }

    /// A proxy in front of the server of a `postgres://` URL (its host and port, 5432 when the
    /// URL names none).
    pub async fn for_url(url: &str) -> Result<TcpProxy, Error> {
        let options = PgConnectOptions::from_str(url).map_err(|_| Error::BadUrl(url.to_owned()))?;
        TcpProxy::start(format!("{}:{}", options.get_host(), options.get_port())).await
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `database_url` with its host and port replaced by the proxy's: the same database, user
    /// and parameters, through the proxy.
    pub fn url_for(&self, database_url: &str) -> Result<String, Error> {
        crate::url::with_port(database_url, self.port())
    }

    /// Connection options for `database_url` through the proxy.
    pub fn options_for(&self, database_url: &str) -> Result<PgConnectOptions, Error> {
        let url = self.url_for(database_url)?;
        PgConnectOptions::from_str(&url).map_err(|_| Error::BadUrl(url))
    }

    /// Closes every connection open now, on both sides, and returns how many there were. Counts
    /// as one cut even when there were none.
    pub fn cut_all(&self) -> usize {
        let cut: Vec<AbortHandle> = self.shared.open().drain().map(|(_, task)| task).collect();
        for task in &cut {
            // Dropping the task's two sockets closes them.
            task.abort();
        }
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        self.shared
            .connections_cut
            .fetch_add(cut.len() as u64, Ordering::SeqCst);
        cut.len()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open().len()
    }

    /// Connections accepted (and connected upstream) so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Calls of [`TcpProxy::cut_all`] so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Connections closed by [`TcpProxy::cut_all`] so far.
    pub fn connections_cut(&self) -> u64 {
        self.shared.connections_cut.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, task) in self.shared.open().drain() {
            task.abort();
        }
    }
}
