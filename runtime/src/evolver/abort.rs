//! Abort: recorded first (every instance's accessors go back to the old shape), then, once every
//! live instance acknowledged, the DDL that drops what the step added.

use sqlx::{AssertSqlSafe, Connection};
use tracing::info;

use super::advance::is_check_violation;
use super::{Engine, POLL, target, try_lock};
use crate::coordinator::Coordinator;
use crate::error::{Error, ErrorKind, Result};
use crate::plan::PlannedStep;
use crate::state::Event;
use crate::step::Phase;
impl Engine {
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
                &Event::AbortStarted {
                    from: done,
                    step: &step.describe(),
                    elsewhere: false,
                },
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
    pub(super) async fn not_aborted(&self, steps: &[PlannedStep]) -> Result<Vec<String>> {
        let mut conn = self.evolver.pool.acquire().await?;
        let recorded = self.store.steps().rows(&mut conn).await?;
        Ok(steps
            .iter()
            .filter(|s| recorded.get(&s.id).map(|r| r.phase) != Some(Phase::Aborted))
            .map(|s| s.id.to_string())
            .collect())
    }

    /// Aborts recorded whose DDL did not run (the process that aborted died in between): as
    /// [`Engine::abort`] would have, wait until every live instance follows the abort, then drop
    /// what it drops. Run by the leader before its walk.
    pub(super) async fn finish_interrupted_aborts(&self) -> Result<()> {
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
                &Event::AbortStarted {
                    from: done,
                    step: &step.describe(),
                    elsewhere: true,
                },
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
            &Event::AbortDone {
                step: &step.describe(),
            },
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

    /// What the kind needs before its abort (see `Kind::abort_preparation`): a count that must be
    /// zero, then a helper constraint added and validated. A refusal leaves the table as it was.
    pub(super) async fn prepare_abort(&self, step: &PlannedStep, done: Phase) -> Result<()> {
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
    let kind = step.kind.name();
    let message = if done >= Phase::Retire {
        "only a step that has not started its contract can be aborted".to_string()
    } else if step.kind.phases().contains(&Phase::Contract) {
        format!(
            "a `{kind}` step makes its one change at contract, so before it there is nothing to \
             abort; to call it off, deploy a build that no longer asks for it"
        )
    } else {
        format!(
            "a `{kind}` step has no contract: its one change is made at boot and does not get in \
             the way of older builds; leave it, or undo it in a later deploy"
        )
    };
    ErrorKind::NotReady {
        step: step.id.to_string(),
        table: step.model.qualified_name(),
        phase: done.to_string(),
        message,
    }
    .into()
}
