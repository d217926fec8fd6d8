//! What every kind's destructive phases wait for: the deploy window (or a recorded override),
//! and the acknowledgement of every live instance.

use sqlx::AssertSqlSafe;
use tracing::{info, warn};

use super::Engine;
use crate::coordinator::wait_for_acks;
use crate::error::{ErrorKind, Result};
use crate::plan::PlannedStep;
use crate::state::Event;
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
        let acknowledged: Vec<&str> = outcome.acknowledged.iter().map(|a| a.id.as_str()).collect();
        let expired: Vec<&str> = outcome.expired.iter().map(|a| a.id.as_str()).collect();
        let mut conn = self.evolver.pool.acquire().await?;
        sqlx::query(AssertSqlSafe(self.store.journal().insert_sql(
            Some(step.id.as_str()),
            &Event::Acknowledged {
                phase,
                acknowledged: &acknowledged,
                expired: &expired,
                waited: outcome.waited,
            },
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
                    &Event::WindowOverridden {
                        phase,
                        now: &closed.now,
                        window: &closed.window,
                        reason,
                    },
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
