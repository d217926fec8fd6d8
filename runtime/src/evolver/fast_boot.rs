//! The boot fast path: a boot with nothing pending costs one statement.
//!
//! A build is *verified* when every step of every model is terminal (at its last phase, or
//! aborted), the catalog is what the slow path's checks accept, and no index removed from a
//! struct is left to drop. The leader then records, under the leader lock, a row in
//! `<state schema>.verified_builds`: the build key ([`build_key`]) and a fingerprint of the
//! catalog of every model's table and of the recorded phases of their steps
//! ([`FastBoot::fingerprint_sql`]), computed by PostgreSQL.
//!
//! A later boot of the same build sends one message ([`FastBoot::check_sql`]): it registers the
//! instance, then compares the recorded fingerprint with a fresh one. When they are equal,
//! nothing the slow path looks at has changed since it found nothing to do, so boot fills the
//! registry from the phases the same message returned and is done: no leader lock, no DDL, no
//! state-store bootstrap. Anything else (another build, a column or index changed by hand, a
//! phase changed by an operator or another build's leader, an older state store) takes the
//! slow path, which checks and repairs as always and records the build again when it is done.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, Row};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Engine, Evolution};
use crate::coordinator::{Coordinator, CoordinatorOptions};
use crate::error::{ErrorKind, Result};
use crate::ident::Qualified;
use crate::plan::{Plan, PlannedStep};
use crate::progress::StepProgress;
use crate::resolve::Resolved;
use crate::spec::ModelSpec;
use crate::sql::lit;
use crate::state::{Instances, StateStore};
use crate::step::{Phase, StepId, StepKind, fnv1a};

/// Whether a step of `kind` at `phase` has nothing left to do: its last phase, or aborted.
pub(super) fn is_terminal(kind: &StepKind, phase: Phase) -> bool {
    phase == Phase::Aborted || phase == kind.last_phase()
}

/// The key of a build in `verified_builds`: 16 hex digits of FNV-1a over the `Debug` text of
/// every model, in order, the runtime's version and the state store's version. Any change to a
/// declaration (a field, a type, an index, a check) gives another key, so a build never takes
/// the fast path another build recorded.
pub(crate) fn build_key(models: &[ModelSpec]) -> String {
    let models: Vec<String> = models.iter().map(|m| format!("{m:?}")).collect();
    let mut parts = vec![
        "pgevolve build",
        env!("CARGO_PKG_VERSION"),
        crate::state::VERSION,
    ];
    parts.extend(models.iter().map(String::as_str));
    format!("{:016x}", fnv1a(&parts))
}

/// The fast path's SQL for one build: every value is written as a literal, so that each
/// statement can go with the simple protocol (one round trip, where a prepared statement costs
/// two the first time a connection sees it).
#[derive(Debug)]
pub(super) struct FastBoot<'a> {
    store: &'a StateStore,
    /// `(schema, table)` of every model, each once, in model order.
    tables: Vec<(&'static str, &'static str)>,
    /// The enum types the models' columns use (`"schema"."name"`), each once: their labels are
    /// part of what the slow path checks (`kinds::enum_type`).
    enum_types: Vec<String>,
    /// Every step of the build, in plan order.
    steps: Vec<PlannedStep>,
    build: String,
}

impl<'a> FastBoot<'a> {
    pub fn new(store: &'a StateStore, plans: &[Plan]) -> FastBoot<'a> {
        let models: Vec<ModelSpec> = plans.iter().map(|p| p.model).collect();
        let mut tables = Vec::new();
        for m in &models {
            if !tables.contains(&(m.schema, m.table)) {
                tables.push((m.schema, m.table));
            }
        }
        let mut enum_types = Vec::new();
        for spec in models
            .iter()
            .flat_map(|m| m.columns.iter().filter_map(|c| c.enum_type))
        {
            if !enum_types.contains(&spec.qualified_name()) {
                enum_types.push(spec.qualified_name());
            }
        }
        FastBoot {
            store,
            tables,
            enum_types,
            steps: plans.iter().flat_map(|p| p.steps.iter().cloned()).collect(),
            build: build_key(&models),
        }
    }

    /// The build key.
    pub fn build(&self) -> &str {
        &self.build
    }

    /// The step ids of the build.
    pub fn step_ids(&self) -> Vec<StepId> {
        self.steps.iter().map(|s| s.id.clone()).collect()
    }

    pub(super) fn ids_array(&self) -> String {
        let ids: Vec<String> = self.steps.iter().map(|s| lit(s.id.as_str())).collect();
        format!("ARRAY[{}]::text[]", ids.join(", "))
    }

    /// One table's catalog as text: the table and its kind, then every column (name, type, NOT
    /// NULL, default, identity, generated), index (definition, valid, ready), constraint
    /// (definition, validated) and user trigger (enabled, definition), each in a fixed order;
    /// `missing <table>` when there is no such relation.
    pub(super) fn table_sql(schema: &str, table: &str) -> String {
        let name = lit(&Qualified(schema, table).to_string());
        format!(
            "coalesce((SELECT concat_ws(E'\\n', \
             format('table %s %s', {name}, c.relkind), \
             (SELECT string_agg(format('column %I %s notnull=%s default=%L identity=%L generated=%L', \
                 a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                 pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated), E'\\n' ORDER BY a.attnum) \
              FROM pg_catalog.pg_attribute a \
              LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), \
             (SELECT string_agg(format('index %s valid=%s ready=%s', \
                 pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready), E'\\n' ORDER BY ic.relname) \
              FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
              WHERE i.indrelid = c.oid), \
             (SELECT string_agg(format('constraint %I %s validated=%s', \
                 o.conname, pg_get_constraintdef(o.oid), o.convalidated), E'\\n' ORDER BY o.conname, o.contype) \
              FROM pg_catalog.pg_constraint o WHERE o.conrelid = c.oid), \
             (SELECT string_agg(format('trigger %I enabled=%s %s', \
                 t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)), E'\\n' ORDER BY t.tgname) \
              FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal)) \
             FROM pg_catalog.pg_class c WHERE c.oid = to_regclass({name})), 'missing ' || {name})"
        )
    }

    /// `id=phase,...` (ordered by id) of the recorded steps the fingerprint covers: the build's,
    /// and every other step recorded on the models' tables (another build's, an index a struct
    /// no longer declares), so a phase any build changes on these tables is seen.
    pub(super) fn recorded_phases_sql(&self) -> String {
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|(s, t)| format!("({}, {})", lit(s), lit(t)))
            .collect();
        let on_tables = if tables.is_empty() {
            "false".to_string()
        } else {
            format!(
                "(s.table_schema, s.table_name) IN (VALUES {})",
                tables.join(", ")
            )
        };
        format!(
            "(SELECT coalesce(string_agg(s.id || '=' || s.phase, ',' ORDER BY s.id), '') \
             FROM {} s WHERE s.id = ANY({}) OR {on_tables})",
            self.store.table("steps"),
            self.ids_array()
        )
    }

    /// The fingerprint: `md5` of the catalog text of every model's table and of the recorded
    /// phases (see [`FastBoot::recorded_phases_sql`]), as one SQL expression. Texts that
    /// depend on `search_path` (type and index names) make it differ between sessions with
    /// different paths; that only costs a slow boot.
    pub fn fingerprint_sql(&self) -> String {
        let mut parts: Vec<String> = self
            .tables
            .iter()
            .map(|(s, t)| Self::table_sql(s, t))
            .collect();
        parts.extend(self.enum_types.iter().map(|name| {
            format!(
                "'enum ' || {n} || ' ' || coalesce((SELECT string_agg(e.enumlabel::text, ',' ORDER BY e.enumsortorder) \
                 FROM pg_catalog.pg_enum e WHERE e.enumtypid = to_regtype({n})), 'missing')",
                n = lit(name)
            )
        }));
        parts.push(format!("'steps ' || {}", self.recorded_phases_sql()));
        format!("md5(concat_ws(E'\\n', {}))", parts.join(", "))
    }

    /// The fast path's one message, sent with the simple protocol: one round trip.
    ///
    /// 1. The instance is registered exactly as [`Coordinator`]'s heartbeat does (same upsert
    ///    on `instances`; skipped when the state store does not exist, so that the transaction
    ///    does not fail), in its own transaction, committed before the check below takes its
    ///    snapshot. This is the coordinator's rule "register before reading the phases": a
    ///    leader that does not see this instance yet when it waits for acknowledgements has
    ///    committed its phase before the check reads, so the check sees the change and the
    ///    fast path is not taken. An instance serving old code is therefore always either
    ///    visible to a contracting leader, or not served by the fast path.
    /// 2. One `SELECT`: whether the fingerprint recorded for this build equals a fresh one,
    ///    and the recorded phases of the build's steps (`id=phase,...`) for the registry.
    ///
    /// The `SELECT` fails with `undefined_table` while the state store is missing or older
    /// than this version.
    pub fn check_sql(&self, instance: &str) -> String {
        let register = Instances::unless_missing(
            &Instances::new(&self.store.schema).register_sql(instance, &self.step_ids()),
        );
        format!(
            "BEGIN; {register}; COMMIT; \
             SELECT coalesce((SELECT v.fingerprint FROM {verified} v WHERE v.build = {build}) = {fingerprint}, false), \
             (SELECT coalesce(string_agg(s.id || '=' || s.phase, ','), '') FROM {steps} s WHERE s.id = ANY({ids}))",
            verified = self.store.table("verified_builds"),
            build = lit(&self.build),
            fingerprint = self.fingerprint_sql(),
            steps = self.store.table("steps"),
            ids = self.ids_array(),
        )
    }

    /// The fingerprint now.
    pub fn current_sql(&self) -> String {
        format!("SELECT {}", self.fingerprint_sql())
    }

    /// Records the build as verified, with the fingerprint computed now, only if it is still
    /// `expected` (the one taken before the checks ran). Returns a row when it recorded.
    pub fn record_sql(&self, instance: &str, expected: &str) -> String {
        format!(
            "INSERT INTO {verified} (build, fingerprint, instance) \
             SELECT {build}, f.fingerprint, {instance} FROM (SELECT {fingerprint} AS fingerprint) f \
             WHERE f.fingerprint = {expected} \
             ON CONFLICT (build) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
             verified_at = now(), instance = EXCLUDED.instance \
             RETURNING true",
            verified = self.store.table("verified_builds"),
            build = lit(&self.build),
            instance = lit(instance),
            fingerprint = self.fingerprint_sql(),
            expected = lit(expected),
        )
    }

    /// The phase of every step of the build, from the `id=phase,...` text of
    /// [`FastBoot::check_sql`], in plan order; `None` unless every step has a row with a
    /// phase this build knows and that phase is terminal.
    pub fn terminal_phases(&self, text: &str) -> Option<Vec<(&PlannedStep, Phase)>> {
        let recorded: HashMap<&str, &str> = text
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .collect();
        self.steps
            .iter()
            .map(|step| {
                let phase = Phase::parse(recorded.get(step.id.as_str())?)?;
                is_terminal(&step.kind, phase).then_some((step, phase))
            })
            .collect()
    }
}

/// A resolved step a boot would leave alone: terminal, recorded as such, nothing to repair.
fn settled(r: &Resolved) -> bool {
    !r.table_missing
        && !r.abort_leftovers
        && is_terminal(&r.step.kind, r.done)
        && r.recorded == Some(r.done)
}

impl Engine {
    /// The fast path of boot (see the module's documentation): one message on a pooled
    /// connection. `Ok(None)` when it is not taken, and boot goes the slow way, which then
    /// registers the instance itself when it is ready to serve. A database error (the state
    /// store missing or older, a permission) is not taken either: the slow path meets it again
    /// and reports it as it always did. Only a connection error fails.
    pub(super) async fn fast_boot(self: &Arc<Self>) -> Result<Option<Evolution>> {
        let fast = FastBoot::new(&self.store, self.evolver.planned());
        let taken = match self.fast_check(&fast).await? {
            Ok(text) => fast.terminal_phases(&text).ok_or("a step is not terminal"),
            Err(why) => Err(why),
        };
        let phases = match taken {
            Ok(phases) => phases,
            Err(why) => {
                debug!(build = fast.build(), "boot fast path not taken: {why}");
                // The message registered the instance (unless the state store is missing);
                // the slow boot registers it again once it is ready to serve.
                self.forget_registration().await;
                return Ok(None);
            }
        };

        let mut progress = Vec::with_capacity(phases.len());
        for (step, phase) in phases {
            self.registry.set(&step.id, phase);
            progress.push(StepProgress {
                step: step.id.clone(),
                table: step.model.qualified_name(),
                description: step.describe(),
                phase,
                rows_done: 0,
                rows_estimated: 0,
                rows_per_second: 0.0,
            });
        }
        self.progress.reset(progress);

        // The instance is registered already; the coordinator keeps its heartbeat, follows
        // phase changes and acknowledges them from now on.
        let task_inner = self.clone();
        let steps = fast.step_ids();
        tokio::spawn(async move {
            let coordinator = Coordinator::start(
                &task_inner.evolver.pool,
                &task_inner.store.schema,
                task_inner.instance.clone(),
                steps,
                CoordinatorOptions::default().registry(task_inner.registry.clone()),
            )
            .await;
            let _ = task_inner.coordinator.set(coordinator);
        });
        debug!(
            build = fast.build(),
            "boot took the fast path: nothing pending, catalog unchanged"
        );
        let (_, done) = watch::channel(Some(Ok(())));
        self.serve_requests(done.clone(), true);
        Ok(Some(Evolution {
            inner: self.clone(),
            done,
            fast: true,
        }))
    }

    /// Sends [`FastBoot::check_sql`]: the phases text when the recorded fingerprint matches,
    /// otherwise why not.
    pub(super) async fn fast_check(
        &self,
        fast: &FastBoot<'_>,
    ) -> Result<std::result::Result<String, &'static str>> {
        let mut conn = self.evolver.pool.acquire().await?;
        let rows = match sqlx::raw_sql(AssertSqlSafe(fast.check_sql(&self.instance)))
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                // An error inside the message's explicit transaction (other than a missing
                // state table) would leave it open and failed: never hand that connection
                // back to the pool.
                conn.close_on_drop();
                return match e {
                    sqlx::Error::Database(db) => {
                        debug!(code = ?db.code(), error = %db, "the state store cannot answer the boot fast path");
                        Ok(Err("the state store is missing or older"))
                    }
                    e => Err(e.into()),
                };
            }
        };
        drop(conn);
        let Some(row) = rows.last() else {
            return Ok(Err("no answer"));
        };
        Ok(
            match (row.try_get::<bool, _>(0), row.try_get::<String, _>(1)) {
                (Ok(true), Ok(text)) => Ok(text),
                (Ok(false), _) => {
                    Err("build not verified, or the catalog or a phase changed since")
                }
                _ => Err("unexpected answer"),
            },
        )
    }

    /// [`Engine::record_verified`] when every step is terminal in this instance's view (a
    /// cheap test first; the recording checks again against the database). Call it only under
    /// the leader lock.
    pub(super) async fn record_verified_if_done(&self) {
        if self.all_terminal_here() {
            self.record_verified().await;
        }
    }

    /// Whether every step is terminal in this instance's view.
    pub(super) fn all_terminal_here(&self) -> bool {
        self.evolver
            .planned()
            .iter()
            .flat_map(|p| &p.steps)
            .all(|step| {
                self.progress
                    .phase(&step.id)
                    .is_some_and(|phase| is_terminal(&step.kind, phase))
            })
    }

    /// Records the build as verified for the fast path, when a boot would find nothing to do.
    /// Call it only under the leader lock. A failure is logged, never returned.
    pub(super) async fn record_verified(&self) {
        match self.try_record_verified().await {
            Ok(Ok(())) => info!(
                build = build_key(&self.evolver.models),
                "every step is done: the next boot of this build takes the fast path"
            ),
            Ok(Err(reason)) => debug!("build not recorded as verified: {reason}"),
            Err(e) => {
                warn!(error = %e, "could not record the build as verified; the next boot takes the slow path")
            }
        }
    }

    /// The fingerprint first, then the slow path's own checks (drift, every step terminal and
    /// recorded, no removed index left to drop), then the row, written only if the fingerprint
    /// has not changed meanwhile: what is recorded is a state the checks accepted.
    pub(super) async fn try_record_verified(
        &self,
    ) -> Result<std::result::Result<(), &'static str>> {
        let fast = FastBoot::new(&self.store, self.evolver.planned());
        let mut conn = self.evolver.pool.acquire().await?;
        let before: String = sqlx::raw_sql(AssertSqlSafe(fast.current_sql()))
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        drop(conn);
        let resolved = match self.resolve_all().await {
            Ok((resolved, _)) => resolved,
            Err(e) if matches!(e.kind(), ErrorKind::Drift(_)) => {
                return Ok(Err("the database does not match the models"));
            }
            Err(e) => return Err(e),
        };
        if !resolved.iter().all(settled) {
            return Ok(Err("a step is not done, or not recorded as done"));
        }
        let removed = crate::concurrent::removed_indexes(
            &self.evolver.pool,
            &self.store,
            self.evolver.planned(),
        )
        .await?;
        if !removed.is_empty() {
            return Ok(Err("an index removed from a struct is still to be dropped"));
        }
        let mut conn = self.evolver.pool.acquire().await?;
        let recorded = sqlx::raw_sql(AssertSqlSafe(fast.record_sql(&self.instance, &before)))
            .fetch_optional(&mut *conn)
            .await?;
        Ok(match recorded {
            Some(_) => Ok(()),
            None => Err("the catalog or a phase changed while it was checked"),
        })
    }

    /// Removes the registration the fast path's message made (it registers before it checks)
    /// when the fast path is not taken: until the slow boot is ready to serve and its
    /// coordinator registers, a leader has no reason to wait for this instance. Best effort.
    pub(super) async fn forget_registration(&self) {
        let sql = Instances::new(&self.store.schema).deregister_sql(&self.instance);
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.evolver.pool)
            .await
        {
            debug!(error = %e, "could not remove the fast path's registration");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ColumnSpec;

    static COLUMNS: [ColumnSpec; 1] = [ColumnSpec {
        field: "id",
        name: "id",
        sql_type: "bigint",
        primary_key: true,
        ..ColumnSpec::DEFAULT
    }];
    const USERS: ModelSpec = ModelSpec {
        rust_name: "User",
        table: "users",
        columns: &COLUMNS,
        ..ModelSpec::DEFAULT
    };

    #[test]
    pub(super) fn the_build_key_follows_every_declaration() {
        let key = build_key(&[USERS]);
        assert_eq!(key.len(), 16);
        assert_eq!(key, build_key(&[USERS]), "stable");
        let renamed = ModelSpec {
            table: "people",
            ..USERS
        };
        assert_ne!(key, build_key(&[renamed]));
        static NULLABLE: [ColumnSpec; 1] = [ColumnSpec {
            nullable: true,
            ..COLUMNS[0]
        }];
        let nullable = ModelSpec {
            columns: &NULLABLE,
            ..USERS
        };
        assert_ne!(key, build_key(&[nullable]), "a field's type counts");
        assert_ne!(key, build_key(&[USERS, USERS]));
    }

    #[test]
    pub(super) fn the_message_registers_before_it_reads() {
        let store = StateStore::new("my state");
        let fast = FastBoot::new(&store, &[Plan::for_model(&USERS), Plan::for_model(&USERS)]);
        assert_eq!(fast.tables, [("public", "users")], "each table once");
        let sql = fast.check_sql("web-1");
        let register = sql.find("INSERT INTO \"my state\".\"instances\"").unwrap();
        let commit = sql.find("COMMIT;").unwrap();
        let check = sql.find("\"my state\".\"verified_builds\"").unwrap();
        assert!(sql.starts_with("BEGIN; "));
        assert!(register < commit && commit < check, "{sql}");
        assert!(sql.contains("to_regclass('\"public\".\"users\"')"), "{sql}");
    }

    #[test]
    pub(super) fn phases_must_all_be_terminal() {
        let store = StateStore::new("pgevolve");
        let fast = FastBoot::new(&store, &[Plan::for_model(&USERS)]);
        let id = fast.steps[0].id.clone();
        let last = fast.steps[0].kind.last_phase();
        let ok = format!("{id}={last},ffff=pending");
        let phases = fast.terminal_phases(&ok).expect("terminal");
        assert_eq!(phases.len(), 1);
        assert_eq!(phases[0].1, last);
        assert!(fast.terminal_phases(&format!("{id}=aborted")).is_some());
        assert!(fast.terminal_phases(&format!("{id}=pending")).is_none());
        assert!(fast.terminal_phases(&format!("{id}=bogus")).is_none());
        assert!(fast.terminal_phases("").is_none(), "a step without a row");
    }
}
