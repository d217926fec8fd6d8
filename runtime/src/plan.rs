//! The reviewable plan: every step a model can need, each phase with its exact SQL.

use std::fmt;

use crate::spec::{Fill, ModelSpec};
use crate::sql::backfill::{Bounds, FillColumn};
use crate::sql::{self, Helpers, RenameHelpers, Statement, rename};
use crate::step::{Phase, StepId, StepKind};

/// Every step of one model, in the order they run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The model the plan was made from.
    pub model: ModelSpec,
    /// The steps, in order.
    pub steps: Vec<PlannedStep>,
}

/// One step: its id, what it does, and its phases.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// Content-derived id, the same in every build.
    pub id: StepId,
    /// What the step does.
    pub kind: StepKind,
    /// The model the step belongs to.
    pub model: ModelSpec,
    /// The phases, in order, each with its SQL.
    pub phases: Vec<PlannedPhase>,
    /// What undoes the step before its contract (empty: the step cannot be aborted).
    pub abort: Vec<Statement>,
    /// For a step with a backfill phase, the application's own triggers its batches fire, as
    /// the live catalog shows them ([`Evolver::plans_for_database`]); `None` in a plan made
    /// without a database ([`Plan::for_model`]), which shows a fixed note instead.
    ///
    /// [`Evolver::plans_for_database`]: crate::Evolver::plans_for_database
    pub batch_triggers: Option<BatchTriggers>,
}

/// The application's own `UPDATE` triggers on a backfilled table, as one batch meets them. A
/// batch is an `UPDATE` of a key range: it fires every enabled `UPDATE` trigger of the table,
/// per row it fills (row triggers) or once (statement triggers), unless
/// [`BackfillOptions::skip_user_triggers`](crate::BackfillOptions::skip_user_triggers) is set.
/// pgevolve's own helper triggers and PostgreSQL's internal ones (foreign keys) are not listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTriggers {
    /// Batches run with `session_replication_role = replica`.
    pub skip_user_triggers: bool,
    /// The triggers every batch fires, by name.
    pub fired: Vec<UserTrigger>,
    /// The triggers it does not fire, by name, each with why.
    pub not_fired: Vec<(UserTrigger, &'static str)>,
}

/// One of the application's own `UPDATE` triggers on a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTrigger {
    /// The trigger's name.
    pub name: String,
    /// `BEFORE` or `AFTER`.
    pub timing: &'static str,
    /// `FOR EACH ROW`: fires once per row a batch fills; otherwise once per batch.
    pub per_row: bool,
    /// The columns of `UPDATE OF ...`; empty: every update.
    pub columns: Vec<String>,
    /// Has a `WHEN` condition: fires only for the rows it holds for.
    pub conditional: bool,
}

impl UserTrigger {
    /// `name (AFTER UPDATE, per row)`, with `why` appended inside the parentheses.
    fn describe(&self, why: Option<&str>) -> String {
        let mut out = format!("{} ({} UPDATE", self.name, self.timing);
        if !self.columns.is_empty() {
            out.push_str(&format!(" OF {}", self.columns.join(", ")));
        }
        out.push_str(if self.per_row {
            ", per row"
        } else {
            ", once per batch"
        });
        if self.conditional {
            out.push_str(", when its WHEN condition holds");
        }
        if let Some(why) = why {
            out.push_str(&format!("; {why}"));
        }
        out.push(')');
        out
    }
}

impl fmt::Display for UserTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(None))
    }
}

impl BatchTriggers {
    /// Which of the table's `UPDATE` triggers a batch fires: it runs in `session_role` (or in
    /// `replica` with `skip`) and its `SET` list names `set_columns`.
    pub(crate) fn classify(
        live: Vec<crate::catalog::LiveTrigger>,
        session_role: &str,
        skip: bool,
        set_columns: &[&str],
    ) -> BatchTriggers {
        let replica = skip || session_role == "replica";
        let mut out = BatchTriggers {
            skip_user_triggers: skip,
            fired: Vec::new(),
            not_fired: Vec::new(),
        };
        for t in live {
            let trigger = UserTrigger {
                timing: if t.tgtype & 2 != 0 { "BEFORE" } else { "AFTER" },
                per_row: t.tgtype & 1 != 0,
                name: t.name,
                columns: t.columns,
                conditional: t.conditional,
            };
            let why = match t.enabled.as_str() {
                "D" => Some("disabled"),
                "R" if !replica => Some("ENABLE REPLICA: fires only in replica mode"),
                "O" if replica && skip => Some("skipped: skip_user_triggers"),
                "O" if replica => {
                    Some("skipped: the session's session_replication_role is replica")
                }
                _ => None,
            };
            let why = why.or_else(|| {
                (!trigger.columns.is_empty()
                    && !trigger
                        .columns
                        .iter()
                        .any(|c| set_columns.contains(&c.as_str())))
                .then_some("UPDATE OF columns the batch does not set")
            });
            match why {
                Some(why) => out.not_fired.push((trigger, why)),
                None => out.fired.push(trigger),
            }
        }
        out
    }

    /// The triggers every batch fires, as one line (`none` when there is none).
    pub fn fired_list(&self) -> String {
        if self.fired.is_empty() {
            return "none".into();
        }
        let names: Vec<String> = self.fired.iter().map(|t| t.describe(None)).collect();
        names.join(", ")
    }

    /// The triggers the batches do not fire, with why, as one line (`none` when there is none).
    pub fn not_fired_list(&self) -> String {
        if self.not_fired.is_empty() {
            return "none".into();
        }
        let names: Vec<String> = self
            .not_fired
            .iter()
            .map(|(t, why)| t.describe(Some(why)))
            .collect();
        names.join(", ")
    }

    /// The lines a plan shows under a backfill phase.
    fn lines(&self) -> Vec<String> {
        let mut out = vec![if self.fired.is_empty() {
            "each batch fires no user trigger".to_string()
        } else {
            format!("each batch fires user triggers: {}", self.fired_list())
        }];
        if !self.not_fired.is_empty() {
            out.push(format!(
                "not fired by the batches: {}",
                self.not_fired_list()
            ));
        }
        out
    }
}

/// The user triggers a batch filling `fills` on `model`'s table meets, from the live catalog.
pub(crate) async fn read_batch_triggers(
    conn: &mut sqlx::PgConnection,
    model: &ModelSpec,
    fills: &[FillColumn],
    skip_user_triggers: bool,
) -> sqlx::Result<BatchTriggers> {
    let (live, role) = crate::catalog::update_triggers(conn, model).await?;
    let set: Vec<&str> = fills
        .iter()
        .flat_map(|f| std::iter::once(f.column.name).chain(f.marker.as_deref()))
        .collect();
    Ok(BatchTriggers::classify(
        live,
        &role,
        skip_user_triggers,
        &set,
    ))
}

/// What a plan's backfill phases show: the defaults (a plan made without an evolver), or the
/// options an evolver runs them with.
#[derive(Debug, Clone)]
pub(crate) struct Shown {
    pub steps_table: String,
    pub lock_timeout: std::time::Duration,
    pub batch_timeout: std::time::Duration,
    pub skip_user_triggers: bool,
}

impl Default for Shown {
    fn default() -> Shown {
        Shown {
            steps_table: SHOWN_STATE_TABLE.to_string(),
            lock_timeout: crate::options::DdlOptions::default().lock_timeout,
            batch_timeout: crate::options::BackfillOptions::default().batch_timeout,
            skip_user_triggers: false,
        }
    }
}

/// The fixed note of a plan made without a database, under every backfill phase.
const TRIGGERS_NOTE: &str = "user triggers on the table fire for every batch unless BackfillOptions::skip_user_triggers is set";

/// One phase of a step.
#[derive(Debug, Clone)]
pub struct PlannedPhase {
    /// Which phase.
    pub phase: Phase,
    /// How it runs, for reviewers.
    pub note: &'static str,
    /// The statements, in order.
    pub statements: Vec<Statement>,
}

/// The kinds of the steps a model declares, in plan order, without building any SQL.
pub(crate) fn step_kinds(model: &ModelSpec) -> Vec<StepKind> {
    let mut kinds = vec![StepKind::CreateTable];
    // A generated column is created with its table only: adding an identity to a live table
    // fills every row under an exclusive lock, so a missing one is drift (see `resolve`).
    for column in model
        .columns
        .iter()
        .filter(|c| !c.primary_key && !c.generated)
    {
        if column.renamed_from.is_some() {
            kinds.push(StepKind::RenameColumn(column));
        } else if column.nullable {
            kinds.push(StepKind::AddNullableColumn(column));
        } else if column.fill != Fill::None {
            kinds.push(StepKind::AddFilledColumn(column));
        }
    }
    kinds.extend(model.indexes.iter().map(StepKind::CreateIndex));
    kinds.extend(sql::constraint::constraint_kinds(model));
    kinds
}

impl Plan {
    /// The steps the model declares. At boot, steps the live catalog already satisfies are skipped.
    pub fn for_model(model: &ModelSpec) -> Plan {
        Plan::shown(model, &Shown::default())
    }

    /// The plan with its backfill batches as an evolver runs them.
    pub(crate) fn shown(model: &ModelSpec, shown: &Shown) -> Plan {
        let mut steps: Vec<PlannedStep> = step_kinds(model)
            .into_iter()
            .map(|kind| PlannedStep::shown(*model, kind, shown))
            .collect();
        show_passes(model, &mut steps, shown);
        Plan {
            model: *model,
            steps,
        }
    }

    /// The step with this id.
    pub fn step(&self, id: &StepId) -> Option<&PlannedStep> {
        self.steps.iter().find(|s| &s.id == id)
    }
}

/// The state schema a plan's batches show (the runtime uses the evolver's).
const SHOWN_STATE_TABLE: &str = "\"pgevolve\".\"steps\"";

/// A backfill phase whose batch fills `fills` in one pass (as shown in plans: placeholders, the
/// default timeouts and state schema).
fn backfill_phase(model: &ModelSpec, fills: &[FillColumn], shown: &Shown) -> PlannedPhase {
    PlannedPhase {
        phase: Phase::Backfill,
        note: "one pass over the table for every column it backfills: keyset batches up to the highest key at start, \
               each batch one statement that also writes its checkpoint, cancelled and retried smaller past the batch timeout; \
               later rows are filled by the triggers",
        statements: vec![Statement::always(sql::backfill::batch(
            model,
            fills,
            &shown.steps_table,
            shown.lock_timeout,
            shown.batch_timeout,
            shown.skip_user_triggers,
            Bounds::Placeholders,
        ))],
    }
}

/// Steps whose backfills share a pass show the pass's batch (what runs when they are pending
/// together, e.g. on a first deploy).
fn show_passes(model: &ModelSpec, steps: &mut [PlannedStep], shown: &Shown) {
    let mut pending: Vec<FillColumn> = steps.iter().filter_map(FillColumn::of).collect();
    while !pending.is_empty() {
        let pass = sql::backfill::pass(&pending);
        pending.retain(|f| !pass.iter().any(|p| p.step == f.step));
        if pass.len() < 2 {
            continue;
        }
        for step in steps
            .iter_mut()
            .filter(|s| pass.iter().any(|p| p.step == s.id))
        {
            if let Some(phase) = step.phases.iter_mut().find(|p| p.phase == Phase::Backfill) {
                *phase = backfill_phase(model, &pass, shown);
            }
        }
    }
}

impl PlannedStep {
    pub(crate) fn new(model: ModelSpec, kind: StepKind) -> PlannedStep {
        PlannedStep::shown(model, kind, &Shown::default())
    }

    fn shown(model: ModelSpec, kind: StepKind, shown: &Shown) -> PlannedStep {
        let id = StepId::for_step(&model, &kind);
        let abort = match kind {
            StepKind::AddFilledColumn(c) => {
                sql::abort_filled_column(&model, c, &Helpers::new(&model, c, &id))
            }
            StepKind::RenameColumn(c) => {
                rename::abort(&model, c, &RenameHelpers::new(&model, c, &id))
            }
            StepKind::CreateIndex(_) | StepKind::AddUnique(_) => {
                sql::index::abort(&model, &kind, &id)
            }
            StepKind::AddForeignKey(_) | StepKind::AddCheck(_) => {
                sql::constraint::abort(&model, &kind, &id)
            }
            _ => Vec::new(),
        };
        let phases = match kind {
            StepKind::CreateIndex(_) | StepKind::AddUnique(_) | StepKind::DropIndex(_) => {
                sql::index::phases(&model, &kind, &id)
            }
            StepKind::AddForeignKey(_) | StepKind::AddCheck(_) => {
                sql::constraint::phases(&model, &kind, &id)
            }
            StepKind::CreateTable => vec![PlannedPhase {
                phase: Phase::Expand,
                note: "only when the table does not exist; the column steps below are then already satisfied",
                statements: sql::create_table(&model),
            }],
            StepKind::AddNullableColumn(c) => vec![PlannedPhase {
                phase: Phase::Expand,
                note: "metadata only, one short transaction under lock_timeout",
                statements: sql::add_nullable_column(&model, c),
            }],
            StepKind::AddFilledColumn(c) => {
                let helpers = Helpers::new(&model, c, &id);
                let mut phases = vec![PlannedPhase {
                    phase: Phase::Expand,
                    note: "one short transaction under lock_timeout, retried with backoff",
                    statements: sql::expand_filled_column(&model, c, &helpers),
                }];
                if let Some(fill) = FillColumn::backfill(&model, &id, c) {
                    phases.push(backfill_phase(&model, &[fill], shown));
                }
                phases.push(PlannedPhase {
                    phase: Phase::Validate,
                    note: "SHARE UPDATE EXCLUSIVE: reads and writes continue; the validated check proves no NULL is left",
                    statements: sql::validate_filled_column(&model, &helpers),
                });
                phases.push(PlannedPhase {
                    phase: Phase::Contract,
                    note: "gated (explicit contract() or auto_contract); one short transaction, SET NOT NULL uses the validated check and does not scan",
                    statements: sql::contract_filled_column(&model, c, &helpers),
                });
                phases
            }
            StepKind::RenameColumn(c) => {
                let h = RenameHelpers::new(&model, c, &id);
                let old = c.renamed_from.unwrap_or(c.name);
                vec![
                    PlannedPhase {
                        phase: Phase::Expand,
                        note: "one short transaction under lock_timeout: new column, sync trigger (both names stay equal for writers that set one), compatibility view with the new names",
                        statements: rename::expand(&model, c, &h),
                    },
                    backfill_phase(
                        &model,
                        &[FillColumn {
                            step: id.clone(),
                            column: c,
                            expr: crate::ident::Ident(old).to_string(),
                            marker: None,
                        }],
                        shown,
                    ),
                    PlannedPhase {
                        phase: Phase::Validate,
                        note: "the NOT NULL check is validated (writes go on), then no row may differ between the two columns",
                        statements: rename::validate(&model, c, &h),
                    },
                    PlannedPhase {
                        phase: Phase::Switch,
                        note: "no DDL: accessors of every instance read the new column; writes still go to both",
                        statements: Vec::new(),
                    },
                    PlannedPhase {
                        phase: Phase::Retire,
                        note: "no DDL: accessors stop writing the old column; contract waits until every live instance acknowledged",
                        statements: Vec::new(),
                    },
                    PlannedPhase {
                        phase: Phase::Contract,
                        note: "gated, one short transaction: NOT NULL through the validated check, view, trigger and old column dropped",
                        statements: rename::contract(&model, c, &h),
                    },
                ]
            }
        };
        PlannedStep {
            id,
            kind,
            model,
            phases,
            abort,
            batch_triggers: None,
        }
    }

    /// The SQL of one phase, empty when the step has no such phase.
    pub fn statements(&self, phase: Phase) -> &[Statement] {
        self.phases
            .iter()
            .find(|p| p.phase == phase)
            .map(|p| p.statements.as_slice())
            .unwrap_or(&[])
    }

    /// A one-line description: kind, table and column.
    pub fn describe(&self) -> String {
        let table = self.model.qualified_name();
        match self.kind {
            StepKind::CreateTable => format!("create table {table}"),
            StepKind::AddNullableColumn(c) => {
                format!("add nullable column {table}.{} {}", c.name, c.sql_type)
            }
            StepKind::AddFilledColumn(c) => match c.fill {
                Fill::Default(e) => format!(
                    "add column {table}.{} {} NOT NULL DEFAULT {e}",
                    c.name, c.sql_type
                ),
                Fill::Backfill(e) => format!(
                    "add column {table}.{} {} NOT NULL, backfilled from {e}",
                    c.name, c.sql_type
                ),
                Fill::None => format!("add column {table}.{}", c.name),
            },
            StepKind::RenameColumn(c) => format!(
                "rename column {table}.{} to {}",
                c.renamed_from.unwrap_or(c.name),
                c.name
            ),
            StepKind::CreateIndex(_) | StepKind::AddUnique(_) | StepKind::DropIndex(_) => {
                sql::index::describe(&self.model, &self.kind, &self.id)
            }
            StepKind::AddForeignKey(_) | StepKind::AddCheck(_) => {
                sql::constraint::describe(&self.model, &self.kind, &self.id)
            }
        }
    }

    /// The index or constraint the step creates, if any: the name recorded in the state store.
    pub(crate) fn object_name(&self) -> Option<String> {
        sql::index::object_name(&self.model, &self.kind, &self.id)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan for {} (table {})",
            self.model.rust_name,
            self.model.qualified_name()
        )?;
        for step in &self.steps {
            write!(f, "\n{step}")?;
        }
        Ok(())
    }
}

impl fmt::Display for PlannedStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "step {}: {}", self.id, self.describe())?;
        for phase in &self.phases {
            writeln!(f, "  {}: {}", phase.phase, phase.note)?;
            for statement in &phase.statements {
                for line in statement.sql.lines() {
                    writeln!(f, "    {line}")?;
                }
                if let Some(sql::Exists::Constraint(name)) = &statement.unless {
                    writeln!(f, "    -- skipped when constraint {name} exists")?;
                }
            }
            if phase.phase == Phase::Backfill {
                match &self.batch_triggers {
                    None => writeln!(f, "    -- {TRIGGERS_NOTE}")?,
                    Some(triggers) => {
                        for line in triggers.lines() {
                            writeln!(f, "    -- {line}")?;
                        }
                    }
                }
            }
        }
        if let StepKind::RenameColumn(column) = self.kind {
            let mut lines = sql::carry::plan_lines(&self.model, column).into_iter();
            if let Some(first) = lines.next() {
                writeln!(f, "  {first}:")?;
            }
            for line in lines {
                writeln!(f, "    {line}")?;
            }
        }
        if self.abort.iter().any(sql::index::is_concurrent) {
            let note = if self.abort.iter().all(sql::index::is_concurrent) {
                "outside any transaction, lock_timeout = 0 (SHARE UPDATE EXCLUSIVE)"
            } else {
                "the constraint in one short transaction under lock_timeout, then the index outside any transaction"
            };
            writeln!(f, "  abort (on request): {note}")?;
            for statement in &self.abort {
                writeln!(f, "    {}", statement.sql)?;
            }
        } else if !self.abort.is_empty() {
            writeln!(
                f,
                "  abort (before contract, on request): one short transaction under lock_timeout"
            )?;
            for statement in &self.abort {
                writeln!(f, "    {}", statement.sql)?;
            }
        }
        Ok(())
    }
}
