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
}

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
        let mut steps: Vec<PlannedStep> = step_kinds(model)
            .into_iter()
            .map(|kind| PlannedStep::new(*model, kind))
            .collect();
        show_passes(model, &mut steps);
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
fn backfill_phase(model: &ModelSpec, fills: &[FillColumn]) -> PlannedPhase {
    PlannedPhase {
        phase: Phase::Backfill,
        note: "one pass over the table for every column it backfills: keyset batches up to the highest key at start, \
               each batch one statement that also writes its checkpoint, cancelled and retried smaller past the batch timeout; \
               later rows are filled by the triggers",
        statements: vec![Statement::always(sql::backfill::batch(
            model,
            fills,
            SHOWN_STATE_TABLE,
            crate::options::DdlOptions::default().lock_timeout,
            crate::options::BackfillOptions::default().batch_timeout,
            Bounds::Placeholders,
        ))],
    }
}

/// Steps whose backfills share a pass show the pass's batch (what runs when they are pending
/// together, e.g. on a first deploy).
fn show_passes(model: &ModelSpec, steps: &mut [PlannedStep]) {
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
                *phase = backfill_phase(model, &pass);
            }
        }
    }
}

impl PlannedStep {
    pub(crate) fn new(model: ModelSpec, kind: StepKind) -> PlannedStep {
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
                    phases.push(backfill_phase(&model, &[fill]));
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
