//! One room per step kind. Everything a kind of step *is* lives in its own file here, behind
//! the [`Kind`] trait: its phases and their statements, what undoes it, its id parameters, the
//! line that describes it, how accessors read and write its column in each phase, what its
//! backfill fills and its validation counts, and which engine runs each of its phases.
//!
//! Adding a kind: a variant of [`StepKind`] (the data a step of that kind carries), a file here
//! implementing [`Kind`], and one line in [`room`]. Nothing else in the runtime matches on the
//! kind. The renderers in `sql/` are leaves these files call; the planner, the engine and the
//! accessors sit above and ask the room.

mod catalog_object;
mod change_type;
mod change_type_in_place;
mod check;
mod computed_column;
mod create_table;
mod drop_column;
mod drop_index;
mod drop_not_null;
mod drop_table;
mod enum_rename;
mod enum_type;
mod enum_value;
mod filled_column;
mod foreign_key;
mod index;
mod nullable_column;
mod rename_column;
mod rename_table;
mod resolving;
mod set_default;
mod set_not_null;
mod unique;
pub(crate) mod widen_key;
pub(crate) mod widen_reference;

pub(crate) use drop_table::{dropped_table_conflicts, dropped_table_model};
pub(crate) use rename_column::read_carry;
pub(crate) use rename_table::{is_table, relations as table_relations, renamed_under};
pub(crate) use resolving::{Problems, Recorded, Resolving};

use crate::error::Result;
use crate::spec::{ColumnSpec, Fill, ModelSpec};
use crate::sql::backfill::{Bounds, FillColumn};
use crate::sql::index::IndexDef;
use crate::sql::{self, Statement};
use crate::step::{Phase, StepId, StepKind, fnv1a};
use resolving::BoxFuture;

/// Everything about one kind of step. Defaults describe a kind without that aspect (no column,
/// no abort, no backfill, no data check, plain statement phases).
pub(crate) trait Kind: Send + Sync {
    /// The kind's name in the state store.
    fn name(&self) -> &'static str;

    /// The kind's parameters that make a step's id (with its name, schema and table). Pinned:
    /// changing them would orphan every recorded step of the kind.
    fn identity(&self) -> Vec<&str>;

    /// The phases the kind goes through, in order (without `Pending`).
    fn phases(&self) -> &'static [Phase];

    /// The phases with their statements and notes, as plans show them and the engine runs them.
    fn plan(&self, model: &ModelSpec, id: &StepId, shown: &Shown) -> Vec<PlannedPhase>;

    /// One line for plans and status.
    fn describe(&self, model: &ModelSpec, id: &StepId) -> String;

    /// The column the step adds or renames, if any.
    fn column(&self) -> Option<&'static ColumnSpec> {
        None
    }

    /// Whether the step creates its whole table (then every other step of the model is complete
    /// with it, and a table that exists is no work).
    fn creates_table(&self) -> bool {
        false
    }

    /// The table a constraint the step adds points to (`schema`, `table`): the role needs
    /// `REFERENCES` on it.
    fn referenced_table(&self, _model: &ModelSpec) -> Option<(&'static str, &'static str)> {
        None
    }

    /// Whether boot runs the expand before returning (additive, metadata-only DDL). Kinds whose
    /// expand takes long (a concurrent index build) run it in the background instead.
    fn expands_at_boot(&self) -> bool {
        true
    }

    /// What undoes the step before its contract, in order.
    fn abort(&self, _model: &ModelSpec, _id: &StepId) -> Vec<Statement> {
        Vec::new()
    }

    /// What must hold before an abort is recorded, and the scans that prepare its DDL: run by
    /// the engine first, so an abort it refuses changes nothing.
    fn abort_preparation(&self, _model: &ModelSpec, _id: &StepId) -> Option<AbortPreparation> {
        None
    }

    /// The index or constraint the step creates: the name recorded in the state store.
    fn object_name(&self, _model: &ModelSpec, _id: &StepId) -> Option<String> {
        None
    }

    /// What the step contributes to the `CREATE TABLE` of a new table (which is empty and
    /// invisible until it commits, so everything is created valid at once).
    fn in_new_table(&self, _model: &ModelSpec, _id: &StepId) -> Option<NewTablePart> {
        None
    }

    /// The last phase the step completed, judged on the live catalog and the state store (the
    /// catalog wins where the store cannot know: work done by hand, or by a process that died
    /// before recording it). Drift goes to `cx.problems`. Runs before any DDL: reads only.
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>>;

    /// Whether an aborted step left behind what its abort drops (the abort was interrupted):
    /// then the abort's statements run again.
    fn abort_leftovers<'a>(
        &'a self,
        _cx: &'a mut Resolving<'_, '_>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }

    /// Whether a step between expand and contract lacks a helper its expand creates (expanded by
    /// an older pgevolve): boot runs the expand's statements again, each idempotent.
    fn expand_incomplete(&self, _cx: &Resolving<'_, '_>, _done: Phase) -> bool {
        false
    }

    /// The index the step builds, if it builds one.
    fn index(&self, _model: &ModelSpec, _id: &StepId) -> Option<IndexDef> {
        None
    }

    /// The column its backfill fills, if it has a backfill phase.
    fn fill(&self, _model: &ModelSpec, _id: &StepId) -> Option<FillColumn> {
        None
    }

    /// The step whose phase the accessors of the step's column follow, when it is not this one
    /// (a reference widened by its key's step, `widen_reference`): `access` then gets that
    /// step's phase, `Pending` when this process does not know it.
    fn follows(&self, _model: &ModelSpec) -> Option<StepId> {
        None
    }

    /// How accessors read and write the step's column in `phase`; `None`: as a plain column.
    fn access(&self, _phase: Phase) -> Option<FieldAccess> {
        None
    }

    /// The column the accessors name in `phase` that the step's contract renames (a type
    /// change's new column): a statement built before the contract's commit and run after it
    /// finds no such column, and the accessor runs it again with the contract's SQL (see
    /// `access::retry`).
    fn renamed_at_contract(&self, _phase: Phase) -> Option<RenamedAtContract> {
        None
    }

    /// The data checks of the validate phase.
    fn verifications(&self, _model: &ModelSpec) -> Vec<Verification> {
        Vec::new()
    }

    /// Which engine runs `phase`: by default a validate phase runs its statements and then the
    /// kind's data checks, every other phase its statements in one transaction.
    fn runner(&self, phase: Phase) -> Runner {
        match phase {
            Phase::Validate => Runner::ValidateData,
            _ => Runner::Statements,
        }
    }

    /// Whether the catalog alone says how far the step is (an index or constraint): the state
    /// store follows it, so one dropped by hand since its phase was recorded is built again.
    fn judged_on_catalog(&self) -> bool {
        false
    }

    /// The rows that violate the constraint the step validates, for the error when its
    /// validation fails: at most `limit`.
    fn violations(&self, _model: &ModelSpec, _id: &StepId, _limit: u32) -> Option<Violations> {
        None
    }

    /// Whether contract drops a column whose dependents (indexes, constraints, defaults, grants)
    /// the step carries over to another one first, and its abort drops what it carried.
    fn carries_dependents(&self) -> bool {
        false
    }

    /// The columns a step that `carries_dependents` carries them between.
    fn carried_between(&self) -> Option<sql::carry::Between> {
        None
    }

    /// The contract of a step that `carries_dependents`, around what `carry` moves (one
    /// transaction, see `Runner::ContractCarrying`).
    fn contract_carrying(
        &self,
        _model: &ModelSpec,
        _id: &StepId,
        _carry: &sql::carry::Carry,
    ) -> Vec<Statement> {
        Vec::new()
    }

    /// Extra lines under the step in a printed plan.
    fn plan_notes(&self, _model: &ModelSpec) -> Vec<String> {
        Vec::new()
    }

    /// Whether the step changes what accessors read or write, so that an abort waits until
    /// every live instance follows it before dropping anything.
    fn changes_accessors(&self) -> bool {
        false
    }

    /// Whether the step can be aborted before retire although its abort has no DDL (nothing
    /// changes before its contract).
    fn aborts_without_ddl(&self) -> bool {
        false
    }

    /// The table accessors name in `phase`, when it is not the model's (a renamed table, before
    /// its rename and once aborted).
    fn accessed_table(&self, _phase: Phase) -> Option<&'static str> {
        None
    }
}

/// The room of a kind: the one place where a [`StepKind`] meets its implementation.
pub(crate) fn room(kind: &StepKind) -> Box<dyn Kind> {
    match kind {
        StepKind::CreateTable => Box::new(create_table::CreateTable),
        StepKind::AddNullableColumn(c) => Box::new(nullable_column::NullableColumn(c)),
        StepKind::AddFilledColumn(c) => Box::new(filled_column::FilledColumn(c)),
        StepKind::AddComputedColumn(c) => Box::new(computed_column::ComputedColumn(c)),
        StepKind::RenameColumn(c) => Box::new(rename_column::RenameColumn(c)),
        StepKind::CreateIndex(ix) => Box::new(index::CreateIndex(ix)),
        StepKind::AddUnique(c) => Box::new(unique::AddUnique(c)),
        StepKind::AddForeignKey(c) => Box::new(foreign_key::AddForeignKey(c)),
        StepKind::AddCheck(ck) => Box::new(check::AddCheck(ck)),
        StepKind::DropIndex(name) => Box::new(drop_index::DropIndex(name.clone())),
        StepKind::DropColumn(name) => Box::new(drop_column::DropColumn(name)),
        StepKind::SetNotNull(c) => Box::new(set_not_null::SetNotNull(c)),
        StepKind::DropNotNull(c) => Box::new(drop_not_null::DropNotNull(c)),
        StepKind::SetDefault(c) => Box::new(set_default::SetDefault(c)),
        StepKind::ChangeType(c) => Box::new(change_type::ChangeType(c)),
        StepKind::ChangeTypeInPlace(c) => Box::new(change_type_in_place::ChangeTypeInPlace(c)),
        StepKind::WidenKey(c) => Box::new(widen_key::WidenKey(c)),
        StepKind::WidenReference(c) => Box::new(widen_reference::WidenReference(c)),
        StepKind::CreateEnum(e) => Box::new(enum_type::CreateEnum(e)),
        StepKind::AddEnumValue(e, label) => Box::new(enum_value::AddEnumValue(e, label)),
        StepKind::RenameEnumValue(e, new, old) => {
            Box::new(enum_rename::RenameEnumValue(e, new, old))
        }
        StepKind::DropTable => Box::new(drop_table::DropTable),
        StepKind::RenameTable { from, to } => Box::new(rename_table::RenameTable { from, to }),
    }
}

/// The kinds of the steps a model declares, in plan order, without building any SQL.
pub(crate) fn of_model(model: &ModelSpec) -> Vec<StepKind> {
    if model.table_dropped {
        return vec![StepKind::DropTable];
    }
    // The enum types the columns use come first: a table or column of the type needs it.
    let mut kinds = enum_type::of_model(model);
    kinds.push(StepKind::CreateTable);
    // First after the table: every later step's expand runs against the new name.
    if let Some(from) = model.renamed_from {
        kinds.push(StepKind::RenameTable {
            from,
            to: model.table,
        });
    }
    // A primary key whose type changes (integer to bigint), with the keys that reference it.
    kinds.extend(
        model
            .columns
            .iter()
            .filter(|c| c.primary_key && c.type_change.is_some())
            .map(StepKind::WidenKey),
    );
    // A generated column is created with its table only: adding an identity to a live table
    // fills every row under an exclusive lock, so a missing one is drift (see `resolve`).
    for column in model
        .columns
        .iter()
        .filter(|c| !c.primary_key && !c.generated)
    {
        if column.renamed_from.is_some() {
            kinds.push(StepKind::RenameColumn(column));
        } else if column.set_not_null.is_some() {
            kinds.push(StepKind::SetNotNull(column));
        } else if column.drop_not_null {
            kinds.push(StepKind::DropNotNull(column));
        } else if widen_reference::is_widened_reference(column) {
            // Widened by the referenced key's step: no type change of its own.
            kinds.push(StepKind::WidenReference(column));
        } else if let Some(change) = column.type_change {
            kinds.push(
                match change_type_in_place::rewrite_free(&change, column.sql_type) {
                    Some(_) => StepKind::ChangeTypeInPlace(column),
                    None => StepKind::ChangeType(column),
                },
            );
        } else if column.nullable {
            kinds.push(StepKind::AddNullableColumn(column));
        } else if column.computed.is_some() {
            kinds.push(StepKind::AddComputedColumn(column));
        } else if column.fill != Fill::None {
            kinds.push(StepKind::AddFilledColumn(column));
        }
        if column.set_default.is_some() {
            kinds.push(StepKind::SetDefault(column));
        }
    }
    kinds.extend(model.indexes.iter().map(StepKind::CreateIndex));
    kinds.extend(
        model
            .columns
            .iter()
            .filter(|c| c.unique)
            .map(StepKind::AddUnique),
    );
    kinds.extend(
        model
            .columns
            .iter()
            .filter(|c| c.references.is_some())
            .map(StepKind::AddForeignKey),
    );
    kinds.extend(model.checks.iter().map(StepKind::AddCheck));
    kinds.extend(model.dropped.iter().copied().map(StepKind::DropColumn));
    kinds
}

/// The compatibility views of every rename of a model (see `rename_column`).
pub(crate) fn rename_views(model: &ModelSpec) -> Vec<String> {
    of_model(model)
        .into_iter()
        .filter_map(|kind| match kind {
            StepKind::RenameColumn(c) => {
                Some(sql::RenameHelpers::new(model, c, &StepId::for_step(model, &kind)).view)
            }
            _ => None,
        })
        .collect()
}

impl StepKind {
    /// The kind's name in the state store.
    pub fn name(&self) -> &'static str {
        room(self).name()
    }

    /// The column the step adds or renames, if any (index and constraint steps add none).
    pub fn column(&self) -> Option<&'static ColumnSpec> {
        room(self).column()
    }

    /// The phases this kind goes through, in order (without `Pending`).
    pub fn phases(&self) -> &'static [Phase] {
        room(self).phases()
    }

    /// Whether the step creates its whole table.
    pub(crate) fn creates_table(&self) -> bool {
        room(self).creates_table()
    }

    /// The table a constraint the step adds points to (`schema`, `table`), if any.
    pub(crate) fn referenced_table(
        &self,
        model: &ModelSpec,
    ) -> Option<(&'static str, &'static str)> {
        room(self).referenced_table(model)
    }

    /// The phase after `done`, if any (none once aborted).
    pub fn next_phase(&self, done: Phase) -> Option<Phase> {
        if done == Phase::Aborted {
            return None;
        }
        self.phases().iter().copied().find(|p| *p > done)
    }

    /// Whether boot runs this kind's expand before returning (additive, metadata-only DDL). Kinds
    /// whose expand takes long (a concurrent index build) run it in the background instead.
    pub fn expands_at_boot(&self) -> bool {
        room(self).expands_at_boot()
    }

    /// Whether the step still has work after expand (it is walked by the background task).
    pub fn has_background_work(&self) -> bool {
        self.phases().iter().any(|p| *p > Phase::Expand) || !self.expands_at_boot()
    }

    /// The phase that completes the step.
    pub fn last_phase(&self) -> Phase {
        *self.phases().last().unwrap_or(&Phase::Expand)
    }
}

impl StepId {
    /// The id of a step: a hash of its kind's name, the table and the kind's parameters. The
    /// same declaration gives the same id in every build.
    pub(crate) fn for_step(model: &ModelSpec, kind: &StepKind) -> StepId {
        let room = room(kind);
        let mut parts: Vec<&str> = vec!["v1", room.name(), model.schema, model.table];
        parts.extend(room.identity());
        StepId::from_stored(format!("{:016x}", fnv1a(&parts)))
    }
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

/// What a step adds to the `CREATE TABLE` of a new table.
pub(crate) enum NewTablePart {
    /// A line of the table's definition (`CONSTRAINT ... UNIQUE (...)`).
    Constraint(String),
    /// A statement after it, in the same transaction (`CREATE INDEX`).
    Statement(Statement),
    /// Statements before it, in the same transaction (`CREATE TYPE` of an enum a column uses).
    Before(Vec<Statement>),
}

/// How one field is read and written in one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldAccess {
    /// The read expression.
    pub read: String,
    /// The columns a write sets (empty: not written in this phase).
    pub writes: Vec<&'static str>,
    /// The value each of `writes` gets, in order, with `sql::type_change::PARAM` standing for
    /// the field's bound value; missing: the bound value itself.
    pub values: Vec<String>,
}

/// A column the accessors name until the step's contract renames it (see
/// [`Kind::renamed_at_contract`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenamedAtContract {
    /// The name the accessors use before contract.
    pub from: String,
    /// The name the contract gives it.
    pub to: &'static str,
    /// Its type, which the column named `to` has once the contract committed.
    pub sql_type: &'static str,
    /// The contract may come next (the step is at switch or retire): a statement inside a
    /// transaction then runs under a savepoint, so that it can run again after the error.
    pub contract_next: bool,
}

impl FieldAccess {
    /// A column read and written as it is.
    pub(crate) fn plain(column: &'static ColumnSpec) -> FieldAccess {
        FieldAccess {
            read: crate::ident::Ident(column.name).to_string(),
            writes: vec![column.name],
            values: Vec::new(),
        }
    }

    /// The SQL the `k`-th written column gets when the field's value is `param` (`$3`).
    pub(crate) fn value(&self, k: usize, param: &str) -> String {
        match self.values.get(k) {
            Some(value) => value.replace(sql::type_change::PARAM, param),
            None => param.to_string(),
        }
    }
}

/// What an abort needs before it is recorded (see [`Kind::abort_preparation`]): when `needed`
/// (a query giving a boolean) is true, `count` must give zero (otherwise the abort is refused
/// with the count and `refusal`), then `add` runs in a short transaction and `validate` in one
/// of its own (a scan that lets writes go on); a failed validation runs `undo` and is refused the
/// same way.
#[derive(Debug, Clone)]
pub(crate) struct AbortPreparation {
    pub needed: String,
    pub count: String,
    pub refusal: String,
    pub add: Statement,
    pub validate: Statement,
    pub undo: Statement,
}

/// A data check of a validate phase: a count that must be zero.
#[derive(Debug, Clone)]
pub(crate) struct Verification {
    /// The count.
    pub sql: String,
    /// What a non-zero count means and what to do, after the count.
    pub message: String,
    /// Whether the step's validated `CHECK (col IS NOT NULL)` already proves it (then the
    /// engine does not scan the table again for it).
    pub proven_by_not_null_check: bool,
    /// The rows the count counts, as a condition over the row (`sql` is its count over the
    /// whole table): given, the engine may count them one key range at a time on the duty
    /// cycle (`paced_count.rs`) instead of in one scan.
    pub condition: Option<String>,
}

/// The query that lists the rows violating a constraint, and how to name them.
#[derive(Debug, Clone)]
pub(crate) struct Violations {
    /// The constraint, for messages: `foreign key posts_author_fkey (author_id references ...)`.
    pub what: String,
    /// Rows: the key as a text array, the offending value as text.
    pub query: String,
    /// The column whose value is shown, if one.
    pub column: Option<&'static str>,
}

/// The engine that runs a phase of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runner {
    /// The phase's statements in one transaction, recorded with them. Every other runner runs
    /// the statements itself (or has none to run) and then records the phase.
    Statements,
    /// The backfill pass over the table, then the phase's record.
    Backfill,
    /// A concurrent index build on a dedicated connection, then the phase's statements.
    ConcurrentBuild,
    /// `VALIDATE CONSTRAINT`, reporting the rows that violate it.
    ValidateConstraint,
    /// The phase's statements, then the kind's data checks.
    ValidateData,
    /// A rename's validate: every object of the old column built over the new one first.
    CarryThenValidate,
    /// A rename's contract, carrying every object of the old column.
    ContractCarrying,
    /// A column computed in Rust: walks of batches computed by the function (see `computed.rs`).
    ComputedBackfill,
    /// A primary key widened to `bigint` (`kinds::widen_key`): the referencing tables found in
    /// the catalog and their part of the phase run first, then the key table's.
    KeyWidening,
    /// A column computed in Rust: every live instance knows the column, the rows still without
    /// a value drained, the NOT NULL check added, drained again, validated.
    ComputedValidate,
}

/// The phases of a kind that fills a new column, moves reads to it, retires the old shape and
/// carries the old column's dependents at contract (a rename, a type change).
pub(crate) const CARRYING_PHASES: &[Phase] = &[
    Phase::Expand,
    Phase::Backfill,
    Phase::Validate,
    Phase::Switch,
    Phase::Retire,
    Phase::Contract,
];

impl Runner {
    /// The runners of a kind that fills a new column and carries the old one's dependents to
    /// it (a rename, a type change): the backfill pass, then the carry before validation, then
    /// the contract that carries the rest.
    pub(crate) fn carrying(phase: Phase) -> Runner {
        match phase {
            Phase::Backfill => Runner::Backfill,
            Phase::Validate => Runner::CarryThenValidate,
            Phase::Contract => Runner::ContractCarrying,
            _ => Runner::Statements,
        }
    }
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

/// The state schema a plan's batches show (the runtime uses the evolver's).
const SHOWN_STATE_TABLE: &str = "\"pgevolve\".\"steps\"";

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

/// A backfill phase whose batch fills `fills` in one pass (as shown in plans: placeholders, the
/// default timeouts and state schema).
pub(crate) fn backfill_phase(
    model: &ModelSpec,
    fills: &[FillColumn],
    shown: &Shown,
) -> PlannedPhase {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ColumnSpec, Fill, ModelSpec};

    static EMAIL: ColumnSpec = ColumnSpec {
        field: "email_normalized",
        name: "email_normalized",
        sql_type: "text",
        fill: Fill::Backfill("lower(email)"),
        ..ColumnSpec::DEFAULT
    };
    const MODEL: ModelSpec = ModelSpec {
        rust_name: "User",
        table: "users",
        ..ModelSpec::DEFAULT
    };

    #[test]
    fn ids_are_stable_and_content_derived() {
        let id = StepId::for_step(&MODEL, &StepKind::AddFilledColumn(&EMAIL));
        // Pinned: changing the derivation would orphan every recorded step.
        assert_eq!(id.as_str(), "fa463a16ec1dcfaa");
        let other = ColumnSpec {
            fill: Fill::Backfill("upper(email)"),
            ..EMAIL
        };
        let other: &'static ColumnSpec = Box::leak(Box::new(other));
        assert_ne!(
            id,
            StepId::for_step(&MODEL, &StepKind::AddFilledColumn(other))
        );
    }

    #[test]
    fn phases_follow_the_fill() {
        let kind = StepKind::AddFilledColumn(&EMAIL);
        assert_eq!(kind.next_phase(Phase::Pending), Some(Phase::Expand));
        assert_eq!(kind.next_phase(Phase::Expand), Some(Phase::Backfill));
        assert_eq!(kind.next_phase(Phase::Contract), None);
        assert_eq!(Phase::parse("validate"), Some(Phase::Validate));
    }
}
