//! One phase of one step: the kind's runner, then the phase recorded with its journal event and
//! notification in the same transaction. Gates come first (`gates.rs`).

use sqlx::{AssertSqlSafe, Connection};
use tracing::info;

use super::{Engine, target};
use crate::backfill::Backfill;
use crate::batch_gate::BatchGate;
use crate::coordinator::{Coordinator, wait_for_acks};
use crate::error::{Error, ErrorKind, Result};
use crate::health_follower::HealthFollower;
use crate::kinds::Runner;
use crate::paced_count::{Counted, PacedCount};
use crate::plan::PlannedStep;
use crate::sql;
use crate::sql::backfill::FillColumn;
use crate::state::Event;
use crate::step::Phase;

impl Engine {
    /// Runs one phase of one step. Kinds with phases that are not a plain transaction of
    /// statements (batches, checks, concurrent builds) are dispatched here.
    pub(super) async fn advance(
        &self,
        step: &PlannedStep,
        phase: Phase,
        overriding: Option<&str>,
    ) -> Result<()> {
        // Gates of the phases that change what old builds see, whatever the kind.
        if matches!(phase, Phase::Retire | Phase::Contract) {
            self.check_window(step, phase, overriding).await?;
        }
        if phase == Phase::Contract && step.kind.phases().contains(&Phase::Retire) {
            // Nothing that still writes the retired shape may be running when it goes.
            self.settle(step, Phase::Retire).await?;
        }
        if phase == Phase::Contract {
            // Every acknowledgement in, the contract's transaction not begun.
            crate::failpoint::pause_at("contract").await;
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
            Runner::ComputedBackfill => match self.computed_fill(step)?.walk().await? {
                crate::computed::Walk::Stopped => self.after_stopped_walk().await,
                crate::computed::Walk::Done { .. } => {
                    self.run_phase(step, Phase::Backfill, false).await
                }
            },
            Runner::ComputedValidate => self.validate_computed(step).await,
            Runner::KeyWidening => self.widen_key(step, phase).await,
            Runner::Statements => self.run_phase(step, phase, false).await,
        }
    }

    /// The runner of a column computed in Rust (`kinds::computed_column`).
    fn computed_fill<'a>(
        &'a self,
        step: &'a PlannedStep,
    ) -> Result<crate::computed::ComputedFill<'a>> {
        let column = step.kind.column().ok_or_else(|| not_a_column(step))?;
        let compute = column.computed.ok_or_else(|| not_a_column(step))?.compute;
        Ok(crate::computed::ComputedFill {
            pool: &self.evolver.pool,
            store: &self.store,
            model: &step.model,
            step: &step.id,
            column,
            compute,
            options: &self.evolver.backfill,
            ddl: &self.evolver.ddl,
            progress: &self.progress,
            stop: &self.stop,
            lease: &self.lease,
            instance: &self.instance,
        })
    }

    async fn after_stopped_walk(&self) -> Result<()> {
        if !self.stop.load(std::sync::atomic::Ordering::Acquire) {
            // Stopped because another instance aborted the step.
            self.finish_interrupted_aborts().await?;
        }
        Ok(())
    }

    /// Waits until every live instance acknowledged the step's backfill (its build knows the
    /// step: an old build's instance never does), in slices of a few seconds so that a stop or an
    /// abort by another instance ends the wait (`false`) within them. Gives up with
    /// [`ErrorKind::NotReady`] after the acknowledgement deadline.
    async fn every_instance_knows(&self, step: &PlannedStep) -> Result<bool> {
        const SLICE: std::time::Duration = std::time::Duration::from_secs(3);
        let started = std::time::Instant::now();
        loop {
            let left = self.evolver.ack_deadline.saturating_sub(started.elapsed());
            match wait_for_acks(
                &self.evolver.pool,
                &self.store.schema,
                &step.id,
                Phase::Backfill,
                self.evolver.heartbeat_timeout,
                left.min(SLICE),
            )
            .await
            {
                Ok(_) => return Ok(true),
                Err(e) if matches!(e.kind(), ErrorKind::NotReady { .. }) && left > SLICE => {
                    if self.stop.load(std::sync::atomic::Ordering::Acquire)
                        || self.lease.check(&[step.id.as_str()], &[]).await?.aborted
                    {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Validate of a column computed in Rust: once every live instance runs a build that
    /// knows the column (old builds insert rows without a value, and no trigger can compute
    /// it), the rows still without a value are computed, the `CHECK (col IS NOT NULL) NOT
    /// VALID` added (from then on a write without a value is refused), the rows written between
    /// the two computed, and the check validated with the data checks.
    async fn validate_computed(&self, step: &PlannedStep) -> Result<()> {
        if !self.every_instance_knows(step).await? {
            return self.after_stopped_walk().await;
        }
        let fill = self.computed_fill(step)?;
        if !fill.drain().await? {
            return self.after_stopped_walk().await;
        }
        let statements = step.statements(Phase::Validate);
        self.executor
            .run(target(step, Phase::Validate), &statements[..1], &[], true)
            .await?;
        if !fill.drain().await? {
            return self.after_stopped_walk().await;
        }
        self.validate(step).await
    }

    /// Advances one step through its remaining phases up to `goal`, which needs it validated
    /// first when `goal` is past validation.
    pub(super) async fn advance_to(
        &self,
        step: &PlannedStep,
        goal: Phase,
        overriding: Option<&str>,
    ) -> Result<()> {
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
            self.advance(step, next, overriding).await?;
            // A runner that returned without recording its phase stopped before its work was
            // done: an operator's pause, a stop, or an abort by another instance (which records
            // its own phase). Calling it again at once would only spin.
            let mut conn = self.evolver.pool.acquire().await?;
            let after = self.recorded_phase(&mut conn, step).await?;
            drop(conn);
            if after == done {
                return Err(ErrorKind::NotReady {
                    step: step.id.to_string(),
                    table: step.model.qualified_name(),
                    phase: done.to_string(),
                    message: format!(
                        "{next} stopped before it finished: the step is paused (`pgevolve resume` lifts it) or this \
                         evolution was stopped; try again once it goes on"
                    ),
                }
                .into());
            }
        }
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
            let Some(count) = self.verification_count(step, check).await? else {
                return self.after_stopped_walk().await;
            };
            if count != 0 {
                return Err(verification(format!("{count} {}", check.message)));
            }
        }
        self.run_phase(step, Phase::Validate, false).await
    }

    /// A data check of the validate phase: in paced key ranges when it can be (see
    /// `paced_count.rs`), else in one scan (`count`). `None`: the paced count stopped before
    /// its end (a stop, an abort of the step by another instance, an operator's pause), with
    /// no verdict; the caller returns without recording the phase, as a stopped backfill does.
    pub(super) async fn verification_count(
        &self,
        step: &PlannedStep,
        check: &crate::kinds::Verification,
    ) -> Result<Option<i64>> {
        let options = &self.evolver.backfill;
        let Some(condition) = check
            .condition
            .as_deref()
            .filter(|_| PacedCount::applies(&step.model, options))
        else {
            return self.count(&check.sql).await.map(Some);
        };
        let table = step.model.qualified_name();
        let counted = PacedCount {
            pool: &self.evolver.pool,
            model: &step.model,
            condition,
            options,
            gate: self.batch_gate(vec![step.id.as_str()], table.clone()),
        }
        .run()
        .await?;
        match counted {
            Counted::Done { matching, ranges } => {
                info!(step = %step.id, %table, ranges, count = matching, "verification counted in paced key ranges");
                Ok(Some(matching))
            }
            Counted::Stopped(why) => {
                info!(step = %step.id, %table, ?why, "verification count stopped before its end; validate runs again later");
                Ok(None)
            }
        }
    }

    /// What a walk in batches of this engine checks before each batch (`batch_gate.rs`), for
    /// `steps` on `table`.
    pub(super) fn batch_gate<'a>(&'a self, steps: Vec<&'a str>, table: String) -> BatchGate<'a> {
        let health = HealthFollower::new(
            &self.evolver.pool,
            &self.store,
            steps,
            &self.instance,
            table,
            self.evolver.backfill.health.clone(),
        );
        BatchGate::new(&self.stop, &self.lease, health)
    }

    /// A count that may scan a large table (no statement_timeout; ACCESS SHARE only), in one
    /// process (no parallel workers: a parallel scan takes every core of a small server at
    /// once, and the application waits for CPU meanwhile; issue #13).
    pub(super) async fn count(&self, sql: &str) -> Result<i64> {
        let mut conn = self.evolver.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
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

    /// Runs one phase's statements and records it, in one transaction. The backfill phase's
    /// statement is the batch the engine runs itself, so only its completion is recorded here.
    pub(super) async fn run_phase(
        &self,
        step: &PlannedStep,
        phase: Phase,
        long_running: bool,
    ) -> Result<()> {
        // Other runners (the backfill engine, validations, concurrent builds) ran the phase's
        // statements themselves; it is only recorded here.
        let statements: &[crate::sql::Statement] = match step.room().runner(phase) {
            crate::kinds::Runner::Statements => step.statements(phase),
            _ => &[],
        };
        self.run_phase_with(step, phase, statements, long_running)
            .await
    }

    /// Runs `statements` as the phase and records it, in one transaction (see [`Self::run_phase`]).
    pub(super) async fn run_phase_with(
        &self,
        step: &PlannedStep,
        phase: Phase,
        statements: &[crate::sql::Statement],
        long_running: bool,
    ) -> Result<()> {
        let record = [
            self.store.steps().record_phase_sql(step, phase),
            self.store.journal().insert_sql(
                Some(step.id.as_str()),
                &Event::PhaseDone {
                    phase,
                    step: &step.describe(),
                },
                &self.instance,
            ),
            Coordinator::notify_sql(&self.store.schema, &step.id, phase),
        ];
        self.executor
            .run(target(step, phase), statements, &record, long_running)
            .await?;
        info!(step = %step.id, %phase, table = %step.model.qualified_name(), "{}: {phase} done", step.describe());
        self.set_phase(&step.id, phase);
        Ok(())
    }

    /// Drops the indexes removed from the structs (see `concurrent::removed_indexes`), inside
    /// the deploy window like every contract.
    pub(super) async fn drop_removed_indexes(&self, overriding: Option<&str>) -> Result<()> {
        let removed = crate::concurrent::removed_indexes(
            &self.evolver.pool,
            &self.store,
            self.evolver.planned(),
        )
        .await?;
        for (declared_by, step) in removed {
            self.check_window(&step, Phase::Contract, overriding)
                .await?;
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

pub(super) fn is_check_violation(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Statement { source: sqlx::Error::Database(db), .. } if db.code().as_deref() == Some("23514"))
}
