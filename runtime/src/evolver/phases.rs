//! The phases after boot: walking steps forward, validation checks, abort, acknowledgements and
//! the deploy window. A second `impl Inner` block, split from `mod.rs` to keep files small.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection};
use tracing::{info, warn};

use sqlx::PgConnection;

use super::{Inner, POLL, target, try_lock};
use crate::backfill::Backfill;
use crate::coordinator::{Coordinator, wait_for_acks};
use crate::error::{Error, ErrorKind, Result};
use crate::kinds::Runner;
use crate::plan::PlannedStep;
use crate::sql;
use crate::sql::backfill::FillColumn;
use crate::step::{Phase, StepId};

/// How a walk of the background steps ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walked {
    /// Every step reached the goal (or the walk was asked to stop).
    Done,
    /// Some contract waits for the deploy window, which opens in about this long.
    WaitingForWindow(Duration),
}

impl Inner {
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
                let result = self.advance(step, next).await;
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
            self.drop_removed_indexes().await?;
        }
        Ok(Walked::Done)
    }

    /// Runs one phase of one step. Kinds with phases that are not a plain transaction of
    /// statements (batches, checks, concurrent builds) are dispatched here.
    pub(super) async fn advance(&self, step: &PlannedStep, phase: Phase) -> Result<()> {
        // Gates of the phases that change what old builds see, whatever the kind.
        if matches!(phase, Phase::Retire | Phase::Contract) {
            self.check_window(step, phase).await?;
        }
        if phase == Phase::Contract && step.kind.phases().contains(&Phase::Retire) {
            // Nothing that still writes the retired shape may be running when it goes.
            self.settle(step, Phase::Retire).await?;
        }
        match step.room().runner(phase) {
            Runner::Backfill => {
                let pass = self.backfill_pass(step).await?;
                let fills: Vec<FillColumn> = pass.iter().filter_map(PlannedStep::fill).collect();
                let finished = Backfill {
                    pool: &self.evolver.pool,
                    store: &self.store,
                    model: &step.model,
                    fills: &fills,
                    options: &self.evolver.backfill,
                    ddl: &self.evolver.ddl,
                    progress: &self.progress,
                    stop: &self.stop,
                    lease: &self.lease,
                    instance: &self.instance,
                }
                .run()
                .await?;
                if !finished {
                    if !self.stop.load(std::sync::atomic::Ordering::Acquire) {
                        // Stopped because another instance aborted a step of the pass.
                        self.finish_interrupted_aborts().await?;
                    }
                    return Ok(());
                }
                for member in &pass {
                    self.run_phase(member, Phase::Backfill, false).await?;
                }
                Ok(())
            }
            Runner::ConcurrentBuild => {
                let built = crate::concurrent::Build {
                    pool: &self.evolver.pool,
                    options: &self.evolver.ddl,
                    step,
                    progress: &self.progress,
                    stop: &self.stop,
                    carried: None,
                    phase,
                }
                .run()
                .await?;
                if built == crate::concurrent::Built::Stopped {
                    return Ok(());
                }
                self.run_phase(step, phase, false).await
            }
            Runner::ValidateConstraint => {
                crate::constraints::Validate {
                    pool: &self.evolver.pool,
                    executor: &self.executor,
                    store: &self.store,
                    instance: &self.instance,
                    step,
                }
                .run()
                .await?;
                self.run_phase(step, Phase::Validate, false).await
            }
            Runner::CarryThenValidate => {
                // After the backfill, before switch: every object of the old column over the
                // new one, valid before reads move there.
                let column = step.kind.column().ok_or_else(|| not_a_column(step))?;
                let carry = self.read_carry(step, column).await?;
                if !self
                    .carry_before_switch(step, Phase::Validate, &carry)
                    .await?
                {
                    return Ok(());
                }
                self.validate(step).await
            }
            Runner::ValidateData => self.validate(step).await,
            Runner::ContractCarrying => {
                let column = step.kind.column().ok_or_else(|| not_a_column(step))?;
                self.contract_rename(step, column).await
            }
            Runner::Statements => self.run_phase(step, phase, false).await,
        }
    }

    /// The steps whose backfill runs in one pass with `step`'s: every step of the same table
    /// whose next phase is the backfill, unless an expression reads a column of another (see
    /// `sql::backfill::pass`). One pass writes each row once instead of once per column.
    async fn backfill_pass(&self, step: &PlannedStep) -> Result<Vec<PlannedStep>> {
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

    /// Validate: the phase's statements (VALIDATE CONSTRAINT: writes go on), then the step's
    /// data checks, each a count that must be zero.
    pub(super) async fn validate(&self, step: &PlannedStep) -> Result<()> {
        let checks = step.room().verifications(&step.model);
        let verification = |message: String| -> Error {
            ErrorKind::Verification {
                step: step.id.to_string(),
                phase: Phase::Validate.to_string(),
                table: step.model.qualified_name(),
                message,
            }
            .into()
        };
        let statements = step.statements(Phase::Validate);
        match self
            .executor
            .run(target(step, Phase::Validate), statements, &[], true)
            .await
        {
            Ok(()) => {}
            Err(e) if is_check_violation(&e) => {
                for check in &checks {
                    let count = self.count(&check.sql).await?;
                    if count != 0 {
                        return Err(verification(format!("{count} {}", check.message)));
                    }
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        // A validated `CHECK (col IS NOT NULL)` already proves there is no NULL: only the
        // checks it does not cover scan the table again.
        for check in checks.iter().filter(|c| !c.proven_by_not_null_check) {
            let count = self.count(&check.sql).await?;
            if count != 0 {
                return Err(verification(format!("{count} {}", check.message)));
            }
        }
        self.run_phase(step, Phase::Validate, false).await
    }

    /// A count that may scan a large table (no statement_timeout; ACCESS SHARE only).
    pub(super) async fn count(&self, sql: &str) -> Result<i64> {
        let mut conn = self.evolver.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(sql::watch_client(true)))
            .execute(&mut *tx)
            .await?;
        let count = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(count)
    }

    /// The planned step with this id, among this evolution's models.
    pub(super) fn step(&self, id: &StepId) -> Result<PlannedStep> {
        self.evolver
            .planned()
            .iter()
            .flat_map(|p| &p.steps)
            .find(|s| &s.id == id)
            .cloned()
            .ok_or_else(|| {
                ErrorKind::UnknownStep {
                    step: id.to_string(),
                }
                .into()
            })
    }

    /// Takes the leader lock, waiting (polling, never queued in PostgreSQL) while another
    /// instance holds it.
    pub(super) async fn lead(&self) -> Result<PgConnection> {
        let mut lock = self.leader_connection().await?;
        while !try_lock(&mut lock, self.lock_key()).await? {
            tokio::time::sleep(POLL).await;
        }
        Ok(lock)
    }

    /// Advances one step through its remaining phases up to `goal`, which needs it validated
    /// first when `goal` is past validation.
    pub(super) async fn advance_to(&self, step: &PlannedStep, goal: Phase) -> Result<()> {
        loop {
            let mut conn = self.evolver.pool.acquire().await?;
            let done = self.recorded_phase(&mut conn, step).await?;
            drop(conn);
            let Some(next) = step.kind.next_phase(done).filter(|p| *p <= goal) else {
                return Ok(());
            };
            if next > Phase::Validate
                && done < Phase::Validate
                && step.kind.phases().contains(&Phase::Validate)
            {
                return Err(ErrorKind::NotReady {
                    step: step.id.to_string(),
                    table: step.model.qualified_name(),
                    phase: done.to_string(),
                    message: format!(
                        "{next} needs a validated step; boot and wait() to let the backfill and validation finish"
                    ),
                }
                .into());
            }
            self.advance(step, next).await?;
        }
    }

    /// The abort of one step, under the leader lock: first every instance stops using the new
    /// shape (the phase is recorded, accessors follow it), then the DDL drops it.
    pub(super) async fn abort(&self, step: &PlannedStep) -> Result<()> {
        let mut conn = self.evolver.pool.acquire().await?;
        let done = self.recorded_phase(&mut conn, step).await?;
        drop(conn);
        if done == Phase::Aborted {
            return Ok(());
        }
        if done >= Phase::Retire || (step.abort.is_empty() && !step.room().aborts_without_ddl()) {
            return Err(not_abortable(step, done));
        }
        self.prepare_abort(step, done).await?;
        let record = [
            self.store.steps().record_phase_sql(step, Phase::Aborted),
            self.store.journal().insert_sql(
                Some(step.id.as_str()),
                "abort started",
                &format!("from phase {done}: {}", step.describe()),
                &self.instance,
            ),
            Coordinator::notify_sql(&self.store.schema, &step.id, Phase::Aborted),
        ];
        self.executor
            .run(target(step, Phase::Aborted), &[], &record, false)
            .await?;
        self.set_phase(&step.id, Phase::Aborted);
        crate::failpoint::pause_at("abort-recorded").await;
        // Only steps that change what accessors read or write need every instance to follow.
        if step.room().changes_accessors() {
            self.settle(step, Phase::Aborted).await?;
        }
        self.finish_abort(step).await?;
        info!(step = %step.id, table = %step.model.qualified_name(), "aborted from phase {done}");
        Ok(())
    }

    /// The ids of `steps` not recorded as aborted.
    async fn not_aborted(&self, steps: &[PlannedStep]) -> Result<Vec<String>> {
        let mut conn = self.evolver.pool.acquire().await?;
        let recorded = self.store.steps().rows(&mut conn).await?;
        Ok(steps
            .iter()
            .filter(|s| recorded.get(&s.id).map(|r| r.phase) != Some(Phase::Aborted))
            .map(|s| s.id.to_string())
            .collect())
    }

    /// Aborts recorded whose DDL did not run (the process that aborted died in between): as
    /// [`Inner::abort`] would have, wait until every live instance follows the abort, then drop
    /// what it drops. Run by the leader before its walk.
    async fn finish_interrupted_aborts(&self) -> Result<()> {
        let (resolved, _) = self.resolve_all().await?;
        for r in resolved.iter().filter(|r| r.abort_leftovers) {
            info!(step = %r.step.id, "finishing an abort that was interrupted after it was recorded");
            self.prepare_abort(&r.step, Phase::Aborted).await?;
            if r.step.room().changes_accessors() {
                self.settle(&r.step, Phase::Aborted).await?;
            }
            self.finish_abort(&r.step).await?;
        }
        Ok(())
    }

    /// The abort of a step while another instance leads the background work (so this one
    /// cannot take the leader lock without waiting for that whole walk): records the abort,
    /// waits until every live instance follows it, then until the leader, which checks for
    /// aborts before every batch and phase, has run its DDL (see `finish_interrupted_aborts`).
    pub(super) async fn request_abort(&self, step: &PlannedStep) -> Result<()> {
        let mut conn = self.evolver.pool.acquire().await?;
        let done = self.recorded_phase(&mut conn, step).await?;
        if done == Phase::Aborted {
            return Ok(());
        }
        if done >= Phase::Retire || (step.abort.is_empty() && !step.room().aborts_without_ddl()) {
            return Err(not_abortable(step, done));
        }
        self.prepare_abort(step, done).await?;
        let mut tx = conn.begin().await?;
        // Only before retire, decided in the same statement that records it: the leader may be
        // moving the step on meanwhile.
        let recorded = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET phase = 'aborted', updated_at = now() WHERE id = $1 \
             AND phase NOT IN ('retire', 'contract', 'aborted')",
            self.store.table("steps")
        )))
        .bind(step.id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if recorded == 0 {
            drop(tx);
            let done = self.recorded_phase(&mut conn, step).await?;
            return if done == Phase::Aborted {
                Ok(())
            } else {
                Err(not_abortable(step, done))
            };
        }
        let started: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "{} RETURNING id",
            self.store.journal().insert_sql(
                Some(step.id.as_str()),
                "abort started",
                &format!(
                    "from phase {done}, while another instance leads: {}",
                    step.describe()
                ),
                &self.instance,
            )
        )))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(Coordinator::notify_sql(
            &self.store.schema,
            &step.id,
            Phase::Aborted,
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        drop(conn);
        self.set_phase(&step.id, Phase::Aborted);
        info!(step = %step.id, "abort recorded; the leader drops what it added before its next batch");
        let deadline = tokio::time::Instant::now() + self.evolver.ack_deadline;
        loop {
            let mut conn = self.evolver.pool.acquire().await?;
            let finished: bool = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT EXISTS (SELECT FROM {} WHERE step_id = $1 AND event = 'abort done' AND id > $2)",
                self.store.table("journal")
            )))
            .bind(step.id.as_str())
            .bind(started)
            .fetch_one(&mut *conn)
            .await?;
            if finished {
                return Ok(());
            }
            drop(conn);
            // The leader may have gone away meanwhile: then this instance finishes it.
            let mut lock = self.leader_connection().await?;
            if try_lock(&mut lock, self.lock_key()).await? {
                self.finish_interrupted_aborts().await?;
                let _ = lock.close().await;
                return Ok(());
            }
            drop(lock);
            if tokio::time::Instant::now() >= deadline {
                return Err(ErrorKind::NotReady {
                    step: step.id.to_string(),
                    table: step.model.qualified_name(),
                    phase: Phase::Aborted.to_string(),
                    message: "the abort is recorded and every instance follows it, but the leader \
                              has not dropped what the step added yet; it does so before its next \
                              batch or phase, or the next leader does"
                        .into(),
                }
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The DDL of an abort, once no instance uses the new shape. Idempotent: also run at boot
    /// when an abort was interrupted.
    pub(super) async fn finish_abort(&self, step: &PlannedStep) -> Result<()> {
        self.abort_carried(step).await?;
        let record = [self.store.journal().insert_sql(
            Some(step.id.as_str()),
            "abort done",
            &step.describe(),
            &self.instance,
        )];
        if crate::concurrent::has_concurrent(&step.abort) {
            // DROP INDEX CONCURRENTLY cannot run in the transaction.
            return crate::concurrent::run_abort(
                &self.evolver.pool,
                &self.executor,
                step,
                &step.abort,
                &record,
            )
            .await;
        }
        self.executor
            .run(target(step, Phase::Aborted), &step.abort, &record, false)
            .await
    }

    /// Drops the indexes removed from the structs (see `concurrent::removed_indexes`), inside
    /// the deploy window like every contract.
    pub(super) async fn drop_removed_indexes(&self) -> Result<()> {
        let removed = crate::concurrent::removed_indexes(
            &self.evolver.pool,
            &self.store,
            self.evolver.planned(),
        )
        .await?;
        for (declared_by, step) in removed {
            self.check_window(&step, Phase::Contract).await?;
            crate::concurrent::drop_removed_index(
                &self.evolver.pool,
                &self.executor,
                &self.store,
                &self.instance,
                &declared_by,
                &step,
            )
            .await?;
        }
        Ok(())
    }

    /// After a phase that retires a shape (retire, abort): waits until no accessor call in this
    /// process still runs SQL from before it, and every other live instance acknowledged it.
    pub(super) async fn settle(&self, step: &PlannedStep, phase: Phase) -> Result<()> {
        self.registry.drained(self.registry.generation()).await;
        let outcome = wait_for_acks(
            &self.evolver.pool,
            &self.store.schema,
            &step.id,
            phase,
            self.evolver.heartbeat_timeout,
            self.evolver.ack_deadline,
        )
        .await?;
        for gone in &outcome.expired {
            warn!(instance = %gone.id, step = %step.id, "not waiting for an instance whose heartbeat expired");
        }
        let ids = |acks: &[crate::coordinator::InstanceAck]| {
            acks.iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut conn = self.evolver.pool.acquire().await?;
        sqlx::query(AssertSqlSafe(self.store.journal().insert_sql(
            Some(step.id.as_str()),
            &format!("{phase} acknowledged"),
            &format!(
                "acknowledged by [{}]; not waited for, heartbeat expired: [{}]; waited {:?}",
                ids(&outcome.acknowledged),
                ids(&outcome.expired),
                outcome.waited
            ),
            &self.instance,
        )))
        .execute(&mut *conn)
        .await?;
        info!(step = %step.id, %phase, acknowledged = outcome.acknowledged.len(), "every live instance acknowledged {phase}");
        Ok(())
    }

    /// Destructive phases run only inside the deploy window, or under a recorded override.
    pub(super) async fn check_window(&self, step: &PlannedStep, phase: Phase) -> Result<()> {
        let reason = self
            .window_override
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match (self.evolver.window.check_now(&*self.evolver.clock), reason) {
            (Ok(()), _) => Ok(()),
            (Err(closed), Some(reason)) => {
                let mut conn = self.evolver.pool.acquire().await?;
                sqlx::query(AssertSqlSafe(self.store.journal().insert_sql(
                    Some(step.id.as_str()),
                    "deploy window overridden",
                    &format!("{phase} at {} ({}): {reason}", closed.now, closed.window),
                    &self.instance,
                )))
                .execute(&mut *conn)
                .await?;
                warn!(step = %step.id, %phase, %reason, "deploy window overridden");
                Ok(())
            }
            (Err(closed), None) => Err(ErrorKind::OutsideDeployWindow {
                step: step.id.to_string(),
                table: step.model.qualified_name(),
                phase: phase.to_string(),
                closed,
            }
            .into()),
        }
    }
}

/// A runner for a kind with a column that found none: a kind file wired wrong.
fn not_a_column(step: &PlannedStep) -> Error {
    ErrorKind::NotReady {
        step: step.id.to_string(),
        table: step.model.qualified_name(),
        phase: "plan".into(),
        message: format!(
            "step kind {} has no column for its phase runner (a bug in its kind file)",
            step.kind.name()
        ),
    }
    .into()
}

impl Inner {
    /// What the kind needs before its abort (see `Kind::abort_preparation`): a count that must be
    /// zero, then a helper constraint added and validated. A refusal leaves the table as it was.
    async fn prepare_abort(&self, step: &PlannedStep, done: Phase) -> Result<()> {
        let Some(prep) = step.room().abort_preparation(&step.model, &step.id) else {
            return Ok(());
        };
        let refuse = |rows: i64| -> Error {
            ErrorKind::NotReady {
                step: step.id.to_string(),
                table: step.model.qualified_name(),
                phase: done.to_string(),
                message: format!("cannot abort: {rows} {}", prep.refusal),
            }
            .into()
        };
        let count = |sql: String| async move {
            let mut conn = self.evolver.pool.acquire().await?;
            let rows: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut *conn)
                .await?;
            Ok::<i64, Error>(rows)
        };
        let mut conn = self.evolver.pool.acquire().await?;
        let needed: bool = sqlx::query_scalar(AssertSqlSafe(prep.needed.clone()))
            .fetch_one(&mut *conn)
            .await?;
        drop(conn);
        if !needed {
            return Ok(());
        }
        let rows = count(prep.count.clone()).await?;
        if rows > 0 {
            return Err(refuse(rows));
        }
        let target = target(step, Phase::Aborted);
        self.executor
            .run(target, std::slice::from_ref(&prep.add), &[], false)
            .await?;
        if let Err(e) = self
            .executor
            .run(target, std::slice::from_ref(&prep.validate), &[], true)
            .await
        {
            self.executor
                .run(target, std::slice::from_ref(&prep.undo), &[], false)
                .await?;
            if is_check_violation(&e) {
                return Err(refuse(count(prep.count.clone()).await?));
            }
            return Err(e);
        }
        Ok(())
    }
}

fn not_abortable(step: &PlannedStep, done: Phase) -> Error {
    ErrorKind::NotReady {
        step: step.id.to_string(),
        table: step.model.qualified_name(),
        phase: done.to_string(),
        message: "only a step that has not started its contract can be aborted".into(),
    }
    .into()
}

fn is_check_violation(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Statement { source: sqlx::Error::Database(db), .. } if db.code().as_deref() == Some("23514"))
}
