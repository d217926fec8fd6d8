//! A NOT NULL column computed in Rust: `#[evolve(backfill_with = "path::to::f",
//! inputs("a", "b"))]`. The function maps a row's inputs to the value; a trigger cannot call
//! it, so the design differs from a SQL backfill (`filled_column.rs`) where old builds write:
//!
//! - **expand**: the column and the marker (nullable), the mark trigger (a writer that names the
//!   column marks its row `1`, as for a SQL backfill) and the reset trigger: a row an old build
//!   inserts stays `NULL`; a row whose inputs an old build changes goes back to `NULL` unless a
//!   build that knows the column wrote its value. No NOT NULL check yet: old builds insert
//!   without a value.
//! - **backfill**: one walk of the primary key over the rows that are `NULL`: read keys, row
//!   versions and inputs; compute in Rust; write the values (only where the row is still the
//!   version read and still `NULL`) with the checkpoint, in one statement.
//! - **validate**: waits until every live instance runs a build that knows the step (old builds
//!   stop writing rows without a value), walks again until a walk finds no row without a value,
//!   adds `CHECK (col IS NOT NULL) NOT VALID`, walks once more (a row written between the two),
//!   and validates the check.
//! - **contract**: `SET NOT NULL` through the validated check; the helpers go.

use super::resolving::BoxFuture;
use super::{FieldAccess, Kind, PlannedPhase, Resolving, Runner, Shown, Verification};
use crate::error::Result;
use crate::spec::{ColumnSpec, ModelSpec};
use crate::sql::{self, Helpers, Statement, computed};
use crate::step::{Phase, StepId};

pub(crate) struct ComputedColumn(pub &'static ColumnSpec);

impl ComputedColumn {
    fn function(&self) -> &'static str {
        self.0.computed.map(|c| c.function).unwrap_or_default()
    }

    fn inputs(&self) -> &'static [&'static str] {
        self.0.computed.map(|c| c.inputs).unwrap_or_default()
    }
}

impl Kind for ComputedColumn {
    fn name(&self) -> &'static str {
        "add_computed_column"
    }

    fn identity(&self) -> Vec<&'static str> {
        let mut parts = vec![
            self.0.name,
            self.0.sql_type,
            "backfill_with",
            self.function(),
        ];
        parts.extend(self.inputs());
        parts
    }

    fn phases(&self) -> &'static [Phase] {
        &[
            Phase::Expand,
            Phase::Backfill,
            Phase::Validate,
            Phase::Contract,
        ]
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, shown: &Shown) -> Vec<PlannedPhase> {
        let c = self.0;
        let h = Helpers::new(model, c, id);
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "one short transaction under lock_timeout: the column and its marker (nullable), the mark trigger and \
                       the reset trigger (an old build's insert stays NULL, its change of an input resets the value to NULL); \
                       no NOT NULL check yet",
                statements: computed::expand(model, c, &h),
            },
            PlannedPhase {
                phase: Phase::Backfill,
                note: "one walk over the primary key: each batch reads the keys, row versions and inputs of rows still NULL \
                       (first statement), computes the values in Rust, and writes them with the checkpoint in one statement \
                       (second), only where the row is still the version read; the WAL position read around the write paces \
                       the walk on BackfillOptions::wal_budget, as a SQL pass",
                statements: vec![
                    Statement::always(computed::read_shown(model, c)),
                    Statement::always(format!(
                        "{};\n{};\n{}",
                        computed::write_settings(
                            shown.lock_timeout,
                            shown.batch_timeout,
                            shown.skip_user_triggers,
                        ),
                        computed::write(model, c, &h, &shown.steps_table, id),
                        crate::sql::backfill::wal_end(),
                    )),
                ],
            },
            PlannedPhase {
                phase: Phase::Validate,
                note: "after every live instance runs a build that knows the column: walks until no row is NULL, the check \
                       NOT VALID (short), one more walk, then VALIDATE (SHARE UPDATE EXCLUSIVE: writes go on)",
                statements: computed::validate(model, c, &h),
            },
            PlannedPhase {
                phase: Phase::Contract,
                note: "gated (explicit contract() or auto_contract); one short transaction, SET NOT NULL uses the validated check and does not scan",
                statements: computed::contract(model, c, &h),
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "add column {}.{} {} NOT NULL, computed in Rust by {}({})",
            model.qualified_name(),
            self.0.name,
            self.0.sql_type,
            self.function(),
            self.inputs().join(", ")
        )
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        computed::abort(model, self.0, &Helpers::new(model, self.0, id))
    }

    /// Before expand the column does not exist: read `NULL` (the generated accessors compute
    /// the value from the row's inputs when they read `NULL`), write nothing. Until contract a
    /// row may still be `NULL`: read the column, the accessors compute what is missing.
    fn access(&self, phase: Phase) -> Option<FieldAccess> {
        let c = self.0;
        Some(match phase {
            Phase::Pending | Phase::Aborted => FieldAccess {
                read: format!("CAST(NULL AS {})", c.sql_type),
                writes: vec![],
                values: vec![],
            },
            _ => FieldAccess::plain(c),
        })
    }

    fn verifications(&self, model: &ModelSpec) -> Vec<Verification> {
        vec![Verification {
            sql: computed::count_missing(model, self.0),
            message: format!(
                "rows still have NULL in column {}: a build that does not know the column still writes the table \
                 (an instance without a coordinator?); stop it, then boot again",
                self.0.name
            ),
            proven_by_not_null_check: true,
            condition: None,
        }]
    }

    fn runner(&self, phase: Phase) -> Runner {
        match phase {
            Phase::Backfill => Runner::ComputedBackfill,
            Phase::Validate => Runner::ComputedValidate,
            _ => Runner::Statements,
        }
    }

    fn changes_accessors(&self) -> bool {
        true
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let column = self.0;
            let live_col = cx.live.column(column.name);
            let done = match (cx.recorded_phase(), live_col) {
                (Some(Phase::Contract), _) => return Ok(Phase::Contract),
                (Some(Phase::Aborted), _) => return Ok(Phase::Aborted),
                (Some(phase), None) if phase >= Phase::Expand => {
                    cx.problems.add(
                        Some(column.name),
                        format!(
                            "step {} is recorded at phase {phase} but the column is gone (dropped by hand?); \
                             restore the column, or abort the step",
                            cx.id
                        ),
                    );
                    return Ok(phase);
                }
                (Some(phase), _) => phase,
                (None, Some(c)) if c.not_null => return Ok(Phase::Contract),
                (None, Some(_)) => {
                    let has_values: bool =
                        sqlx::query_scalar(sqlx::AssertSqlSafe(sql::has_values(cx.model, column)))
                            .fetch_one(&mut *cx.conn)
                            .await?;
                    if has_values {
                        cx.problems.add(
                            Some(column.name),
                            format!(
                                "the column exists, nullable and with values, but field `{}` declares it as a new \
                                 column (`backfill_with`), whose abort would drop it; to make the existing column \
                                 NOT NULL and keep its values, write `#[evolve(set_not_null, backfill = \"...\")]`",
                                column.field
                            ),
                        );
                    }
                    Phase::Pending
                }
                (None, None) => Phase::Pending,
            };
            if done < Phase::Backfill {
                for input in self.inputs() {
                    if cx.live.column(input).is_none() {
                        cx.problems.add(
                            Some(column.name),
                            format!(
                                "`backfill_with` reads column `{input}`, which the table does not have; \
                                 name existing columns in `inputs(..)`"
                            ),
                        );
                    }
                }
            }
            Ok(done)
        })
    }

    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        let left = cx.live.column(self.0.name).is_some();
        Box::pin(async move { Ok(left) })
    }
}
