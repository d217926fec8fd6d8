//! The slow boot: privileges, drift, expand under the boot lock, then the coordinator and the
//! background task. (The fast boot, with nothing pending, is `fast_boot.rs`.)

use std::sync::Arc;

use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Engine, Evolution, MIN_SERVER_VERSION, POLL, target, try_lock, unlock};
use crate::coordinator::{Coordinator, CoordinatorOptions};
use crate::error::{ErrorKind, Result};
use crate::plan::PlannedStep;
use crate::progress::StepProgress;
use crate::resolve::{Resolved, resolve_model};
use crate::spec::ModelSpec;
use crate::state::Event;
use crate::step::{Phase, boot_key};
impl Engine {
    /// Boot without the fast path: leader lock, drift check, expand, coordinator, background.
    pub(super) async fn boot_slow(inner: &Arc<Engine>) -> Result<Evolution> {
        // First the pooler check (in `leader_connection`): the privilege check runs prepared
        // statements on the pool, which behind a transaction pooler fail at random with
        // "prepared statement ... does not exist" instead of the error that says what to do.
        let mut lock = inner.leader_connection().await?;
        // Before anything else: every instance may lead, and resolving needs some of the rights.
        inner.check_privileges_before_resolve().await?;
        // Expand under the boot lock, held for seconds: a boot never waits for the background
        // work (backfills, index builds, a deploy window) another instance or build leads.
        let resolved = loop {
            if try_lock(&mut lock, boot_key(&inner.store.schema)).await? {
                // On error the connection is dropped, which ends its session and the lock.
                let resolved = inner.expand().await?;
                unlock(&mut lock, boot_key(&inner.store.schema)).await?;
                break resolved;
            }
            if let Some(resolved) = inner.expanded_by_leader().await? {
                // This instance may lead the background work and the contract later: it needs
                // the same rights.
                inner.check_privileges(&resolved, true).await?;
                inner.check_trigger_skip(&resolved).await?;
                break resolved;
            }
            tokio::time::sleep(POLL).await;
        };
        // The leader lock is for the background work only: with it, this instance walks the
        // steps; without it, it follows, and takes over from the checkpoint when it is free.
        let leading = try_lock(&mut lock, inner.lock_key()).await?;
        inner.init_progress(&resolved).await?;
        let steps = inner
            .evolver
            .planned()
            .iter()
            .flat_map(|p| &p.steps)
            .map(|s| s.id.clone())
            .collect();
        let coordinator = Coordinator::start(
            &inner.evolver.pool,
            &inner.store.schema,
            inner.instance.clone(),
            steps,
            CoordinatorOptions::default().registry(inner.registry.clone()),
        )
        .await;
        let _ = inner.coordinator.set(coordinator);
        let (tx, rx) = watch::channel(None);
        inner.serve_requests(rx.clone(), false);
        let task_inner = inner.clone();
        tokio::spawn(async move {
            let result = task_inner
                .drive(leading.then_some(lock))
                .await
                .map_err(Arc::new);
            if let Err(e) = &result {
                warn!(error = %e, "background work of the evolution failed");
            }
            let _ = tx.send(Some(result));
        });
        Ok(Evolution {
            inner: inner.clone(),
            done: rx,
            fast: false,
        })
    }

    /// Resolves every model; drift is an error here, before anything is changed.
    /// Also says whether the state store is current (then boot need not bootstrap it).
    pub(super) async fn resolve_all(&self) -> Result<(Vec<Resolved>, bool)> {
        let mut conn = self.evolver.pool.acquire().await?;
        let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
            .fetch_one(&mut *conn)
            .await?;
        if version < MIN_SERVER_VERSION {
            return Err(ErrorKind::UnsupportedServer { version }.into());
        }
        let shape = self.store.exists(&mut conn).await?;
        let recorded = if shape.exists {
            self.store.steps().rows(&mut conn).await?
        } else {
            Default::default()
        };
        let mut problems = crate::kinds::dropped_table_conflicts(self.evolver.planned());
        let mut all = Vec::new();
        for plan in self.evolver.planned() {
            all.extend(resolve_model(&mut conn, &recorded, plan, &mut problems).await?);
        }
        crate::kinds::widen_key::build_problems(
            &mut conn,
            self.evolver.planned(),
            &recorded,
            &mut problems,
        )
        .await?;
        if problems.is_empty() {
            Ok((all, shape.current))
        } else {
            Err(ErrorKind::Drift(problems).into())
        }
    }

    /// The leader's boot work: drift check, state store, then every expand phase. Returns the
    /// steps with the phase each has completed now.
    pub(super) async fn expand(&self) -> Result<Vec<Resolved>> {
        let (resolved, state_current) = self.resolve_all().await?;
        self.check_privileges(&resolved, state_current).await?;
        self.check_trigger_skip(&resolved).await?;
        {
            let mut conn = self.evolver.pool.acquire().await?;
            if !state_current {
                self.store.bootstrap(&mut conn).await?;
            }
            // What the `pgevolve` CLI shows as the plan: recorded under the boot lock, only
            // what changed (see `state/plan_record.rs`).
            crate::state::PlanRecord { store: &self.store }
                .record(&mut conn, self.evolver.planned())
                .await?;
        }
        let mut created: Vec<(&str, &str)> = Vec::new();
        for r in &resolved {
            let model = &r.step.model;
            if r.table_missing {
                if !created.contains(&(model.schema, model.table)) {
                    self.create_table(model, &resolved).await?;
                    created.push((model.schema, model.table));
                }
                continue;
            }
            if r.next_phase() == Some(Phase::Expand) && r.step.kind.expands_at_boot() {
                self.run_phase(&r.step, Phase::Expand, false).await?;
                crate::failpoint::pause_at("boot-expand-step").await;
            }
            // An abort interrupted after it was recorded is finished by the background work,
            // once every live instance has acknowledged it (`finish_interrupted_aborts`), never
            // here: an instance may still use the shape the abort drops.
            if r.expand_incomplete {
                self.complete_expand(&r.step).await?;
            }
        }
        let resolved: Vec<Resolved> = resolved
            .into_iter()
            .map(|mut r| {
                r.done = if r.table_missing {
                    r.step.kind.last_phase()
                } else if r.step.kind.expands_at_boot() {
                    r.done.max(Phase::Expand)
                } else {
                    // Built in the background (a concurrent index): not done at boot.
                    r.done
                };
                r
            })
            .collect();
        // Steps the catalog already satisfied get a row too: the store is what other instances
        // (and their accessors) read.
        let mut missing: Vec<String> = Vec::new();
        for r in &resolved {
            if r.step.room().judged_on_catalog() {
                // An index or constraint dropped by hand since its phase was recorded is built
                // or added again.
                if r.recorded != Some(r.done) {
                    missing.push(self.store.steps().record_phase_sql(&r.step, r.done));
                }
                // Phases whose DDL committed without their record (a process that died or lost
                // its connection in between): journaled now, once, like any phase done.
                if let Some(recorded) = r.recorded {
                    for phase in r.step.kind.phases() {
                        if recorded < *phase && *phase <= r.done {
                            missing.push(self.store.journal().insert_sql(
                                Some(r.step.id.as_str()),
                                &Event::PhaseFoundDone {
                                    phase: *phase,
                                    step: &r.step.describe(),
                                },
                                &self.instance,
                            ));
                        }
                    }
                }
            } else if r.recorded.is_none() {
                missing.push(self.store.steps().record_if_missing_sql(&r.step, r.done));
            }
        }
        if !missing.is_empty() {
            let mut conn = self.evolver.pool.acquire().await?;
            let mut tx = conn.begin().await?;
            for sql in missing {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Ok(resolved)
    }

    /// Every privilege the plan needs, checked before the models are resolved (see
    /// [`crate::privileges::check_before_resolve`]): resolving itself reads the state store
    /// and the tables. Nothing is changed.
    pub(super) async fn check_privileges_before_resolve(&self) -> Result<()> {
        let steps: Vec<PlannedStep> = self
            .evolver
            .plans()
            .into_iter()
            .flat_map(|p| p.steps)
            .collect();
        let mut conn = self.evolver.pool.acquire().await?;
        let (role, missing) =
            crate::privileges::check_before_resolve(&mut conn, &self.store.schema, &steps).await?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(ErrorKind::PrivilegesMissing { role, missing }.into())
    }

    /// Every privilege the plan needs on the state schema, the models' tables and the tables
    /// their foreign keys reference (see [`crate::privileges`]). Checked before any DDL, so a
    /// refused boot changes nothing.
    pub(super) async fn check_privileges(
        &self,
        resolved: &[Resolved],
        state_current: bool,
    ) -> Result<()> {
        let mut conn = self.evolver.pool.acquire().await?;
        let needs = crate::privileges::Needs {
            state_schema: &self.store.schema,
            state_current,
            steps: resolved.iter().map(Into::into).collect(),
        };
        let (role, missing) = crate::privileges::check(&mut conn, &needs).await?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(ErrorKind::PrivilegesMissing { role, missing }.into())
    }

    /// With [`BackfillOptions::skip_user_triggers`] and a backfill still to run, whether this
    /// role may set `session_replication_role` (tried in a transaction that is rolled back).
    /// Checked before any DDL, so a refused boot changes nothing.
    pub(super) async fn check_trigger_skip(&self, resolved: &[Resolved]) -> Result<()> {
        if !self.evolver.backfill.skip_user_triggers {
            return Ok(());
        }
        let mut tables: Vec<String> = resolved
            .iter()
            .filter(|r| {
                !r.table_missing
                    && r.step.kind.phases().contains(&Phase::Backfill)
                    && r.done < Phase::Backfill
            })
            .map(|r| r.step.model.qualified_name())
            .collect();
        tables.sort();
        tables.dedup();
        if tables.is_empty() {
            return Ok(());
        }
        let mut conn = self.evolver.pool.acquire().await?;
        let Err(reason) = crate::catalog::may_set_replication_role(&mut conn).await? else {
            return Ok(());
        };
        let (role, version): (String, i32) =
            sqlx::query_as("SELECT current_user::text, current_setting('server_version_num')::int")
                .fetch_one(&mut *conn)
                .await?;
        let remedy = if version >= 150_000 {
            format!(
                "Grant it as a superuser: GRANT SET ON PARAMETER session_replication_role TO {}; \
                 or turn BackfillOptions::skip_user_triggers off (the batches then fire the table's triggers)",
                crate::ident::Ident(&role)
            )
        } else {
            "Before PostgreSQL 15 only a superuser may set it: run the evolution as a superuser, \
             or turn BackfillOptions::skip_user_triggers off (the batches then fire the table's triggers)"
                .to_string()
        };
        Err(ErrorKind::TriggerSkipDenied {
            role,
            tables: tables.join(", "),
            reason,
            remedy,
        }
        .into())
    }

    /// Runs an expanded step's expand statements again (each is idempotent) to create the
    /// helpers an earlier pgevolve's expand did not, keeping the recorded phase.
    pub(super) async fn complete_expand(&self, step: &PlannedStep) -> Result<()> {
        let record = [self.store.journal().insert_sql(
            Some(step.id.as_str()),
            &Event::ExpandCompleted {
                step: &step.describe(),
            },
            &self.instance,
        )];
        self.executor
            .run(
                target(step, Phase::Expand),
                step.statements(Phase::Expand),
                &record,
                false,
            )
            .await?;
        info!(step = %step.id, table = %step.model.qualified_name(), "expand completed with the helpers this version adds");
        Ok(())
    }

    /// Creates a missing table; every column step of the model is complete with it.
    pub(super) async fn create_table(
        &self,
        model: &ModelSpec,
        resolved: &[Resolved],
    ) -> Result<()> {
        let steps: Vec<&PlannedStep> = resolved
            .iter()
            .filter(|r| r.step.model.table == model.table && r.step.model.schema == model.schema)
            .map(|r| &r.step)
            .collect();
        let Some(create) = steps.iter().find(|s| s.kind.creates_table()) else {
            return Ok(());
        };
        let mut record: Vec<String> = steps
            .iter()
            .map(|s| self.store.steps().record_phase_sql(s, s.kind.last_phase()))
            .collect();
        record.push(self.store.journal().insert_sql(
            Some(create.id.as_str()),
            &Event::TableCreated {
                table: &model.qualified_name(),
            },
            &self.instance,
        ));
        self.executor
            .run(
                target(create, Phase::Expand),
                create.statements(Phase::Expand),
                &record,
                false,
            )
            .await?;
        info!(table = %model.qualified_name(), "created table");
        Ok(())
    }

    /// A follower's check: has the leader's expand made this build's shape available?
    pub(super) async fn expanded_by_leader(&self) -> Result<Option<Vec<Resolved>>> {
        let resolved = match self.resolve_all().await {
            Ok((r, _)) => r,
            // A table or column the leader has not created yet looks like drift; wait for it.
            Err(e) if matches!(e.kind(), ErrorKind::Drift(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let expanded = resolved.iter().all(|r| {
            !r.table_missing && (r.done >= Phase::Expand || !r.step.kind.expands_at_boot())
        });
        Ok(expanded.then_some(resolved))
    }

    pub(super) async fn init_progress(&self, resolved: &[Resolved]) -> Result<()> {
        let backfills = resolved
            .iter()
            .any(|r| r.step.kind.phases().contains(&Phase::Backfill) && r.done < Phase::Validate);
        let mut rows = Default::default();
        if backfills {
            let mut conn = self.evolver.pool.acquire().await?;
            rows = self.store.steps().rows(&mut conn).await?;
        }
        let mut all = Vec::new();
        for r in resolved {
            self.registry.set(&r.step.id, r.done);
            let row = rows.get(&r.step.id);
            all.push(StepProgress {
                table: r.step.model.qualified_name(),
                description: r.step.describe(),
                phase: r.done,
                rows_done: row.as_ref().map(|r| r.rows_done).unwrap_or(0),
                rows_estimated: row.as_ref().and_then(|r| r.rows_estimated).unwrap_or(0),
                rows_per_second: 0.0,
                step: r.step.id.clone(),
            });
        }
        self.progress.reset(all);
        Ok(())
    }
}
