//! What every walk in batches checks before its next batch: the SQL backfill pass
//! (`backfill.rs`), the Rust-computed walk (`computed.rs`), a widened key's referencing fill
//! (`evolver/widen_key.rs`) and the paced count of a validate phase (`paced_count.rs`). In
//! order: the engine's stop flag; the database's health (`HealthFollower`: a breach waits,
//! with the lease still checked so an abort or a lost leadership ends the wait); the lease
//! (lost: [`ErrorKind::LeadershipLost`](crate::error::ErrorKind::LeadershipLost)), an abort
//! by another instance and an operator's pause, in one round trip. One copy, so a walk cannot
//! forget one of them.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::PgConnection;
use tokio::sync::MutexGuard;
use tracing::info;

use crate::error::Result;
use crate::health::Verdict;
use crate::health_follower::HealthFollower;
use crate::lease::Lease;

/// Why a walk stops before its next batch. Whatever it did so far stays committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The engine's stop flag: this evolution is stopping, or its own abort waits for the lock.
    Requested,
    /// Another instance aborted a step of the walk.
    Aborted,
    /// An operator paused a step of the walk, or every step (`pgevolve pause`).
    Paused,
}

/// What the gate says about the next batch (a stop is logged with its reason).
pub(crate) enum Next<'a> {
    /// Run it. The verdict's slowdown stretches the pause after it. The session is the
    /// lease's (`None` while this instance does not lead), held until dropped: a batch that
    /// writes runs on it, so it cannot outlive the leadership (`lease.rs`).
    Run {
        verdict: Verdict,
        session: MutexGuard<'a, Option<PgConnection>>,
    },
    /// Do not; the health wait, if any, is over (journaled, the gauge cleared).
    Stop(Stop),
}

/// The checks of one walk, for the steps its `HealthFollower` follows.
pub(crate) struct BatchGate<'a> {
    stop: &'a AtomicBool,
    lease: &'a Lease,
    health: HealthFollower<'a>,
}

impl<'a> BatchGate<'a> {
    pub(crate) fn new(
        stop: &'a AtomicBool,
        lease: &'a Lease,
        health: HealthFollower<'a>,
    ) -> BatchGate<'a> {
        BatchGate {
            stop,
            lease,
            health,
        }
    }

    /// Before the first batch: forgets a health wait left by an instance that died while
    /// waiting.
    pub(crate) async fn start(&mut self) -> Result<()> {
        self.health.end().await
    }

    /// Waits while the database's health asks for it, then says whether to run the next
    /// batch. `done`: rows done so far, for the log and the journal.
    pub(crate) async fn before_batch(&mut self, done: i64) -> Result<Next<'a>> {
        let lease: &'a Lease = self.lease;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return self.stopped(Stop::Requested, done).await;
            }
            let (verdict, wait) = self.health.before_batch(done).await?;
            let steps = self.health.steps();
            if wait {
                if lease.check(steps, &[]).await?.aborted {
                    return self.stopped(Stop::Aborted, done).await;
                }
                tokio::time::sleep(self.health.interval()).await;
                continue;
            }
            let mut session = lease.session().await;
            let checked = lease.check_session(&mut session, steps, steps).await?;
            if checked.aborted || checked.paused {
                drop(session);
                let why = if checked.aborted {
                    Stop::Aborted
                } else {
                    Stop::Paused
                };
                return self.stopped(why, done).await;
            }
            return Ok(Next::Run { verdict, session });
        }
    }

    async fn stopped(&mut self, why: Stop, done: i64) -> Result<Next<'a>> {
        let steps = self.health.steps().join(" ");
        match why {
            Stop::Requested => {
                info!(%steps, rows = done, "stopped on request before the next batch")
            }
            Stop::Aborted => {
                info!(%steps, rows = done, "a step was aborted by another instance; stopped before the next batch")
            }
            Stop::Paused => {
                info!(%steps, rows = done, "paused by an operator before the next batch")
            }
        }
        self.health.end().await?;
        Ok(Next::Stop(why))
    }
}
