//! A column of a model that references a primary key this build widens
//! (`#[evolve(type_from = "integer", references = "users(id)")]` on an `i64` field): the
//! column is widened by the key's own step (`widen_key`), which finds it in the catalog like
//! any referencing column, gives it a shadow, a trigger, a fill, a new foreign key, and swaps it
//! at contract. This step adds no DDL and no work of its own (no second shadow, trigger or fill
//! competing with the key's); it exists so that plans show the column and the accessors follow
//! the key's step ([`Kind::follows`]):
//!
//! - until that step's contract (and after an abort, and when this process does not know the
//!   step), the accessors read `CAST(column AS bigint)` and write the bound `bigint` into the
//!   integer column (an assignment cast: a value past the integer range fails, as it must while
//!   the column is integer). The shadow is never named: the key's trigger keeps it in step with
//!   the old column, so reads of the old column are the shadow's values, and the old build
//!   writes the same column;
//! - from the contract on, the column (now `bigint` under its old name) is read and written as
//!   it is. A statement built before the contract and run after it names the same column and
//!   works unchanged, so no retry is needed.

use super::resolving::BoxFuture;
use super::{FieldAccess, Kind, PlannedPhase, Resolving, Shown};
use crate::error::Result;
use crate::ident::Ident;
use crate::spec::{ColumnSpec, ModelSpec, TypeChange};
use crate::step::{Phase, StepId};

pub(crate) struct WidenReference(pub &'static ColumnSpec);

/// Whether a column is a reference widened with its key: not a key, `type_from = "integer"`
/// (or `smallint`) to `bigint`, with `references`.
pub(crate) fn is_widened_reference(c: &ColumnSpec) -> bool {
    use pgevolve_naming::normalized_type;
    !c.primary_key
        && c.references.is_some()
        && normalized_type(c.sql_type) == "bigint"
        && c.type_change
            .is_some_and(|t| matches!(normalized_type(t.from).as_str(), "integer" | "smallint"))
}

impl WidenReference {
    pub(crate) fn key_from(&self) -> &'static str {
        self.from()
    }

    fn from(&self) -> &'static str {
        self.0.type_change.unwrap_or(TypeChange::DEFAULT).from
    }

    /// The referenced table and column (`schema`, `table`, `column`).
    pub(crate) fn target(&self, model: &ModelSpec) -> (&'static str, &'static str, &'static str) {
        let fk = self
            .0
            .references
            .unwrap_or(crate::spec::ForeignKeySpec::DEFAULT);
        (fk.schema.unwrap_or(model.schema), fk.table, fk.column)
    }

    /// The id of the key's step this column is widened by.
    pub(crate) fn key_step(&self, model: &ModelSpec) -> StepId {
        let (schema, table, column) = self.target(model);
        super::widen_key::step_id(schema, table, column, self.from())
    }
}

impl Kind for WidenReference {
    fn name(&self) -> &'static str {
        "widen_reference"
    }

    fn identity(&self) -> Vec<&'static str> {
        let fk = self
            .0
            .references
            .unwrap_or(crate::spec::ForeignKeySpec::DEFAULT);
        vec![
            self.0.name,
            self.from(),
            self.0.sql_type,
            fk.schema.unwrap_or_default(),
            fk.table,
            fk.column,
        ]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand]
    }

    fn plan(&self, _model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![PlannedPhase {
            phase: Phase::Expand,
            note: "no DDL: the column is widened by the referenced key's step (its shadow, trigger, fill, new foreign key \
                   and contract); accessors read it cast to bigint until that step's contract, then as it is",
            statements: Vec::new(),
        }]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        let (schema, table, column) = self.target(model);
        format!(
            "widen column {}.{} from {} to {} with the key {schema}.{table}.{column} it references (step {})",
            model.qualified_name(),
            self.0.name,
            self.from(),
            self.0.sql_type,
            self.key_step(model)
        )
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    fn follows(&self, model: &ModelSpec) -> Option<StepId> {
        Some(self.key_step(model))
    }

    /// `phase` is the key step's (see [`Kind::follows`]).
    fn access(&self, phase: Phase) -> Option<FieldAccess> {
        let c = self.0;
        Some(match phase {
            Phase::Contract => FieldAccess::plain(c),
            _ => FieldAccess {
                read: format!("CAST({} AS bigint)", Ident(c.name)),
                writes: vec![c.name],
                values: Vec::new(),
            },
        })
    }

    fn aborts_without_ddl(&self) -> bool {
        true
    }

    /// Recorded, or nothing to do: the column must be the integer it was declared from, or
    /// bigint (widened). Whether the key is widened by this build is checked across the build's
    /// models (`widen_key::build_problems`).
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        let c = self.0;
        let recorded = cx.recorded_phase();
        match cx.live.column(c.name).map(|l| l.type_name.clone()) {
            None => cx.missing_column(
                c.name,
                c.field,
                "type_from",
                "remove `type_from` to add the column",
            ),
            Some(t) if t == "integer" || t == "smallint" || t == "bigint" => {}
            Some(other) => cx.problems.add(
                Some(c.name),
                format!(
                    "the column has type `{other}`, not `{}` as `type_from` of field `{}` says; write its current type \
                     in `type_from`",
                    self.from(),
                    c.field
                ),
            ),
        }
        let done = recorded.unwrap_or(Phase::Pending);
        Box::pin(async move { Ok(done) })
    }
}
