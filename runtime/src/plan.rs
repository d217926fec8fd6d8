//! The reviewable plan: every step a model can need, each phase with its exact SQL.

use std::fmt;

pub use crate::kinds::PlannedPhase;
pub(crate) use crate::kinds::Shown;

use crate::kinds;
use crate::spec::ModelSpec;
use crate::sql::backfill::FillColumn;
use crate::sql::{self, Statement};
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
    /// For a step with a backfill phase, what the backfill will cost (rows to fill, duration,
    /// WAL), estimated from the table's statistics and the last measured fill rate
    /// ([`Evolver::plans_for_database`]; see [`crate::estimate`]); `None` in a plan made without
    /// a database, or when the table does not exist yet.
    ///
    /// [`Evolver::plans_for_database`]: crate::Evolver::plans_for_database
    pub estimate: Option<crate::estimate::BackfillEstimate>,
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
        .flat_map(|f| std::iter::once(f.written()).chain(f.marker.as_deref()))
        .collect();
    Ok(BatchTriggers::classify(
        live,
        &role,
        skip_user_triggers,
        &set,
    ))
}

/// The fixed note of a plan made without a database, under every backfill phase.
const TRIGGERS_NOTE: &str = "user triggers on the table fire for every batch unless BackfillOptions::skip_user_triggers is set";

impl Plan {
    /// The steps the model declares. At boot, steps the live catalog already satisfies are skipped.
    pub fn for_model(model: &ModelSpec) -> Plan {
        Plan::shown(model, &Shown::default())
    }

    /// The plan with its backfill batches as an evolver runs them.
    pub(crate) fn shown(model: &ModelSpec, shown: &Shown) -> Plan {
        let mut steps: Vec<PlannedStep> = kinds::of_model(model)
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

/// Steps whose backfills share a pass show the pass's batch (what runs when they are pending
/// together, e.g. on a first deploy).
fn show_passes(model: &ModelSpec, steps: &mut [PlannedStep], shown: &Shown) {
    let mut pending: Vec<FillColumn> = steps.iter().filter_map(PlannedStep::fill).collect();
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
                *phase = kinds::backfill_phase(model, &pass, shown);
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
        let room = kinds::room(&kind);
        PlannedStep {
            phases: room.plan(&model, &id, shown),
            abort: room.abort(&model, &id),
            id,
            kind,
            model,
            batch_triggers: None,
            estimate: None,
        }
    }

    /// Everything about the step's kind (see `kinds`).
    pub(crate) fn room(&self) -> Box<dyn kinds::Kind> {
        kinds::room(&self.kind)
    }

    /// The column the step's backfill fills, if it has a backfill phase.
    pub(crate) fn fill(&self) -> Option<FillColumn> {
        self.room().fill(&self.model, &self.id)
    }

    /// The index the step builds, if it builds one.
    pub(crate) fn index(&self) -> Option<crate::sql::index::IndexDef> {
        self.room().index(&self.model, &self.id)
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
        self.room().describe(&self.model, &self.id)
    }

    /// The index or constraint the step creates, if any: the name recorded in the state store.
    pub(crate) fn object_name(&self) -> Option<String> {
        self.room().object_name(&self.model, &self.id)
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
                match &statement.unless {
                    Some(sql::Exists::Constraint(name)) => {
                        writeln!(f, "    -- skipped when constraint {name} exists")?
                    }
                    Some(sql::Exists::Type(name)) => {
                        writeln!(f, "    -- skipped when type {name} exists")?
                    }
                    _ => {}
                }
            }
            if phase.phase == Phase::Backfill {
                if let Some(estimate) = &self.estimate {
                    writeln!(f, "    -- cost: {estimate}")?;
                }
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
        {
            let mut lines = self.room().plan_notes(&self.model).into_iter();
            if let Some(first) = lines.next() {
                writeln!(f, "  {first}:")?;
            }
            for line in lines {
                writeln!(f, "    {line}")?;
            }
        }
        if self.abort.iter().any(sql::Statement::is_concurrent) {
            let note = if self.abort.iter().all(sql::Statement::is_concurrent) {
                "outside any transaction, lock_timeout = 0 (SHARE UPDATE EXCLUSIVE)"
            } else {
                "the constraint in one short transaction under lock_timeout, then the index outside any transaction"
            };
            writeln!(f, "  abort (on request): {note}")?;
            for statement in &self.abort {
                writeln!(f, "    {}", statement.sql)?;
            }
        } else if let Some(prep) = self.room().abort_preparation(&self.model, &self.id) {
            writeln!(
                f,
                "  abort (before contract, on request): when this is true (otherwise only the last transaction, which then does nothing)"
            )?;
            writeln!(f, "    {}", prep.needed)?;
            writeln!(
                f,
                "  it is refused, changing nothing, while this count is not zero:"
            )?;
            writeln!(f, "    {}", prep.count)?;
            writeln!(
                f,
                "  then a short transaction under lock_timeout, and the validation in one of its own (SHARE UPDATE EXCLUSIVE: writes go on; the check is dropped again if it fails):"
            )?;
            for statement in [&prep.add, &prep.validate] {
                writeln!(f, "    {}", statement.sql)?;
            }
            writeln!(
                f,
                "  then one short transaction under lock_timeout (no scan: the check is validated):"
            )?;
            for statement in &self.abort {
                for line in statement.sql.lines() {
                    writeln!(f, "    {line}")?;
                }
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
