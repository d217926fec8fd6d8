//! What the server's sessions were doing, sampled from `pg_stat_activity` every 100 ms while a
//! run's workload runs, per phase: the "why" behind a phase's latency. A session that is
//! active with no wait event is on the CPU (or queued for one); otherwise its wait event says
//! what held it (`IO:WALSync`, `LWLock:WALWrite`, `IO:DataFileRead`, `Lock:relation`, ...).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};
use tokio::task::JoinHandle;

use super::report::{Table, num};

/// Every non-idle session but the sampler's own, named by who it is and what it is doing.
/// The migration's statements are told from the workload's by their text: the runtime's
/// batches, counts and bookkeeping name `pgevolve` objects, and its DDL is the only DDL.
const SAMPLE: &str = "\
SELECT CASE
         WHEN backend_type <> 'client backend' THEN backend_type
         WHEN query ILIKE '%pgevolve%' OR query ~* '^\\s*(CREATE|ALTER|DROP|SET|LOCK)\\s' THEN 'migration'
         ELSE 'workload'
       END AS who,
       CASE WHEN wait_event IS NULL THEN 'CPU' ELSE wait_event_type || ':' || wait_event END AS what
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid()
   AND (datname = current_database() OR datname IS NULL)
   AND state IS DISTINCT FROM 'idle'
   AND wait_event_type IS DISTINCT FROM 'Activity'";

/// Samples per phase: how many times a session of `who` was seen doing `what`.
#[derive(Debug, Default, Clone)]
pub struct Waits {
    /// Per phase index: (who, what) -> sessions seen.
    pub by_phase: Vec<BTreeMap<(String, String), u64>>,
    /// Per phase index: samples taken.
    pub samples: Vec<u64>,
}

/// A sampler running beside a workload.
pub struct WaitSampler {
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Waits>,
}

impl WaitSampler {
    /// Starts sampling on a connection of its own (none: an empty record, not a failed run).
    pub fn start(options: PgConnectOptions) -> WaitSampler {
        let phase = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (phase.clone(), stop.clone());
        let handle = tokio::spawn(async move {
            let mut waits = Waits::default();
            let Ok(mut conn) = PgConnection::connect_with(&options).await else {
                return waits;
            };
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !s.load(Ordering::Acquire) {
                tick.tick().await;
                let Ok(rows) = sqlx::query(SAMPLE).fetch_all(&mut conn).await else {
                    continue;
                };
                let i = p.load(Ordering::Acquire);
                if waits.by_phase.len() <= i {
                    waits.by_phase.resize_with(i + 1, BTreeMap::new);
                    waits.samples.resize(i + 1, 0);
                }
                waits.samples[i] += 1;
                for row in rows {
                    let (Ok(who), Ok(what)) = (
                        row.try_get::<String, _>("who"),
                        row.try_get::<String, _>("what"),
                    ) else {
                        continue;
                    };
                    *waits.by_phase[i].entry((who, what)).or_insert(0) += 1;
                }
            }
            let _ = conn.close().await;
            waits
        });
        WaitSampler {
            phase,
            stop,
            handle,
        }
    }

    /// Samples from now on belong to phase `i`.
    pub fn set_phase(&self, i: usize) {
        self.phase.store(i, Ordering::Release);
    }

    /// Stops and returns what was seen.
    pub async fn stop(self) -> Waits {
        self.stop.store(true, Ordering::Release);
        self.handle.await.unwrap_or_default()
    }
}

impl Waits {
    /// The `top` most frequent activities of `who` in phase `i`, as "what share" (the share of
    /// all of `who`'s sightings in the phase), and the mean number of such sessions per sample.
    pub fn top(&self, i: usize, who: &str, top: usize) -> (String, f64) {
        let (Some(seen), Some(&samples)) = (self.by_phase.get(i), self.samples.get(i)) else {
            return ("-".into(), 0.0);
        };
        let mut mine: Vec<(&str, u64)> = seen
            .iter()
            .filter(|((w, _), _)| w == who)
            .map(|((_, what), n)| (what.as_str(), *n))
            .collect();
        let total: u64 = mine.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return ("-".into(), 0.0);
        }
        mine.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let text = mine
            .iter()
            .take(top)
            .map(|(what, n)| format!("{what} {}%", num(100.0 * *n as f64 / total as f64, 0)))
            .collect::<Vec<_>>()
            .join(", ");
        (text, total as f64 / samples.max(1) as f64)
    }

    /// Everyone but the workload and the migration (checkpointer, autovacuum, WAL writer...).
    fn others(&self, i: usize) -> Vec<String> {
        let mut who: Vec<String> = self
            .by_phase
            .get(i)
            .map(|m| m.keys().map(|(w, _)| w.clone()).collect())
            .unwrap_or_default();
        who.sort();
        who.dedup();
        who.retain(|w| w != "workload" && w != "migration");
        who
    }

    /// The table [`Waits::rows`] fills.
    pub fn table() -> Table {
        Table::new(&[
            "run",
            "phase",
            "samples",
            "workload: active sessions, doing",
            "migration: active sessions, doing",
            "others active",
        ])
    }

    /// One row of `t` per phase of `phases` (names by index) that was sampled.
    pub fn rows(&self, t: &mut Table, run: &str, phases: &[String]) {
        for (i, name) in phases.iter().enumerate() {
            let samples = self.samples.get(i).copied().unwrap_or(0);
            if samples == 0 {
                continue;
            }
            let (w, wn) = self.top(i, "workload", 3);
            let (m, mn) = self.top(i, "migration", 3);
            let others = self
                .others(i)
                .iter()
                .map(|who| {
                    let (what, n) = self.top(i, who, 1);
                    format!("{who} ({}: {what})", num(n, 2))
                })
                .collect::<Vec<_>>()
                .join("; ");
            t.row(vec![
                run.to_string(),
                name.clone(),
                samples.to_string(),
                format!("{}: {w}", num(wn, 2)),
                format!("{}: {m}", num(mn, 2)),
                if others.is_empty() {
                    "-".into()
                } else {
                    others
                },
            ]);
        }
    }

    /// The JSON of every phase's counts.
    pub fn json(&self, phases: &[String]) -> Value {
        json!(
            phases
                .iter()
                .enumerate()
                .map(|(i, name)| json!({
                    "phase": name,
                    "samples": self.samples.get(i).copied().unwrap_or(0),
                    "seen": self.by_phase.get(i).map(|m| m.iter().map(|((who, what), n)| json!({
                        "who": who, "what": what, "n": n,
                    })).collect::<Vec<_>>()).unwrap_or_default(),
                }))
                .collect::<Vec<_>>()
        )
    }
}
