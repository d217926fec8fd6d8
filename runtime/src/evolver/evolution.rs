//! The handle a boot returns: progress, waiting, and the gated phases an operator triggers
//! (switch, contract, abort).

use std::sync::Arc;

use sqlx::Connection;
use tokio::sync::watch;

use super::{Engine, try_lock};
use crate::access::On;
use crate::error::{Error, ErrorKind, Result};
use crate::plan::Plan;
use crate::progress::StepProgress;
use crate::state::StepStatus;
use crate::step::{Phase, StepId};
/// A booted evolution: progress, waiting, and the gated contract phase.
#[derive(Debug, Clone)]
pub struct Evolution {
    pub(super) inner: Arc<Engine>,
    pub(super) done: watch::Receiver<Option<std::result::Result<(), Arc<Error>>>>,
    /// Booted by the fast path.
    pub(super) fast: bool,
}

impl Evolution {
    /// Progress of every step of the evolved models.
    pub fn progress(&self) -> Vec<StepProgress> {
        self.inner.progress.snapshot()
    }

    /// Whether the background work (backfill, validate, and contract with `auto_contract`) has finished.
    pub fn is_finished(&self) -> bool {
        self.done.borrow().is_some()
    }

    /// Waits for the background work to finish, and returns its outcome.
    pub async fn wait(&self) -> Result<()> {
        let mut rx = self.done.clone();
        let outcome = rx
            .wait_for(|d| d.is_some())
            .await
            .map_err(|_| ErrorKind::Background(Arc::new(Error::from(sqlx::Error::PoolClosed))))?
            .clone();
        match outcome {
            Some(Err(e)) => Err(ErrorKind::Background(e).into()),
            _ => Ok(()),
        }
    }

    /// Runs the contract phase of every validated step: `SET NOT NULL` (no scan), then the helper
    /// constraint and fill trigger are dropped. Waits for the background work first. Do this once
    /// no running binary writes rows without the new column.
    pub async fn contract(&self) -> Result<()> {
        self.contract_with(None).await
    }

    /// The contract of every validated step, with the deploy window overridden for `reason`.
    pub(super) async fn contract_with(&self, overriding: Option<&str>) -> Result<()> {
        self.wait().await?;
        let lock = self.inner.lead().await?;
        for step in self.inner.background_steps() {
            if step.kind.phases().contains(&Phase::Contract) {
                self.inner
                    .advance_to(&step, Phase::Contract, overriding)
                    .await?;
            }
        }
        self.inner.drop_removed_indexes(overriding).await?;
        self.inner.record_verified_if_done().await;
        lock.close().await?;
        Ok(())
    }

    /// Moves the reads of every validated rename to the new column (the switch phase). Every
    /// instance's accessors follow within a second; writes still go to both columns, so this is
    /// still reversible with [`Evolution::abort`].
    pub async fn switch(&self) -> Result<()> {
        self.wait().await?;
        let lock = self.inner.lead().await?;
        for step in self.inner.background_steps() {
            if step.kind.phases().contains(&Phase::Switch) {
                self.inner.advance_to(&step, Phase::Switch, None).await?;
            }
        }
        lock.close().await?;
        Ok(())
    }

    /// The switch phase of one step (see [`Evolution::switch`]).
    pub async fn switch_step(&self, id: &StepId) -> Result<()> {
        let step = self.inner.step(id)?;
        let lock = self.inner.lead().await?;
        self.inner.advance_to(&step, Phase::Switch, None).await?;
        lock.close().await?;
        Ok(())
    }

    /// [`Evolution::contract`] outside the deploy window, for emergencies. The override and its
    /// reason are recorded in the journal for every step it lets through.
    pub async fn contract_overriding_window(&self, reason: &str) -> Result<()> {
        self.contract_with(Some(reason)).await
    }

    /// Runs the contract phase of one step (see [`Evolution::contract`]).
    pub async fn contract_step(&self, id: &StepId) -> Result<()> {
        let step = self.inner.step(id)?;
        let lock = self.inner.lead().await?;
        self.inner.advance_to(&step, Phase::Contract, None).await?;
        self.inner.record_verified_if_done().await;
        lock.close().await?;
        Ok(())
    }

    /// Undoes a step that has not been contracted: its helpers and new columns are dropped and
    /// the table is back to what it was, with every write made in the meantime kept in the old
    /// shape. The step is recorded as aborted and is not run again for this declaration.
    ///
    /// The background work of this evolution stops first (a backfill after its current batch,
    /// with its checkpoint kept); boot again to carry on with the other steps.
    ///
    /// When another instance leads the background work, this does not wait for its walk: the
    /// abort is recorded at once (every instance's accessors go back to the old shape, and
    /// this waits until every live instance has acknowledged it), and the leader, which looks
    /// for aborts before every backfill batch and phase, drops what the step added; this
    /// returns once it has.
    pub async fn abort(&self, id: &StepId) -> Result<()> {
        let step = self.inner.step(id)?;
        self.inner
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        self.wait().await?;
        let mut lock = self.inner.leader_connection().await?;
        if !try_lock(&mut lock, self.inner.lock_key()).await? {
            // Another instance leads: do not wait for its whole walk.
            drop(lock);
            return self.inner.request_abort(&step).await;
        }
        self.inner.abort(&step).await?;
        self.inner.record_verified_if_done().await;
        lock.close().await?;
        Ok(())
    }

    /// Stops this instance's background work, as a service shutting down does: a backfill stops
    /// after its current batch with its checkpoint committed, no further phase starts, and this
    /// returns once the background task has ended. Nothing is aborted: the next boot (of this
    /// build or a newer one) resumes from the checkpoint. The instance deregisters once every
    /// clone of this handle is dropped.
    pub async fn stop(&self) -> Result<()> {
        self.inner
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        self.wait().await
    }

    /// The recorded status of every step in the state store: phase, progress, and who did what
    /// when (from the journal).
    pub async fn status(&self) -> Result<Vec<StepStatus>> {
        let mut conn = self.inner.evolver.pool.acquire().await?;
        let mut steps = self.inner.store.steps().all(&mut conn).await?;
        let journal = self.inner.store.journal().all(&mut conn).await?;
        for step in &mut steps {
            step.history = journal
                .iter()
                .filter(|e| e.step.as_deref() == Some(step.id.as_str()))
                .cloned()
                .collect();
        }
        Ok(steps)
    }

    /// The static plans of the evolved models.
    pub fn plans(&self) -> Vec<Plan> {
        self.inner.evolver.plans()
    }

    /// The plans as this evolution runs them, with the user triggers each backfill batch fires
    /// (see [`Evolver::plans_for_database`](crate::Evolver::plans_for_database)).
    pub async fn plans_for_database(&self) -> Result<Vec<Plan>> {
        self.inner.evolver.plans_for_database().await
    }

    /// Ties an executor (a connection, a transaction, a pool) to this evolution, so the
    /// accessors called with it read and write this evolution's database in its phases:
    /// `User::find(&id, evolution.on(&mut *tx))`. A pool alone already says which database it
    /// is for; a bare connection needs this only when the process evolves the same model on
    /// several databases (see [`ErrorKind::AmbiguousDatabase`](crate::ErrorKind::AmbiguousDatabase)).
    pub fn on<E>(&self, executor: E) -> On<E> {
        On::new(self.inner.registry.clone(), executor)
    }

    /// The id this instance registered with in the state store (`<state schema>.instances`).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance
    }

    /// Whether [`Evolver::boot`](crate::Evolver::boot) took its fast path: every step was terminal and nothing in the
    /// catalog of the models' tables or in the steps' recorded phases had changed since the
    /// build was recorded as verified, so boot cost one statement and ran no DDL. The
    /// evolution's background work is then finished from the start.
    pub fn booted_fast(&self) -> bool {
        self.fast
    }
}
