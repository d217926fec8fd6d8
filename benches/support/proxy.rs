//! A TCP proxy on 127.0.0.1 between a client and PostgreSQL that counts protocol round trips.
//!
//! A round trip is counted each time the client sends a message after the server has spoken
//! since the client's previous message: the client had to wait for an answer before going on.
//! Several messages sent back to back (sqlx's Parse/Bind/Execute/Sync) are one round trip, and a
//! lone `Terminate` is none (nobody waits for it). The round trips before the server's first
//! `ReadyForQuery` on a connection are the connection's startup (one with `trust`
//! authentication, more with SCRAM), counted apart; so are sqlx's pool pings (a lone `Sync`,
//! sent when the pool hands out an idle connection). The proxy needs an unencrypted connection
//! (`sslmode=disable`), which it forwards byte for byte.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Totals over every connection through the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// TCP connections accepted.
    pub connections: u64,
    /// Round trips during connection startup (authentication up to the first `ReadyForQuery`).
    pub startup_round_trips: u64,
    /// Round trips after startup, pool pings included.
    pub round_trips: u64,
    /// Of `round_trips`, the pool's pings (a lone `Sync`).
    pub pings: u64,
    /// Statements executed: simple `Query` and extended `Execute` messages.
    pub statements: u64,
}

impl Counts {
    /// `self - earlier`.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            connections: self.connections - earlier.connections,
            startup_round_trips: self.startup_round_trips - earlier.startup_round_trips,
            round_trips: self.round_trips - earlier.round_trips,
            pings: self.pings - earlier.pings,
            statements: self.statements - earlier.statements,
        }
    }

    /// Every round trip the client waited for: startup and pings included.
    pub fn all_round_trips(&self) -> u64 {
        self.startup_round_trips + self.round_trips
    }
}

#[derive(Default)]
struct Counters {
    /// While set, the statements clients run are written to `log`.
    recording: std::sync::atomic::AtomicBool,
    log: Mutex<Vec<String>>,
    connections: AtomicU64,
    startup_round_trips: AtomicU64,
    round_trips: AtomicU64,
    pings: AtomicU64,
    statements: AtomicU64,
}

/// A running proxy.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `host:port`.
    pub async fn start(host: String, port: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect((host.as_str(), port)).await else {
                    continue;
                };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                tokio::spawn(forward(client, server, c.clone()));
            }
        });
        Ok(Proxy {
            addr,
            counters,
            task,
        })
    }

    /// Starts writing down the statements clients run (`simple:` a simple query, `prepare:` a
    /// Parse, `execute:` a Bind of a prepared statement, `ping` a lone Sync), from an empty log.
    pub fn record(&self) {
        self.counters
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.counters.recording.store(true, Ordering::SeqCst);
    }

    /// Stops writing statements down and returns them.
    pub fn recorded(&self) -> Vec<String> {
        self.counters.recording.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.counters.log.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The totals so far.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        Counts {
            connections: c.connections.load(Ordering::SeqCst),
            startup_round_trips: c.startup_round_trips.load(Ordering::SeqCst),
            round_trips: c.round_trips.load(Ordering::SeqCst),
            pings: c.pings.load(Ordering::SeqCst),
            statements: c.statements.load(Ordering::SeqCst),
        }
    }
}

/// What one connection's two directions share.
struct Conversation {
    /// The server sent something since the client's last message.
    server_spoke: bool,
    /// No `ReadyForQuery` yet: still authenticating.
    starting: bool,
    /// Message types of the client's current round trip (to tell pings apart).
    turn: Vec<u8>,
    /// The current round trip was counted as a ping when it was sent (see `forward`).
    pinged: bool,
    /// Prepared statements of this connection: name to SQL.
    prepared: std::collections::HashMap<String, String>,
}

impl Conversation {
    /// Ends the current round trip, counting it as a ping if it was a lone `Sync`.
    fn close_turn(&mut self, counters: &Counters) {
        if self.turn == [b'S'] && !self.pinged {
            counters.pings.fetch_add(1, Ordering::SeqCst);
            log(counters, || "ping".to_string());
        }
        self.turn.clear();
        self.pinged = false;
    }

    /// Writes down a complete Parse, Query or Bind message.
    fn statement(&mut self, counters: &Counters, kind: u8, body: &[u8]) {
        let mut fields = body
            .split(|b| *b == 0)
            .map(|f| String::from_utf8_lossy(f).into_owned());
        match kind {
            b'Q' => {
                let sql = fields.next().unwrap_or_default();
                log(counters, || format!("simple: {}", one_line(&sql)));
            }
            b'P' => {
                let name = fields.next().unwrap_or_default();
                let sql = fields.next().unwrap_or_default();
                log(counters, || format!("prepare: {}", one_line(&sql)));
                self.prepared.insert(name, sql);
            }
            b'B' => {
                let _portal = fields.next();
                let name = fields.next().unwrap_or_default();
                let sql = self.prepared.get(&name).cloned().unwrap_or_default();
                log(counters, || format!("execute: {}", one_line(&sql)));
            }
            _ => {}
        }
    }
}

fn log(counters: &Counters, line: impl FnOnce() -> String) {
    if counters.recording.load(Ordering::SeqCst) {
        counters
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line());
    }
}

fn one_line(sql: &str) -> String {
    let mut s = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 160 {
        let mut cut = 157;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

async fn forward(client: TcpStream, server: TcpStream, counters: Arc<Counters>) {
    let conversation = Arc::new(Mutex::new(Conversation {
        server_spoke: true,
        starting: true,
        turn: Vec::new(),
        pinged: false,
        prepared: Default::default(),
    }));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();

    let (conv, c) = (conversation.clone(), counters.clone());
    let upstream = async move {
        let mut parser = Parser::new(true);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // A write that is one `Sync` and nothing else starts a ping. It is counted as one
            // right away, together with its round trip: classified only once the server
            // answers, a ping sent just before a snapshot of the counts (the pool's release
            // ping as a boot returns) would count as a statement's round trip in it.
            let lone_sync = buf[..n] == [b'S', 0, 0, 0, 4];
            parser.feed(&buf[..n], |event| {
                let mut conv = conv.lock().unwrap_or_else(|p| p.into_inner());
                let kind = match event {
                    Event::Body(kind, body) => return conv.statement(&c, kind, body),
                    Event::Header(kind) => kind,
                };
                if kind == Some(b'X') {
                    return; // Terminate: nobody waits for an answer
                }
                if matches!(kind, Some(b'Q' | b'E')) {
                    c.statements.fetch_add(1, Ordering::SeqCst);
                }
                if conv.server_spoke {
                    conv.server_spoke = false;
                    if conv.starting {
                        c.startup_round_trips.fetch_add(1, Ordering::SeqCst);
                    } else if lone_sync {
                        conv.pinged = true;
                        // Round trip first: a snapshot never sees more pings than round trips.
                        c.round_trips.fetch_add(1, Ordering::SeqCst);
                        c.pings.fetch_add(1, Ordering::SeqCst);
                        log(&c, || "ping".to_string());
                    } else {
                        c.round_trips.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if !conv.starting {
                    conv.turn.push(kind.unwrap_or(0));
                }
            });
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };

    let (conv, c) = (conversation.clone(), counters.clone());
    let downstream = async move {
        let mut parser = Parser::new(false);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                // The client's round trip is answered: classify it.
                let mut conv = conv.lock().unwrap_or_else(|p| p.into_inner());
                if !conv.server_spoke {
                    conv.server_spoke = true;
                    conv.close_turn(&c);
                }
            }
            parser.feed(&buf[..n], |event| {
                if let Event::Header(Some(b'Z')) = event {
                    conv.lock().unwrap_or_else(|p| p.into_inner()).starting = false;
                }
            });
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// What the parser reports.
enum Event<'a> {
    /// A message's header is complete: its type (`None` for the untyped startup message).
    Header(Option<u8>),
    /// The complete body of a Parse, Query or Bind message (the client's statements).
    Body(u8, &'a [u8]),
}

/// Splits a byte stream into protocol messages: a type byte and a length that counts itself.
/// The client's first message (startup) has no type byte.
struct Parser {
    untyped_first: bool,
    header: Vec<u8>,
    remaining: usize,
    /// The type of the message whose body is being kept, and the body so far.
    keeping: Option<u8>,
    body: Vec<u8>,
}

impl Parser {
    fn new(untyped_first: bool) -> Parser {
        Parser {
            untyped_first,
            header: Vec::new(),
            remaining: 0,
            keeping: None,
            body: Vec::new(),
        }
    }

    /// Reports each message's header as soon as it is complete, and the bodies of the client's
    /// statement messages once complete.
    fn feed(&mut self, mut data: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                if self.keeping.is_some() {
                    self.body.extend_from_slice(&data[..n]);
                }
                self.remaining -= n;
                data = &data[n..];
                if self.remaining == 0
                    && let Some(kind) = self.keeping.take()
                {
                    on_event(Event::Body(kind, &self.body));
                    self.body.clear();
                }
                continue;
            }
            let header_len = if self.untyped_first { 4 } else { 5 };
            let need = header_len - self.header.len();
            let n = need.min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() < header_len {
                return;
            }
            let (kind, len_bytes) = if self.untyped_first {
                (None, &self.header[0..4])
            } else {
                (Some(self.header[0]), &self.header[1..5])
            };
            let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            // The length counts itself (4 bytes) but not the type byte.
            self.remaining = (len as usize).saturating_sub(4);
            self.untyped_first = false;
            self.header.clear();
            on_event(Event::Header(kind));
            if matches!(kind, Some(b'P' | b'Q' | b'B')) {
                if self.remaining == 0 {
                    on_event(Event::Body(kind.unwrap_or(0), &[]));
                } else {
                    self.keeping = kind;
                }
            }
        }
    }
}
