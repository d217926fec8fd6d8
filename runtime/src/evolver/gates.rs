//! What every kind's destructive phases wait for: the deploy window (or a recorded override),
//! and the acknowledgement of every live instance.

use sqlx::AssertSqlSafe;
use tracing::{info, warn};

use super::Engine;
use crate::coordinator::wait_for_acks;
use crate::error::{ErrorKind, Result};
use crate::plan::PlannedStep;
use crate::step::Phase;
impl Engine {
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

    /// Destructive phases run only inside the deploy window, or under an override (its reason
    /// recorded in the journal), which only an operator's contract passes down.
    pub(super) async fn check_window(
        &self,
        step: &PlannedStep,
        phase: Phase,
        overriding: Option<&str>,
    ) -> Result<()> {
        match (
            self.evolver.window.check_now(&*self.evolver.clock),
            overriding,
        ) {
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
