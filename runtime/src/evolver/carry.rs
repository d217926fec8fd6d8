//! A rename's carrying over of the objects on its old column (see `sql::carry`): built before
//! switch in the validate phase, finished in the contract's transaction, undone by abort.

use sqlx::AssertSqlSafe;
use tracing::info;

use super::{Engine, target};
use crate::concurrent::{Build, Built};
use crate::error::{DriftProblem, ErrorKind, Result};
use crate::executor::Target;
use crate::kinds::read_carry;
use crate::plan::PlannedStep;
use crate::spec::ColumnSpec;
use crate::sql::carry::{Between, Carry};
use crate::state::Event;
use crate::step::Phase;

impl Engine {
    /// What the rename step carries over, read from the catalog now. Something that cannot be
    /// carried (created since boot checked) is drift: nothing is done.
    pub(super) async fn read_carry(
        &self,
        step: &PlannedStep,
        column: &ColumnSpec,
    ) -> Result<Carry> {
        let between = between(step)?;
        let mut conn = self.evolver.pool.acquire().await?;
        let carry = read_carry(&mut conn, &step.model, column, &step.id, &between).await?;
        if !carry.blockers.is_empty() {
            let old = &between.old;
            return Err(ErrorKind::Drift(
                carry
                    .blockers
                    .iter()
                    .map(|message| DriftProblem {
                        table: step.model.qualified_name(),
                        column: Some(old.to_string()),
                        message: message.clone(),
                    })
                    .collect(),
            )
            .into());
        }
        Ok(carry)
    }

    /// Builds everything the rename carries over that must exist before reads move to the new
    /// column: the indexes (concurrently, with the recovery of index steps), the CHECKs and
    /// foreign keys (`NOT VALID`, then validated), the column privileges. Idempotent: what
    /// exists is adopted. Returns false when stopped on request (an abort waits).
    pub(super) async fn carry_before_switch(
        &self,
        step: &PlannedStep,
        phase: Phase,
        carry: &Carry,
    ) -> Result<bool> {
        for index in &carry.indexes {
            let built = Build {
                pool: &self.evolver.pool,
                options: &self.evolver.ddl,
                step,
                progress: &self.progress,
                stop: &self.stop,
                carried: Some(index),
                phase,
            }
            .run()
            .await?;
            if built == Built::Stopped {
                return Ok(false);
            }
        }
        for constraint in &carry.constraints {
            let on = Target {
                step: step.id.as_str(),
                phase,
                schema: &constraint.schema,
                table: &constraint.table,
            };
            self.executor
                .run(on, &[constraint.add()], &[], false)
                .await?;
            if constraint.validate {
                self.executor
                    .run(on, &[constraint.validate()], &[], true)
                    .await?;
            }
        }
        if !carry.grants.is_empty() {
            self.executor
                .run(target(step, phase), &carry.grants, &[], false)
                .await?;
        }
        // Everything carried is built and valid; validate's checks, or contract's transaction,
        // come next.
        crate::failpoint::pause_at("carried").await;
        if !carry.is_empty() && phase == Phase::Validate {
            let lines = carry.describe();
            info!(step = %step.id, table = %step.model.qualified_name(), "carried over to the new column: {}", lines.join("; "));
            let mut conn = self.evolver.pool.acquire().await?;
            sqlx::query(AssertSqlSafe(self.store.journal().insert_sql(
                Some(step.id.as_str()),
                &Event::CarriedOver { lines: &lines },
                &self.instance,
            )))
            .execute(&mut *conn)
            .await?;
        }
        Ok(!self.stop.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The contract of a rename: what was carried is checked again (and anything missing
    /// built), then one transaction moves the rest and drops the old column (see
    /// `rename::contract_carrying`).
    pub(super) async fn contract_rename(
        &self,
        step: &PlannedStep,
        column: &ColumnSpec,
    ) -> Result<()> {
        let carry = self.read_carry(step, column).await?;
        if !self
            .carry_before_switch(step, Phase::Contract, &carry)
            .await?
        {
            return Ok(());
        }
        let statements = step.room().contract_carrying(&step.model, &step.id, &carry);
        self.run_phase_with(step, Phase::Contract, &statements, false)
            .await
    }

    /// The abort of what a rename carried over, before its own abort drops the new column:
    /// the constraints, then the indexes `CONCURRENTLY`.
    pub(super) async fn abort_carried(&self, step: &PlannedStep) -> Result<()> {
        let Some(column) = step
            .kind
            .column()
            .filter(|_| step.room().carries_dependents())
        else {
            return Ok(());
        };
        let between = between(step)?;
        let mut conn = self.evolver.pool.acquire().await?;
        let carry = read_carry(&mut conn, &step.model, column, &step.id, &between).await?;
        drop(conn);
        let mut statements = carry.abort_constraints();
        statements.extend(carry.abort_indexes(&step.model));
        if statements.is_empty() {
            return Ok(());
        }
        crate::concurrent::run_abort(&self.evolver.pool, &self.executor, step, &statements, &[])
            .await
    }
}

/// The columns the step carries dependents between (see `Kind::carried_between`).
fn between(step: &PlannedStep) -> Result<Between> {
    step.room().carried_between().ok_or_else(|| {
        ErrorKind::NotReady {
            step: step.id.to_string(),
            table: step.model.qualified_name(),
            phase: "plan".into(),
            message: format!(
                "step kind {} carries dependents but names no columns to carry them between (a bug in its kind file)",
                step.kind.name()
            ),
        }
        .into()
    })
}
