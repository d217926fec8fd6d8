//! A column the table has and the struct no longer maps, declared with
//! `#[evolve(dropped("..."))]`: NOT NULL relaxed at expand when inserts that leave the column
//! out would fail, retired once every live instance runs a build without it, dropped at
//! contract. An abort before contract restores NOT NULL without a scan under ACCESS EXCLUSIVE.

use sqlx::AssertSqlSafe;

use super::resolving::BoxFuture;
use super::{AbortPreparation, Kind, PlannedPhase, Resolving, Shown};
use crate::error::Result;
use crate::spec::ModelSpec;
use crate::sql::Statement;
use crate::sql::drop_column::{self, DropHelpers};
use crate::step::{Phase, StepId};

pub(crate) struct DropColumn(pub &'static str);

impl Kind for DropColumn {
    fn name(&self) -> &'static str {
        "drop_column"
    }

    fn identity(&self) -> Vec<&'static str> {
        vec![self.0]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand, Phase::Retire, Phase::Contract]
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        let h = DropHelpers::new(model, self.0, id);
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "one short transaction under lock_timeout: when the column is NOT NULL without a default, \
                       DROP NOT NULL (metadata only, so inserts of the new build, which never name it, work) \
                       and a marker constraint the abort reads; otherwise nothing",
                statements: drop_column::expand(model, self.0, &h),
            },
            PlannedPhase {
                phase: Phase::Retire,
                note: "no DDL: contract waits until every live instance acknowledged, so no build that still \
                       reads or writes the column is running",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Contract,
                note: "gated (deploy window, explicit contract() or auto_contract), after every acknowledgement; \
                       one short transaction: DROP COLUMN (metadata only, no rewrite)",
                statements: drop_column::contract(model, self.0, &h),
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!("drop column {}.{}", model.qualified_name(), self.0)
    }

    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        drop_column::abort(model, self.0, &DropHelpers::new(model, self.0, id))
    }

    fn abort_preparation(&self, model: &ModelSpec, id: &StepId) -> Option<AbortPreparation> {
        let h = DropHelpers::new(model, self.0, id);
        Some(AbortPreparation {
            needed: drop_column::relaxed_exists(model, &h),
            count: drop_column::count_nulls(model, self.0),
            refusal: format!(
                "rows have NULL in column {} (written since expand relaxed its NOT NULL), so NOT NULL cannot be \
                 restored and the abort changed nothing: fill them (`UPDATE {} SET {} = <value> WHERE {} IS NULL`), \
                 then abort again",
                self.0,
                crate::sql::table(model),
                crate::ident::Ident(self.0),
                crate::ident::Ident(self.0),
            ),
            add: drop_column::abort_add_check(model, self.0, &h),
            validate: drop_column::abort_validate_check(model, &h),
            undo: drop_column::abort_drop_check(model, &h),
        })
    }

    fn changes_accessors(&self) -> bool {
        true
    }

    /// Column gone: contracted. Marker there: NOT NULL was relaxed, so expand is done. Otherwise
    /// the state store says (expand may have had nothing to relax).
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let recorded = cx.recorded_phase();
            if let Some(Phase::Aborted) = recorded {
                return Ok(Phase::Aborted);
            }
            if cx.live.column(self.0).is_none() {
                return Ok(Phase::Contract);
            }
            let h = DropHelpers::new(cx.model, self.0, cx.id);
            let relaxed: bool =
                sqlx::query_scalar(AssertSqlSafe(drop_column::relaxed_exists(cx.model, &h)))
                    .fetch_one(&mut *cx.conn)
                    .await?;
            let done = match recorded {
                Some(Phase::Contract) => Phase::Contract,
                Some(p) => p,
                None if relaxed => Phase::Expand,
                None => Phase::Pending,
            };
            if done < Phase::Contract {
                // What would make the contract fail, or take more than the column, is reported
                // now, before anything runs.
                let blockers: Vec<String> =
                    sqlx::query_scalar(AssertSqlSafe(drop_column::blockers(cx.model, self.0, &h)))
                        .fetch_all(&mut *cx.conn)
                        .await?;
                for blocker in blockers {
                    cx.problems.add(
                        Some(self.0),
                        format!("column {} is declared dropped, but {blocker}", self.0),
                    );
                }
            }
            Ok(done)
        })
    }

    /// Expanded, not contracted, and the column is NOT NULL without a default again (restored by
    /// hand): the new build's inserts would fail, so boot runs the expand again (idempotent).
    fn expand_incomplete(&self, cx: &Resolving<'_, '_>, done: Phase) -> bool {
        (Phase::Expand..Phase::Contract).contains(&done)
            && cx
                .live
                .column(self.0)
                .is_some_and(|c| c.not_null && c.default.is_none() && !c.database_assigns())
    }

    /// An interrupted abort left the marker (NOT NULL not restored yet).
    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            if cx.live.column(self.0).is_none() {
                return Ok(false);
            }
            let h = DropHelpers::new(cx.model, self.0, cx.id);
            let relaxed: bool =
                sqlx::query_scalar(AssertSqlSafe(drop_column::relaxed_exists(cx.model, &h)))
                    .fetch_one(&mut *cx.conn)
                    .await?;
            Ok(relaxed)
        })
    }
}
