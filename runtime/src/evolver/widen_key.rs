//! The runner of a primary key widened to `bigint` (`kinds::widen_key`): the validate and
//! contract phases, which work on the tables that reference the key, found in the catalog when
//! the phase runs. Every statement comes from `sql::key_widening`; every group of DDL runs
//! through the executor (its own short transaction, lock_timeout, retries), every concurrent
//! build alone on a connection of its own.

use std::time::Instant;

use sqlx::{AssertSqlSafe, Row};
use tracing::info;

use super::Engine;
use crate::backfill::{WalReport, wal_window};
use crate::batch_gate::Next;
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Target, is_retryable, is_statement_timeout};
use crate::ident::Qualified;
use crate::kinds::widen_key::read_referencing;
use crate::pacing::PassPacing;
use crate::plan::PlannedStep;
use crate::sql::key_widening::{self as kw, KeyFacts, Referencing};
use crate::sql::type_change::{self, TypeHelpers};
use crate::sql::{self, Statement};
use crate::step::Phase;

/// Heap pages per batch of a referencing table's fill (8 kB each, up to a few hundred narrow
/// rows): the first batch's size, and the largest. Between the two, the size follows the
/// backfill's pacing (`pacing::PassPacing`, as a SQL pass's rows: towards the target duration,
/// and down while a batch writes more than its share of the WAL budget), and halves after a
/// batch cancelled at its timeout.
const FILL_PAGES_FIRST: u32 = 4;
const FILL_PAGES_MAX: u32 = 32;

impl Engine {
    /// Validate or contract of a widened key (see `kinds::widen_key`).
    pub(super) async fn widen_key(&self, step: &PlannedStep, phase: Phase) -> Result<()> {
        match phase {
            Phase::Validate => self.widen_key_validate(step).await,
            Phase::Contract => self.widen_key_contract(step).await,
            _ => self.run_phase(step, phase, false).await,
        }
    }

    async fn referencing(&self, step: &PlannedStep, phase: Phase) -> Result<Vec<Referencing>> {
        let column = step
            .kind
            .column()
            .ok_or_else(|| refused(step, phase, "no column".into()))?;
        let mut conn = self.evolver.pool.acquire().await?;
        let mut out = Vec::new();
        for (r, refusal) in read_referencing(&mut conn, &step.model, column).await? {
            if let Some(why) = refusal {
                return Err(refused(step, phase, why));
            }
            out.push(r);
        }
        Ok(out)
    }

    async fn widen_key_validate(&self, step: &PlannedStep) -> Result<()> {
        let phase = Phase::Validate;
        let column = step
            .kind
            .column()
            .ok_or_else(|| refused(step, phase, "no column".into()))?;
        let model = &step.model;
        let h = TypeHelpers::new(model, column, &step.id);
        let refs = self.referencing(step, phase).await?;
        // Shadows and triggers first on every referencing table (idempotent: a table whose
        // foreign key appeared since an earlier run gets them now).
        for r in &refs {
            let rh = r.helpers(&step.id);
            self.executor
                .run(
                    ref_target(step, phase, r),
                    &kw::expand_referencing(r, &rh),
                    &[],
                    false,
                )
                .await?;
        }
        // The fills' progress: rows filled in this run over the referencing tables' rows.
        let mut estimate = 0i64;
        for r in &refs {
            let rows: f32 = sqlx::query_scalar(kw::estimated_rows())
                .bind(r.table().to_string())
                .fetch_one(&self.evolver.pool)
                .await?;
            estimate += rows.max(0.0) as i64;
        }
        self.progress.set_estimate(|s| s == &step.id, estimate);
        self.progress.set_rows(|s| s == &step.id, 0, 0.0);
        let mut done = 0i64;
        for r in &refs {
            if !self.fill_referencing(step, r, &mut done, estimate).await? {
                return Ok(());
            }
        }
        // Kill tests stop here: shadows filled, nothing built over them yet.
        crate::failpoint::pause_at("key-references-filled").await;
        for r in &refs {
            let rh = r.helpers(&step.id);
            for (name, build) in kw::index_copies(r, &rh, &step.id) {
                self.build_alone(&name, &build).await?;
            }
        }
        let index = kw::key_unique_index(model, &h.shadow, &step.id);
        let name = Qualified(model.schema, &kw::key_index(&step.id)).to_string();
        self.build_alone(&name, &index).await?;
        for r in &refs {
            let rh = r.helpers(&step.id);
            if let Some(check) = kw::validate_referencing_check(r, &rh) {
                self.executor
                    .run(ref_target(step, phase, r), &[check], &[], true)
                    .await?;
            }
            let [add, validate] = kw::new_foreign_key(model, &h.shadow, r, &rh);
            self.executor
                .run(ref_target(step, phase, r), &[add], &[], false)
                .await?;
            self.executor
                .run(ref_target(step, phase, r), &[validate], &[], true)
                .await?;
            let differ = self
                .count(&kw::count_referencing_differences(r, &rh))
                .await?;
            if differ != 0 {
                return Err(ErrorKind::Verification {
                    step: step.id.to_string(),
                    phase: phase.to_string(),
                    table: r.table().to_string(),
                    message: format!(
                        "{differ} rows of {} have a shadow that is not their {} as bigint: a writer bypassed the trigger \
                         (session_replication_role?); set the shadow {} to NULL on those rows and boot again to refill them",
                        r.table(),
                        r.column,
                        rh.shadow
                    ),
                }
                .into());
            }
        }
        // The key table's own validation: its NOT NULL check, then its data checks.
        self.executor
            .run(
                super::target(step, phase),
                &type_change::validate(model, column, &h),
                &[],
                true,
            )
            .await?;
        for check in step
            .room()
            .verifications(model)
            .iter()
            .filter(|c| !c.proven_by_not_null_check)
        {
            // Stopped (as the fills stop): the phase runs again later.
            let Some(count) = self.verification_count(step, check).await? else {
                return Ok(());
            };
            if count != 0 {
                return Err(ErrorKind::Verification {
                    step: step.id.to_string(),
                    phase: phase.to_string(),
                    table: model.qualified_name(),
                    message: format!("{count} {}", check.message),
                }
                .into());
            }
        }
        self.run_phase_with(step, phase, &[], false).await
    }

    /// One referencing table's shadow filled, in batches of heap pages up to the size it had at
    /// start (later rows got their value from the trigger), each batch its own transaction with
    /// the step's `rows_done` (rows filled in this run, over every referencing table; `done`
    /// carries it from one table to the next) and `rows_estimated` (the referencing tables'
    /// rows), so `pgevolve status` and `watch` show the fill.
    ///
    /// Before each batch, as a backfill does: the database's health (`HealthFollower`: a breach
    /// waits, journaled and recorded for the CLI), the lease (an abort by another instance
    /// stops the fill) and an operator's pause of the step (the fill stops; the walk journals
    /// the pause and comes back to the phase once it is lifted). `false`: stopped between
    /// batches. After each batch, the pace of a backfill (`pacing::PassPacing`): the duty
    /// cycle's pause stretched by the health verdict, and the WAL budget, on the WAL the batch's
    /// transaction wrote (its position read with the transaction's settings and after the
    /// batch's statements, before the commit).
    ///
    /// Resuming after a crash or a stop needs no checkpoint: the fill is idempotent. A batch
    /// writes only rows whose shadow is still `NULL` (`sql::key_widening::fill_referencing`),
    /// and a row written since the trigger exists got its value from it, so the phase runs
    /// again from the first page, and pages done before only cost a read.
    async fn fill_referencing(
        &self,
        step: &PlannedStep,
        r: &Referencing,
        done: &mut i64,
        estimate: i64,
    ) -> Result<bool> {
        let rh = r.helpers(&step.id);
        let pool = &self.evolver.pool;
        let pages: i64 = sqlx::query_scalar(kw::heap_pages())
            .bind(r.table().to_string())
            .fetch_one(pool)
            .await?;
        let batch = kw::fill_referencing(r, &rh);
        let record = self.store.steps().rows_sql();
        let options = &self.evolver.backfill;
        let id = [step.id.as_str()];
        let table = r.table().to_string();
        let mut gate = self.batch_gate(id.to_vec(), table.clone());
        gate.start().await?;
        // Each batch holds its rows' locks until it commits: bounded by the backfill's batch
        // timeout (`statement_timeout`), and by lock_timeout while it waits for a writer's row.
        let settings = kw::fill_settings(options.batch_timeout, self.evolver.ddl.lock_timeout);
        let wal_end = sql::backfill::wal_end();
        let (mut from, mut size, mut failures, mut batches) = (0i64, FILL_PAGES_FIRST, 0u32, 0u64);
        let (started, first) = (Instant::now(), *done);
        let mut pacing = PassPacing::new(options);
        let wal_report = WalReport {
            pool,
            store: &self.store,
            steps: id.to_vec(),
            instance: &self.instance,
            table: &table,
            budget: options.wal_budget.unwrap_or(0),
            unit: "heap pages",
        };
        while from <= pages {
            // Batches run on the pool: a fill writes only rows whose shadow is still `NULL`,
            // so a batch that outlives the leadership writes what the next leader would.
            let Next::Run { verdict, .. } = gate.before_batch(*done).await? else {
                return Ok(false);
            };
            let t0 = Instant::now();
            let mut tx = pool.begin().await?;
            let at = Instant::now();
            let start = sqlx::raw_sql(AssertSqlSafe(settings.clone()))
                .fetch_all(&mut *tx)
                .await?;
            let outcome = sqlx::query(AssertSqlSafe(batch.as_str()))
                .bind(from)
                .bind(from + i64::from(size))
                .execute(&mut *tx)
                .await;
            match outcome {
                Ok(filled) => {
                    let rows = *done + filled.rows_affected() as i64;
                    sqlx::query(AssertSqlSafe(record.as_str()))
                        .bind(step.id.as_str())
                        .bind(rows)
                        .bind(estimate)
                        .execute(&mut *tx)
                        .await?;
                    let end = sqlx::raw_sql(AssertSqlSafe(wal_end.clone()))
                        .fetch_all(&mut *tx)
                        .await?;
                    let window = wal_window(&start, &end, at, at.elapsed());
                    batches += 1;
                    // Kill tests stop here: a batch done but not committed, earlier ones committed.
                    if batches == 2 {
                        crate::failpoint::pause_at("key-reference-fill-batch").await;
                    }
                    tx.commit().await?;
                    *done = rows;
                    from += i64::from(size);
                    failures = 0;
                    let after = pacing.after_within(
                        size,
                        t0.elapsed(),
                        window,
                        verdict.slowdown(),
                        1..=FILL_PAGES_MAX,
                    );
                    wal_report.after(size, &after).await?;
                    size = after.pace.next_size;
                    let rate = (*done - first) as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    self.progress.set_rows(|s| s == &step.id, *done, rate);
                    tokio::time::sleep(after.pace.pause).await;
                }
                // Cancelled at its timeout, or a writer's row lock outlasted lock_timeout: rolled
                // back (its locks released), retried smaller after a pause.
                Err(e) if is_statement_timeout(&e) || is_retryable(&e) => {
                    drop(tx);
                    pacing.interrupted();
                    failures += 1;
                    if failures > self.evolver.ddl.max_attempts {
                        return Err(ErrorKind::Statement {
                            step: step.id.to_string(),
                            phase: Phase::Validate.to_string(),
                            table: r.table().to_string(),
                            source: e,
                        }
                        .into());
                    }
                    size = (size / 2).max(1);
                    let backoff = (self.evolver.ddl.initial_backoff * failures)
                        .min(self.evolver.ddl.max_backoff);
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        info!(step = %step.id, table = %table, rows = *done, "shadow of a referencing column filled");
        Ok(true)
    }

    /// A `CREATE ... INDEX CONCURRENTLY IF NOT EXISTS` on a connection of its own, after an
    /// INVALID index of that name (a build interrupted earlier) was dropped concurrently.
    async fn build_alone(&self, qualified: &str, build: &Statement) -> Result<()> {
        let mut conn = self.evolver.pool.acquire().await?;
        let invalid: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_index WHERE indexrelid = to_regclass($1) AND NOT indisvalid)",
        )
        .bind(qualified)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query("SET statement_timeout = 0")
            .execute(&mut *conn)
            .await?;
        if invalid {
            sqlx::query(AssertSqlSafe(format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {qualified}"
            )))
            .execute(&mut *conn)
            .await?;
        }
        sqlx::query(AssertSqlSafe(build.sql.as_str()))
            .execute(&mut *conn)
            .await?;
        sqlx::query("RESET statement_timeout")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn key_facts(&self, step: &PlannedStep) -> Result<KeyFacts> {
        let column = step
            .kind
            .column()
            .ok_or_else(|| refused(step, Phase::Contract, "no column".into()))?;
        let row = sqlx::query(kw::key_facts())
            .bind(sql::table(&step.model).to_string())
            .bind(column.name)
            .fetch_one(&self.evolver.pool)
            .await?;
        Ok(KeyFacts {
            constraint: row
                .try_get::<Option<String>, _>("constraint")?
                .unwrap_or_else(|| format!("{}_pkey", step.model.table)),
            default: row.try_get("default")?,
            sequence: row.try_get("sequence")?,
            identity: row.try_get("identity")?,
        })
    }

    /// Contract: each referencing table in its own short transaction (a table already swapped
    /// by an interrupted contract no longer has the old foreign key and is not found again),
    /// then the key table, recorded with it.
    async fn widen_key_contract(&self, step: &PlannedStep) -> Result<()> {
        let phase = Phase::Contract;
        let column = step
            .kind
            .column()
            .ok_or_else(|| refused(step, phase, "no column".into()))?;
        for r in self.referencing(step, phase).await? {
            let rh = r.helpers(&step.id);
            self.executor
                .run(
                    ref_target(step, phase, &r),
                    &kw::contract_referencing(&r, &rh, &step.id),
                    &[],
                    false,
                )
                .await?;
            info!(step = %step.id, table = %r.table(), "referencing column widened");
            // Kill tests stop here: a referencing table swapped, the key table not yet.
            crate::failpoint::pause_at("key-reference-swapped").await;
        }
        let facts = self.key_facts(step).await?;
        let h = TypeHelpers::new(&step.model, column, &step.id);
        let statements = kw::contract_key(&step.model, column, &h, &facts, &step.id);
        self.run_phase_with(step, phase, &statements, false).await
    }
}

fn ref_target<'a>(step: &'a PlannedStep, phase: Phase, r: &'a Referencing) -> Target<'a> {
    Target {
        step: step.id.as_str(),
        phase,
        schema: &r.schema,
        table: &r.table,
    }
}

fn refused(step: &PlannedStep, phase: Phase, message: String) -> Error {
    ErrorKind::NotReady {
        step: step.id.to_string(),
        table: step.model.qualified_name(),
        phase: phase.to_string(),
        message,
    }
    .into()
}
