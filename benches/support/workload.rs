//! The live workload: concurrent clients, each running a mix of `UPDATE` of `name` by random id,
//! `SELECT` by id and `INSERT`, recording every operation's latency in HDR histograms tagged
//! with the phase that was active when the operation started, and in one histogram per second
//! of the run.
//!
//! Closed loop ([`Workload::start`]): each client sends its next operation when the last one
//! returned. Open loop ([`Workload::start_open`]): each client has a schedule, one operation every
//! `clients / rate` seconds, and an operation's latency is counted from the moment the schedule
//! said to send it, so time spent waiting to be sent (behind a slow operation of the same client)
//! is part of it, as it is for a request arriving at a service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pgevolve::Evolve;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sqlx::{AssertSqlSafe, PgPool};
use tokio::task::JoinHandle;

use super::model::User;

/// Highest latency the histograms track exactly (one hour, in microseconds); longer ones are
/// recorded as this value.
const HIGHEST_US: u64 = 3_600_000_000;

/// Highest latency the per-second histograms track exactly (one minute, in microseconds).
const WINDOW_HIGHEST_US: u64 = 60_000_000;

/// Distinct error messages kept per client.
const MAX_ERROR_KINDS: usize = 20;

/// One kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `UPDATE users SET name = $1 WHERE id = $2`.
    Update,
    /// `SELECT ... FROM users WHERE id = $1`.
    Select,
    /// `INSERT INTO users ...`.
    Insert,
}

/// Every operation, in the order of histogram slots.
pub const OPS: [Op; 3] = [Op::Update, Op::Select, Op::Insert];

impl Op {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Update => "update",
            Op::Select => "select",
            Op::Insert => "insert",
        }
    }

    fn slot(self) -> usize {
        match self {
            Op::Update => 0,
            Op::Select => 1,
            Op::Insert => 2,
        }
    }

    /// Whether it writes.
    pub fn writes(self) -> bool {
        self != Op::Select
    }
}

/// Relative weights of the operations.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Weight of `UPDATE`.
    pub update: u32,
    /// Weight of `SELECT`.
    pub select: u32,
    /// Weight of `INSERT`.
    pub insert: u32,
}

impl Mix {
    /// The mix: 50% `UPDATE`, 30% `SELECT`, 20% `INSERT`.
    pub const READ_WRITE: Mix = Mix {
        update: 50,
        select: 30,
        insert: 20,
    };
    /// The same writes without the reads, for the trigger overhead.
    pub const WRITE_ONLY: Mix = Mix {
        update: 50,
        select: 0,
        insert: 20,
    };

    fn total(&self) -> u32 {
        self.update + self.select + self.insert
    }

    fn pick(&self, r: u32) -> Op {
        if r < self.update {
            Op::Update
        } else if r < self.update + self.select {
            Op::Select
        } else {
            Op::Insert
        }
    }
}

/// What one build of the application runs.
#[derive(Debug, Clone)]
pub enum Shape {
    /// Hand-written SQL.
    Sql(SqlShape),
    /// The new build of the pgevolve run: the struct's generated accessors, which read and write
    /// the columns each phase needs. `SELECT` is `User::find`, `INSERT` is `user.insert()` (ids
    /// from a range of its own: the accessors write every field, the key included), and the
    /// `UPDATE` of the name is one statement over the columns the accessors write for
    /// `full_name` in the current phase (`pgevolve::model_sql`, held while it runs, as the
    /// generated `update()` does): the generated `update()` writes every field, so it would need
    /// a `find` first and turn one statement into two.
    Accessors,
}

impl Shape {
    /// Which build.
    pub fn label(&self) -> String {
        match self {
            Shape::Sql(s) => s.label.clone(),
            Shape::Accessors => "new build (generated accessors)".into(),
        }
    }
}

/// The SQL one build of the application runs.
#[derive(Debug, Clone)]
pub struct SqlShape {
    /// Which build.
    pub label: String,
    /// `$1` = name, `$2` = id.
    pub update: String,
    /// `$1` = id.
    pub select: String,
    /// `$1` = name, `$2` = email, and `$3` = the normalized email when `writes_normalized`.
    pub insert: String,
    /// Whether the build writes `email_normalized` itself.
    pub writes_normalized: bool,
}

impl Shape {
    /// The old build: knows nothing of `email_normalized`, writes `name`.
    pub fn old() -> Shape {
        Shape::Sql(SqlShape {
            label: "old build (name, email)".into(),
            update: "UPDATE users SET name = $1 WHERE id = $2".into(),
            select: "SELECT id, name, email, created_at FROM users WHERE id = $1".into(),
            insert: "INSERT INTO users (name, email) VALUES ($1, $2)".into(),
            writes_normalized: false,
        })
    }

    /// A new build in hand-written SQL (the plain way's, once its migration committed): writes
    /// `email_normalized` itself (computed in Rust, as the struct's field would be) and reads
    /// it; the name column is `name_column`.
    pub fn new_sql(name_column: &str) -> Shape {
        Shape::Sql(SqlShape {
            label: format!("new build ({name_column}, email, email_normalized)"),
            update: format!("UPDATE users SET {name_column} = $1 WHERE id = $2"),
            select: format!(
                "SELECT id, {name_column}, email, email_normalized, created_at FROM users WHERE id = $1"
            ),
            insert: format!(
                "INSERT INTO users ({name_column}, email, email_normalized) VALUES ($1, $2, $3)"
            ),
            writes_normalized: true,
        })
    }
}

/// What one client saw during one phase.
pub struct PhaseRecord {
    /// Latency of successful operations in microseconds, per [`Op`].
    pub latency: [Histogram<u64>; 3],
    /// Failed operations, per [`Op`].
    pub failed: [u64; 3],
    /// Longest time a failed operation waited before failing, in microseconds.
    pub max_failed_us: u64,
    /// Longest interval without any completed operation (over all clients) that ended with an
    /// operation started in this phase, in microseconds.
    pub max_gap_us: u64,
}

impl PhaseRecord {
    fn new() -> PhaseRecord {
        let h = || Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds");
        PhaseRecord {
            latency: [h(), h(), h()],
            failed: [0; 3],
            max_failed_us: 0,
            max_gap_us: 0,
        }
    }
}

/// Everything one client recorded.
pub struct ClientRecord {
    /// Indexed by phase.
    pub phases: Vec<PhaseRecord>,
    /// Successful operations completed in each second since the workload started.
    pub per_second: Vec<u64>,
    /// Distinct error messages and how often each occurred.
    pub errors: BTreeMap<String, u64>,
    /// Latency of every operation (failed ones included: a failure is a wait too) by the second
    /// of the run in which it started (open loop: was scheduled), in microseconds, 2 significant
    /// digits.
    pub windows: Vec<Histogram<u64>>,
}

impl ClientRecord {
    fn phase(&mut self, i: usize) -> &mut PhaseRecord {
        while self.phases.len() <= i {
            self.phases.push(PhaseRecord::new());
        }
        &mut self.phases[i]
    }

    fn window(&mut self, second: usize) -> &mut Histogram<u64> {
        while self.windows.len() <= second {
            self.windows.push(
                Histogram::new_with_bounds(1, WINDOW_HIGHEST_US, 2)
                    .expect("valid histogram bounds"),
            );
        }
        &mut self.windows[second]
    }
}

struct Shared {
    pool: PgPool,
    shapes: Vec<Shape>,
    mix: Mix,
    rows: i64,
    phase: AtomicUsize,
    shape: AtomicUsize,
    stop: AtomicBool,
    /// Completion time of the latest operation, microseconds since `t0`.
    last_completion_us: AtomicU64,
    t0: Instant,
    /// Open loop: the time between two scheduled operations of one client.
    interval: Option<Duration>,
    clients: usize,
}

/// Running clients.
pub struct Workload {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<ClientRecord>>,
}

impl Workload {
    /// Starts `clients` clients on `pool`, running `shapes[0]` in phase 0. Ids are drawn
    /// uniformly from `1..=rows`.
    pub fn start(
        pool: PgPool,
        clients: usize,
        rows: i64,
        mix: Mix,
        shapes: Vec<Shape>,
    ) -> Workload {
        Workload::spawn(pool, clients, rows, mix, shapes, None)
    }

    /// Starts `clients` clients that together send `rate` operations per second on a fixed
    /// schedule, whatever the latency (open loop); see the module's documentation.
    pub fn start_open(
        pool: PgPool,
        clients: usize,
        rows: i64,
        mix: Mix,
        shapes: Vec<Shape>,
        rate: f64,
    ) -> Workload {
        let interval = Duration::from_secs_f64(clients.max(1) as f64 / rate.max(1.0));
        Workload::spawn(pool, clients, rows, mix, shapes, Some(interval))
    }

    fn spawn(
        pool: PgPool,
        clients: usize,
        rows: i64,
        mix: Mix,
        shapes: Vec<Shape>,
        interval: Option<Duration>,
    ) -> Workload {
        let shared = Arc::new(Shared {
            pool,
            shapes,
            mix,
            rows: rows.max(1),
            phase: AtomicUsize::new(0),
            shape: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            last_completion_us: AtomicU64::new(0),
            t0: Instant::now(),
            interval,
            clients: clients.max(1),
        });
        let handles = (0..clients)
            .map(|c| tokio::spawn(client(shared.clone(), c)))
            .collect();
        Workload { shared, handles }
    }

    /// When the clients started.
    pub fn started(&self) -> Instant {
        self.shared.t0
    }

    /// Operations starting from now are tagged with phase `i`.
    pub fn set_phase(&self, i: usize) {
        self.shared.phase.store(i, Ordering::SeqCst);
    }

    /// Operations starting from now run `shapes[i]`.
    pub fn set_shape(&self, i: usize) {
        self.shared.shape.store(i, Ordering::SeqCst);
    }

    /// Stops the clients (each finishes its current operation) and returns their records.
    pub async fn stop(self) -> Vec<ClientRecord> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        for h in self.handles {
            match h.await {
                Ok(r) => out.push(r),
                Err(e) => eprintln!("a workload client panicked: {e}"),
            }
        }
        out
    }
}

async fn client(shared: Arc<Shared>, c: usize) -> ClientRecord {
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + c as u64);
    let mut rec = ClientRecord {
        phases: Vec::new(),
        per_second: Vec::new(),
        errors: BTreeMap::new(),
        windows: Vec::new(),
    };
    let total = shared.mix.total().max(1);
    let mut n: u64 = 0;
    // Open loop: the clients' schedules are spread evenly over one interval.
    let mut next = shared
        .interval
        .map(|i| shared.t0 + i.mul_f64(c as f64 / shared.clients as f64));
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let started = match (next.as_mut(), shared.interval) {
            (Some(at), Some(interval)) => {
                let scheduled = *at;
                *at += interval;
                if scheduled > Instant::now() {
                    tokio::time::sleep_until(scheduled.into()).await;
                }
                scheduled
            }
            _ => Instant::now(),
        };
        let phase = shared.phase.load(Ordering::Relaxed);
        let shape = &shared.shapes[shared.shape.load(Ordering::Relaxed)];
        let op = shared.mix.pick(rng.random_range(0..total));
        let id = rng.random_range(1..=shared.rows);
        let result = run(&shared.pool, shape, op, id, c, n).await;
        let ended = Instant::now();
        let us = (ended - started).as_micros() as u64;
        let start_second = (started.saturating_duration_since(shared.t0).as_secs()) as usize;
        rec.window(start_second).saturating_record(us.max(1));
        let end_us = (ended - shared.t0).as_micros() as u64;
        let previous = shared.last_completion_us.swap(end_us, Ordering::AcqRel);
        let gap = end_us.saturating_sub(previous);
        let p = rec.phase(phase);
        p.max_gap_us = p.max_gap_us.max(gap);
        match result {
            Ok(()) => {
                p.latency[op.slot()].saturating_record(us.max(1));
                let second = (end_us / 1_000_000) as usize;
                if rec.per_second.len() <= second {
                    rec.per_second.resize(second + 1, 0);
                }
                rec.per_second[second] += 1;
            }
            Err(e) => {
                p.failed[op.slot()] += 1;
                p.max_failed_us = p.max_failed_us.max(us);
                let mut message = format!("{} ({}): {e}", op.name(), shape.label());
                if message.len() > 200 {
                    let mut cut = 200;
                    while !message.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    message.truncate(cut);
                }
                if rec.errors.len() < MAX_ERROR_KINDS || rec.errors.contains_key(&message) {
                    *rec.errors.entry(message).or_insert(0) += 1;
                }
                // No busy loop when every operation fails at once (server gone).
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    rec
}

/// Keys of rows inserted through the accessors: far above the sequence's.
const ACCESSOR_IDS: i64 = 1_000_000_000_000;

async fn run(
    pool: &PgPool,
    shape: &Shape,
    op: Op,
    id: i64,
    c: usize,
    n: u64,
) -> Result<(), String> {
    match shape {
        Shape::Sql(sql) => run_sql(pool, sql, op, id, c, n)
            .await
            .map_err(|e| e.to_string()),
        Shape::Accessors => run_accessors(pool, op, id, c, n)
            .await
            .map_err(|e| e.to_string()),
    }
}

async fn run_sql(
    pool: &PgPool,
    shape: &SqlShape,
    op: Op,
    id: i64,
    c: usize,
    n: u64,
) -> sqlx::Result<()> {
    match op {
        Op::Update => {
            sqlx::query(AssertSqlSafe(shape.update.as_str()))
                .bind(format!("Client {c} #{n}"))
                .bind(id)
                .execute(pool)
                .await?;
        }
        Op::Select => {
            sqlx::query(AssertSqlSafe(shape.select.as_str()))
                .bind(id)
                .fetch_optional(pool)
                .await?;
        }
        Op::Insert => {
            let email = format!("Client{c}.N{n}@Example.ORG");
            let mut q = sqlx::query(AssertSqlSafe(shape.insert.as_str()))
                .bind(format!("Client {c} #{n}"))
                .bind(email.clone());
            if shape.writes_normalized {
                q = q.bind(email.to_lowercase());
            }
            q.execute(pool).await?;
        }
    }
    Ok(())
}

async fn run_accessors(pool: &PgPool, op: Op, id: i64, c: usize, n: u64) -> pgevolve::Result<()> {
    match op {
        Op::Update => {
            // The columns the accessors write for `full_name` now: `name` and `full_name` until
            // the rename retires `name`. Holding `access` keeps the call counted as under way.
            let model: &'static pgevolve::ModelSpec = &<User as Evolve>::MODEL;
            let access = pgevolve::__private::model_sql(model)?;
            let field = model
                .columns
                .iter()
                .position(|col| col.field == "full_name")
                .unwrap_or(1);
            let set = access.writes[field]
                .iter()
                .enumerate()
                .map(|(i, col)| format!("{}\"{col}\" = $1", if i > 0 { ", " } else { "" }))
                .collect::<String>();
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE users SET {set} WHERE id = $2"
            )))
            .bind(format!("Client {c} #{n}"))
            .bind(id)
            .execute(pool)
            .await?;
            drop(access);
        }
        Op::Select => {
            User::find(&id, pool).await?;
        }
        Op::Insert => {
            let email = format!("Client{c}.N{n}@Example.ORG");
            User {
                id: ACCESSOR_IDS + c as i64 * 1_000_000_000 + n as i64,
                full_name: format!("Client {c} #{n}"),
                email_normalized: email.to_lowercase(),
                email,
                created_at: chrono::Utc::now(),
            }
            .insert(pool)
            .await?;
        }
    }
    Ok(())
}
