//! The background work: under the leader lock, walk every step with work after boot; without
//! it, follow the leader and take over from its checkpoint when it goes away.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tracing::{info, warn};

use super::{Engine, try_lock};
use crate::error::{Error, ErrorKind, Result};
use crate::plan::PlannedStep;
use crate::sql;
use crate::sql::backfill::FillColumn;
use crate::state::Event;
use crate::step::Phase;
/// How a walk of the background steps ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walked {
    /// Every step reached the goal (or the walk was asked to stop).
    Done,
    /// Some contract waits for the deploy window, which opens in about this long.
    WaitingForWindow(Duration),
}

impl Engine {
    /// The background work: with the leader lock, walk every filled step to validated (and
    /// contracted with `auto_contract`). Without it, poll: the leader may finish, or go away and
    /// leave the lock (and the work, from its checkpoint) to this instance.
    pub(super) async fn drive(&self, mut lock: Option<PgConnection>) -> Result<()> {
        let goal = if self.evolver.auto_contract {
            Phase::Contract
        } else {
            Phase::Validate
        };
        // A follower polls on one connection of its own, opened once.
        let mut candidate: Option<PgConnection> = None;
        loop {
            if let Some(conn) = lock.take() {
                self.lease.hold(conn).await;
                let result = self.walk(goal).await;
                if let Err(e) = &result
                    && let ErrorKind::LeadershipLost { .. } = e.kind()
                {
                    // Another instance leads now: follow it, as after a boot without the lock.
                    warn!(error = %e, "leader lock lost; following the instance that holds it");
                    self.journal_leadership_lost(e).await;
                    continue;
                }
                let conn = self.lease.release().await;
                if let Ok(Walked::WaitingForWindow(wait)) = result {
                    // Waiting for the deploy window holds nothing: another build's background
                    // work may run meanwhile, and this instance takes the lock back after.
                    if let Some(conn) = conn {
                        let _ = conn.close().await;
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
                if result.is_ok() && !self.stop.load(std::sync::atomic::Ordering::Acquire) {
                    // Still under the leader lock: the next boot may take the fast path.
                    self.record_verified_if_done().await;
                }
                // Closing the session releases the leader lock for the next boot or contract.
                if let Some(conn) = conn {
                    let _ = conn.close().await;
                }
                return result.map(|_| ());
            }
            if self.stop.load(std::sync::atomic::Ordering::Acquire) {
                // Stopped (an abort of this instance's): nothing to follow any more.
                return Ok(());
            }
            let mut conn = self.evolver.pool.acquire().await?;
            let recorded = self.store.steps().rows(&mut conn).await?;
            drop(conn);
            let mut finished = true;
            for step in self.background_steps() {
                let phase = recorded
                    .get(&step.id)
                    .map(|r| r.phase)
                    .unwrap_or(Phase::Pending);
                self.set_phase(&step.id, phase);
                finished &= phase >= goal.min(step.kind.last_phase());
            }
            if finished {
                return Ok(());
            }
            let mut poller = match candidate.take() {
                Some(c) => c,
                None => self.leader_connection().await?,
            };
            if try_lock(&mut poller, self.lock_key()).await? {
                info!("took over the leader lock; resuming background work from the checkpoint");
                lock = Some(poller);
                continue;
            }
            candidate = Some(poller);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Moves every background step forward, phase by phase, up to `goal`. A step whose
    /// contract waits for the deploy window (`auto_contract`) is left for later and the others go
    /// on; the walk then says how long until the window opens, so the caller can wait without
    /// holding the leader lock.
    pub(super) async fn walk(&self, goal: Phase) -> Result<Walked> {
        self.finish_interrupted_aborts().await?;
        let mut window: Option<Duration> = None;
        let steps = self.background_steps();
        // The steps an abort by another instance would concern: those not aborted yet.
        let mut watched = self.not_aborted(&steps).await?;
        'steps: for step in steps.iter() {
            loop {
                if self.stop.load(std::sync::atomic::Ordering::Acquire) {
                    return Ok(Walked::Done);
                }
                let mut conn = self.evolver.pool.acquire().await?;
                let done = self.recorded_phase(&mut conn, step).await?;
                drop(conn);
                self.set_phase(&step.id, done);
                let Some(next) = step.kind.next_phase(done).filter(|p| *p <= goal) else {
                    break;
                };
                let ids: Vec<&str> = watched.iter().map(String::as_str).collect();
                if self.lease.check(&ids).await? {
                    // Another instance aborted a step: drop what it added before going on.
                    self.finish_interrupted_aborts().await?;
                    watched = self.not_aborted(&steps).await?;
                    continue;
                }
                // The background walk never overrides the window.
                let result = self.advance(step, next, None).await;
                if let Err(e) = &result
                    && let ErrorKind::OutsideDeployWindow { closed, .. } = e.kind()
                {
                    info!(step = %step.id, "contract waits for the deploy window: it {}", closed.opens);
                    let wait = closed
                        .wait
                        .clamp(Duration::from_secs(1), Duration::from_secs(60));
                    window = Some(window.map_or(wait, |w| w.min(wait)));
                    continue 'steps;
                }
                result?;
            }
        }
        // Steps another instance aborted while this walk ran.
        self.finish_interrupted_aborts().await?;
        if let Some(wait) = window {
            return Ok(Walked::WaitingForWindow(wait));
        }
        if goal >= Phase::Contract && !self.stop.load(std::sync::atomic::Ordering::Acquire) {
            self.drop_removed_indexes(None).await?;
        }
        Ok(Walked::Done)
    }

    /// Steps with work after boot, in plan order.
    pub(super) fn background_steps(&self) -> Vec<PlannedStep> {
        self.evolver
            .planned()
            .iter()
            .flat_map(|p| &p.steps)
            .filter(|s| s.kind.has_background_work())
            .cloned()
            .collect()
    }

    /// The steps whose backfill runs in one pass with `step`'s: every step of the same table
    /// whose next phase is the backfill, unless an expression reads a column of another (see
    /// `sql::backfill::pass`). One pass writes each row once instead of once per column.
    pub(super) async fn backfill_pass(&self, step: &PlannedStep) -> Result<Vec<PlannedStep>> {
        let mut conn = self.evolver.pool.acquire().await?;
        let recorded = self.store.steps().rows(&mut conn).await?;
        drop(conn);
        let phase = |s: &PlannedStep| {
            recorded
                .get(&s.id)
                .map(|r| r.phase)
                .unwrap_or(Phase::Pending)
        };
        let mut candidates = vec![step.clone()];
        candidates.extend(self.background_steps().into_iter().filter(|s| {
            s.id != step.id
                && s.model.schema == step.model.schema
                && s.model.table == step.model.table
                && s.kind.next_phase(phase(s)) == Some(Phase::Backfill)
        }));
        let fills: Vec<FillColumn> = candidates.iter().filter_map(PlannedStep::fill).collect();
        let chosen = sql::backfill::pass(&fills);
        Ok(candidates
            .into_iter()
            .filter(|s| chosen.iter().any(|f| f.step == s.id))
            .collect())
    }

    /// Journals that this instance lost the leader lock (best effort: the database may be the
    /// reason it was lost).
    pub(super) async fn journal_leadership_lost(&self, error: &Error) {
        let sql = self.store.journal().insert_sql(
            None,
            &Event::LeaderLockLost {
                error: &error.to_string(),
            },
            &self.instance,
        );
        if let Ok(mut conn) = self.evolver.pool.acquire().await {
            let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await;
        }
    }
}
