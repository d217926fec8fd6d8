//! A NOT NULL column filled from `backfill = "..."` or `default = "..."`: added nullable with a
//! `CHECK (col IS NOT NULL) NOT VALID` (and, for a backfill, the fill and mark triggers), filled
//! by the backfill pass, the check validated, then `SET NOT NULL` at contract without a scan.

use super::resolving::BoxFuture;
use super::{
    FieldAccess, Kind, PlannedPhase, Resolving, Runner, Shown, Verification, backfill_phase,
};
use crate::error::Result;
use crate::spec::{ColumnSpec, Fill, ModelSpec};
use crate::sql::backfill::FillColumn;
use crate::sql::{self, Helpers, Statement};
use crate::step::{Phase, StepId};

pub(crate) struct FilledColumn(pub &'static ColumnSpec);

/// The id parameters of a column step (nullable or filled): name, type and fill.
pub(super) fn column_identity(c: &'static ColumnSpec) -> Vec<&'static str> {
    let mut parts = vec![c.name, c.sql_type];
    match c.fill {
        Fill::None => {}
        Fill::Backfill(e) => parts.extend(["backfill", e]),
        Fill::Default(e) => parts.extend(["default", e]),
    }
    parts
}

/// The validate phase of a `CHECK (col IS NOT NULL)` helper (a filled column, NOT NULL on).
pub(super) fn validate_phase(model: &ModelSpec, helpers: &Helpers) -> PlannedPhase {
    PlannedPhase {
        phase: Phase::Validate,
        note: "SHARE UPDATE EXCLUSIVE: reads and writes continue; the validated check proves no NULL is left",
        statements: sql::validate_filled_column(model, helpers),
    }
}

impl Kind for FilledColumn {
    fn name(&self) -> &'static str {
        match self.0.fill {
            Fill::Default(_) => "add_column_with_default",
            _ => "add_backfilled_column",
        }
    }

    fn identity(&self) -> Vec<&'static str> {
        column_identity(self.0)
    }

    fn phases(&self) -> &'static [Phase] {
        match self.0.fill {
            Fill::Default(_) => &[Phase::Expand, Phase::Validate, Phase::Contract],
            _ => &[
                Phase::Expand,
                Phase::Backfill,
                Phase::Validate,
                Phase::Contract,
            ],
        }
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, shown: &Shown) -> Vec<PlannedPhase> {
        let c = self.0;
        let helpers = Helpers::new(model, c, id);
        let mut phases = vec![PlannedPhase {
            phase: Phase::Expand,
            note: "one short transaction under lock_timeout, retried with backoff",
            statements: sql::expand_filled_column(model, c, &helpers),
        }];
        if let Some(fill) = FillColumn::backfill(model, id, c) {
            phases.push(backfill_phase(model, &[fill], shown));
        }
        phases.push(validate_phase(model, &helpers));
        phases.push(PlannedPhase {
            phase: Phase::Contract,
            note: "gated (explicit contract() or auto_contract); one short transaction, SET NOT NULL uses the validated check and does not scan",
            statements: sql::contract_filled_column(model, c, &helpers),
        });
        phases
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        let (table, c) = (model.qualified_name(), self.0);
        match c.fill {
            Fill::Default(e) => format!(
                "add column {table}.{} {} NOT NULL DEFAULT {e}",
                c.name, c.sql_type
            ),
            Fill::Backfill(e) => format!(
                "add column {table}.{} {} NOT NULL, backfilled from {e}",
                c.name, c.sql_type
            ),
            Fill::None => format!("add column {table}.{}", c.name),
        }
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        sql::abort_filled_column(model, self.0, &Helpers::new(model, self.0, id))
    }

    fn fill(&self, model: &ModelSpec, id: &StepId) -> Option<FillColumn> {
        FillColumn::backfill(model, id, self.0)
    }

    /// Before expand the column does not exist: read the expression, write nothing. Until
    /// contract a row may still be unfilled: read `COALESCE(col, expression)`.
    fn access(&self, phase: Phase) -> Option<FieldAccess> {
        let c = self.0;
        let col = crate::ident::Ident(c.name).to_string();
        let expr = match c.fill {
            Fill::Backfill(e) | Fill::Default(e) => e,
            Fill::None => "NULL",
        };
        let cast = format!("CAST(({expr}) AS {})", c.sql_type);
        Some(match phase {
            Phase::Pending | Phase::Aborted => FieldAccess {
                read: cast,
                writes: vec![],
                values: Vec::new(),
            },
            Phase::Contract => FieldAccess::plain(c),
            _ => FieldAccess {
                read: format!("COALESCE({col}, {cast})"),
                writes: vec![c.name],
                values: Vec::new(),
            },
        })
    }

    fn verifications(&self, model: &ModelSpec) -> Vec<Verification> {
        vec![Verification {
            sql: sql::count_nulls(model, self.0),
            message: format!(
                "rows still have NULL in column {}: the fill expression gives NULL for them; fix those rows or the expression, then boot again",
                self.0.name
            ),
            proven_by_not_null_check: true,
            condition: None,
        }]
    }

    fn runner(&self, phase: Phase) -> Runner {
        match phase {
            Phase::Backfill => Runner::Backfill,
            Phase::Validate => Runner::ValidateData,
            _ => Runner::Statements,
        }
    }

    fn changes_accessors(&self) -> bool {
        true
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let recorded = cx.recorded_phase();
            let column = self.0;
            let (live, id) = (cx.live, cx.id);
            let live_col = live.column(column.name);
            let done = match (recorded, live_col) {
                (Some(Phase::Contract), _) => return Ok(Phase::Contract),
                (Some(Phase::Aborted), _) => return Ok(Phase::Aborted),
                (Some(phase), None) if phase >= Phase::Expand => {
                    cx.problems.add(
                        Some(column.name),
                        format!(
                            "step {} is recorded at phase {phase} but the column is gone (dropped by hand?); \
                             restore the column, or abort the step",
                            id
                        ),
                    );
                    return Ok(phase);
                }
                (Some(phase), _) => phase,
                // Already NOT NULL with no record: nothing to do (created with the table, or by hand).
                (None, Some(c)) if c.not_null => return Ok(Phase::Contract),
                // A nullable column with no record: expand is idempotent, so adopt it from the start,
                // unless it holds values: then it is an existing column, which this kind would
                // treat as its own (its fill trigger recomputing written values, its abort
                // dropping the column); `set_not_null` is the declaration that keeps them.
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
                                 column (`backfill`/`default`), whose abort would drop it; to make the existing column \
                                 NOT NULL and keep its values, write `#[evolve(set_not_null, backfill = \"...\")]` \
                                 (`backfill` then gives the NULL rows their value)",
                                column.field
                            ),
                        );
                    }
                    Phase::Pending
                }
                (None, None) => Phase::Pending,
            };

            if done < Phase::Backfill {
                match column.fill {
                    Fill::Backfill(expr) => {
                        cx.check_backfill(column.name, expr).await?;
                    }
                    Fill::Default(expr) if done == Phase::Pending && live_col.is_none() => {
                        match crate::catalog::default_is_metadata_only(&mut *cx.conn, column.sql_type, expr).await? {
                            Ok(true) => {}
                            Ok(false) => cx.problems.add(
                                Some(column.name),
                                format!(
                                    "`default = \"{expr}\"` is volatile: adding it would rewrite the whole table under an exclusive lock; \
                                     use `backfill = \"{expr}\"` instead, which fills existing rows in batches"
                                ),
                            ),
                            Err(message) => cx.problems.add(
                                Some(column.name),
                                format!(
                                    "`default = \"{expr}\"` is not a valid default: {message}; fix the expression"
                                ),
                            ),
                        }
                    }
                    _ => {}
                }
            }
            Ok(done)
        })
    }

    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        let left = cx.live.column(self.0.name).is_some();
        Box::pin(async move { Ok(left) })
    }

    /// A backfilled column expanded by a pgevolve from before the marker column: the marker is
    /// what the backfill pass and the triggers read, so the expand must run again first.
    fn expand_incomplete(&self, cx: &Resolving<'_, '_>, done: Phase) -> bool {
        let column = self.0;
        if !matches!(column.fill, Fill::Backfill(_))
            || !(Phase::Expand..Phase::Contract).contains(&done)
            || cx.live.column(column.name).is_none()
        {
            return false;
        }
        let helpers = Helpers::new(cx.model, column, cx.id);
        cx.live.column(&helpers.marker).is_none()
    }
}
