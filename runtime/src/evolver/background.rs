//! The background work: under the leader lock, walk every step with work after boot; without
//! it, follow the leader and take over from its checkpoint when it goes away.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tracing::{info, warn};

use super::{Engine, try_lock};
use crate::error::{Error, ErrorKind, Result};
use crate::plan::PlannedStep;
use crate::sql;
use crate::sql::backfill::FillColumn;
use crate::state::Event;
use crate::step::{Phase, StepId};
/// The wait after the first transient error in a row; it doubles with each next one.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two tries after transient errors: short enough that the work goes
/// on soon after an outage ends, long enough that a server coming back is not hammered.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How long closing a session (or taking one for the journal) may take after a lost connection.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What one poll of a follower found.
enum Followed {
    /// Every background step reached the goal.
    Finished,
    /// The leader lock was free: this instance leads now, on this session.
    TookLock(PgConnection),
    /// Another instance leads.
    LeaderBusy,
}

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
        // Transient errors in a row without progress: each doubles the wait before the next try
        // (see `interrupted`).
        let mut interruptions = 0u32;
        loop {
            if let Some(mut conn) = lock.take() {
                // Which instance leads, for `pgevolve status` (best effort).
                let _ = crate::state::Instances::new(&self.store.schema)
                    .record_leader(&mut conn, &self.instance)
                    .await;
                self.lease.hold(conn).await;
                let before = self.progress_mark();
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
                if let Err(e) = &result
                    && e.is_transient()
                {
                    // A lost connection: give the lock up (closing its session, if it is still
                    // there, releases it) and follow; whoever takes the lock next, this instance
                    // included, goes on from the checkpoint.
                    if let Some(conn) = conn {
                        let _ = tokio::time::timeout(CLOSE_WAIT, conn.close()).await;
                    }
                    // Work done since the last interruption: the database is there, start the
                    // backoff over (an outage makes no progress, and the waits grow).
                    if self.progress_mark() != before {
                        interruptions = 0;
                    }
                    interruptions += 1;
                    self.interrupted(e, interruptions).await;
                    continue;
                }
                if let Ok(Walked::WaitingForWindow(wait)) = result {
                    // Waiting for the deploy window holds nothing: another build's background
                    // work may run meanwhile, and this instance takes the lock back after.
                    if let Some(conn) = conn {
                        let _ = conn.close().await;
                    }
                    interruptions = 0;
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
            match self.follow(goal, &mut candidate).await {
                Ok(Followed::Finished) => return Ok(()),
                Ok(Followed::TookLock(conn)) => {
                    info!(
                        "took over the leader lock; resuming background work from the checkpoint"
                    );
                    lock = Some(conn);
                }
                Ok(Followed::LeaderBusy) => tokio::time::sleep(Duration::from_secs(1)).await,
                Err(e) if e.is_transient() => {
                    candidate = None;
                    interruptions += 1;
                    self.interrupted(&e, interruptions).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One poll of a follower: whether the background work is finished (by whichever instance
    /// led it), else whether the leader lock was free (taken, on the returned session).
    async fn follow(&self, goal: Phase, candidate: &mut Option<PgConnection>) -> Result<Followed> {
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
            return Ok(Followed::Finished);
        }
        let mut poller = match candidate.take() {
            Some(c) => c,
            None => self.leader_connection().await?,
        };
        if try_lock(&mut poller, self.lock_key()).await? {
            return Ok(Followed::TookLock(poller));
        }
        *candidate = Some(poller);
        Ok(Followed::LeaderBusy)
    }

    /// Every step's phase and rows as this instance sees them: changed when the walk got
    /// anything done.
    fn progress_mark(&self) -> Vec<(Phase, i64)> {
        self.progress
            .snapshot()
            .iter()
            .map(|p| (p.phase, p.rows_done))
            .collect()
    }

    /// After the `n`th transient error without progress in between: logs and journals it (best effort: the
    /// database may be what is gone), then waits 250 ms, 500 ms, 1 s ... up to 10 s, jittered so that
    /// instances that lost the server together do not come back in step.
    async fn interrupted(&self, error: &Error, n: u32) {
        let wait = RETRY_FIRST
            .saturating_mul(1 << (n - 1).min(6))
            .min(RETRY_MAX)
            .mul_f64(rand::random_range(0.5..=1.0));
        warn!(error = %error, attempt = n, retry_in_ms = wait.as_millis() as u64,
            "background work interrupted by a transient error; trying again from the checkpoint");
        let sql = self.store.journal().insert_sql(
            None,
            &Event::BackgroundInterrupted {
                error: &error.to_string(),
                retry_in_ms: wait.as_millis() as u64,
            },
            &self.instance,
        );
        if let Ok(Ok(mut conn)) =
            tokio::time::timeout(CLOSE_WAIT, self.evolver.pool.acquire()).await
        {
            let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await;
        }
        tokio::time::sleep(wait).await;
    }

    /// Moves every background step forward, phase by phase, up to `goal`. A step whose
    /// contract waits for the deploy window (`auto_contract`) is left for later and the others go
    /// on; the walk then says how long until the window opens, so the caller can wait without
    /// holding the leader lock.
    ///
    /// A step an operator paused (`pgevolve pause STEP`) is passed over, with the steps after it
    /// on the same table (they may build on it); steps on other tables go on, and the walk comes
    /// back to the paused ones every [`crate::lease::PAUSED_POLL`], holding the lease, until the
    /// pause is lifted. A pause of every step passes over them all.
    pub(super) async fn walk(&self, goal: Phase) -> Result<Walked> {
        self.finish_interrupted_aborts().await?;
        let mut window: Option<Duration> = None;
        let steps = self.background_steps();
        // The steps an abort by another instance would concern: those not aborted yet.
        let mut watched = self.not_aborted(&steps).await?;
        // Steps whose pause was journaled (and not its lifting yet).
        let mut paused: HashSet<StepId> = HashSet::new();
        // Contracts found waiting for the deploy window: not tried again in this walk.
        let mut closed_window: HashSet<StepId> = HashSet::new();
        loop {
            // Tables with a paused step this round: their later steps wait too.
            let mut held: HashSet<(&str, &str)> = HashSet::new();
            'steps: for step in steps.iter() {
                let table = (step.model.schema, step.model.table);
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
                    if held.contains(&table) || closed_window.contains(&step.id) {
                        continue 'steps;
                    }
                    let ids: Vec<&str> = watched.iter().map(String::as_str).collect();
                    let checked = self.lease.check(&ids, &[step.id.as_str()]).await?;
                    if checked.aborted {
                        // Another instance aborted a step: drop what it added before going on.
                        self.finish_interrupted_aborts().await?;
                        watched = self.not_aborted(&steps).await?;
                        continue;
                    }
                    // An operator's pause: journaled once when it starts and once when it is
                    // lifted; a backfill under way stops before its next batch (keeping its
                    // checkpoint) and comes back here.
                    if checked.paused != paused.contains(&step.id) {
                        self.journal_pause(step, next, checked.paused).await?;
                        if checked.paused {
                            paused.insert(step.id.clone());
                        } else {
                            paused.remove(&step.id);
                        }
                    }
                    if checked.paused {
                        held.insert(table);
                        continue 'steps;
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
                        closed_window.insert(step.id.clone());
                        continue 'steps;
                    }
                    result?;
                }
            }
            if held.is_empty() {
                break;
            }
            tokio::time::sleep(crate::lease::PAUSED_POLL).await;
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

    /// Journals that the walk stopped at an operator's pause before `next` of `step`, or went
    /// on once it was lifted.
    async fn journal_pause(&self, step: &PlannedStep, next: Phase, paused: bool) -> Result<()> {
        let before = format!("phase {next}");
        let event = if paused {
            info!(step = %step.id, phase = %next, "background work paused by an operator");
            Event::Paused { before: &before }
        } else {
            info!(step = %step.id, phase = %next, "background work resumed");
            Event::Resumed { before: &before }
        };
        let sql = self
            .store
            .journal()
            .insert_sql(Some(step.id.as_str()), &event, &self.instance);
        let mut conn = self.evolver.pool.acquire().await?;
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
        Ok(())
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
