//! NOT NULL on an existing nullable column, declared with `#[evolve(set_not_null)]` on a `T`
//! field (optionally with `backfill = "..."`, the value of the NULL rows): a
//! `CHECK (col IS NOT NULL) NOT VALID` and a trigger that fills every NULL written at expand,
//! the NULL rows filled in batches, the check validated under SHARE UPDATE EXCLUSIVE, then,
//! once every live instance acknowledged (builds with an `Option` field may write NULL), `SET
//! NOT NULL` at contract, which the validated check spares its scan. An abort before retire
//! drops the check and the trigger; every value written stays.

use sqlx::AssertSqlSafe;

use super::resolving::BoxFuture;
use super::{
    FieldAccess, Kind, PlannedPhase, Resolving, Runner, Shown, Verification, backfill_phase,
};
use crate::error::Result;
use crate::spec::{ColumnSpec, ModelSpec};
use crate::sql::backfill::FillColumn;
use crate::sql::{self, Helpers, Statement, not_null};
use crate::step::{Phase, StepId};

pub(crate) struct SetNotNull(pub &'static ColumnSpec);

impl SetNotNull {
    fn backfill(&self) -> Option<&'static str> {
        self.0.set_not_null.and_then(|s| s.backfill)
    }
}

impl Kind for SetNotNull {
    fn name(&self) -> &'static str {
        "set_not_null"
    }

    fn identity(&self) -> Vec<&'static str> {
        let mut parts = vec![self.0.name, self.0.sql_type];
        parts.extend(
            self.backfill()
                .map(|e| ["backfill", e])
                .into_iter()
                .flatten(),
        );
        parts
    }

    fn phases(&self) -> &'static [Phase] {
        match self.backfill() {
            Some(_) => &[
                Phase::Expand,
                Phase::Backfill,
                Phase::Validate,
                Phase::Retire,
                Phase::Contract,
            ],
            None => &[
                Phase::Expand,
                Phase::Validate,
                Phase::Retire,
                Phase::Contract,
            ],
        }
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, shown: &Shown) -> Vec<PlannedPhase> {
        let c = self.0;
        let h = Helpers::new(model, c, id);
        let mut phases = vec![PlannedPhase {
            phase: Phase::Expand,
            note: match self.backfill() {
                Some(_) => {
                    "one short transaction under lock_timeout: the fill trigger (a NULL written by any build gets the \
                            backfill's value, other values are kept), then the check NOT VALID (no scan; new writes must satisfy it)"
                }
                None => {
                    "one short transaction under lock_timeout: the check NOT VALID (no scan); from now on a NULL written \
                         by any build is refused (no backfill was declared)"
                }
            },
            statements: not_null::expand_set(model, c, self.backfill(), &h),
        }];
        if let Some(fill) = self.fill(model, id) {
            phases.push(backfill_phase(model, &[fill], shown));
        }
        phases.push(super::filled_column::validate_phase(model, &h));
        phases.push(PlannedPhase {
            phase: Phase::Retire,
            note: "no DDL: contract waits until every live instance acknowledged, so no build that may write NULL \
                   (an `Option` field) is running when NOT NULL is enforced",
            statements: Vec::new(),
        });
        phases.push(PlannedPhase {
            phase: Phase::Contract,
            note: "gated (deploy window, explicit contract() or auto_contract), after every acknowledgement; one short \
                   transaction: SET NOT NULL uses the validated check and does not scan, then the check and the trigger go",
            statements: not_null::contract_set(model, c, self.backfill().is_some(), &h),
        });
        phases
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        let (table, c) = (model.qualified_name(), self.0);
        match self.backfill() {
            Some(e) => format!(
                "set not null {table}.{}, NULL rows backfilled from {e}",
                c.name
            ),
            None => format!("set not null {table}.{} (no NULL rows expected)", c.name),
        }
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        not_null::abort_set(
            model,
            &Helpers::new(model, self.0, id),
            self.backfill().is_some(),
        )
    }

    fn fill(&self, _model: &ModelSpec, id: &StepId) -> Option<FillColumn> {
        Some(FillColumn {
            step: id.clone(),
            column: self.0,
            expr: self.backfill()?.to_string(),
            marker: None,
            target: None,
        })
    }

    /// The field is a `T`: until contract a row may still be NULL (not reached by the backfill,
    /// or the step aborted), so it reads `COALESCE(col, backfill)`. Without a backfill the user
    /// promised no NULL: the column is read as it is.
    fn access(&self, phase: Phase) -> Option<FieldAccess> {
        let expr = self.backfill()?;
        (phase != Phase::Contract).then(|| FieldAccess {
            read: format!(
                "COALESCE({}, CAST(({expr}) AS {}))",
                crate::ident::Ident(self.0.name),
                self.0.sql_type
            ),
            writes: vec![self.0.name],
            values: Vec::new(),
        })
    }

    fn verifications(&self, model: &ModelSpec) -> Vec<Verification> {
        let what = match self.backfill() {
            Some(_) => {
                "the backfill expression gives NULL for them; fix those rows or the expression"
            }
            None => {
                "no backfill was declared; fill them, or declare `backfill = \"...\"` with `set_not_null`"
            }
        };
        vec![Verification {
            sql: sql::count_nulls(model, self.0),
            message: format!(
                "rows still have NULL in column {}: {what}, then boot again",
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

    /// The recorded phase; with no record, a column that is NOT NULL already needs nothing. A
    /// missing column is drift: `set_not_null` changes a column, it does not add one.
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let c = self.0;
            let recorded = cx.recorded_phase();
            if let Some(p @ (Phase::Contract | Phase::Aborted)) = recorded {
                return Ok(p);
            }
            let Some(live) = cx.live.column(c.name) else {
                cx.missing_column(
                    c.name,
                    c.field,
                    "set_not_null",
                    "to add a new NOT NULL column remove `set_not_null` and keep `backfill = \"...\"` \
                     (or write `default = \"...\"`)",
                );
                return Ok(recorded.unwrap_or(Phase::Pending));
            };
            let done = match recorded {
                Some(p) => p,
                None if live.not_null => return Ok(Phase::Contract),
                None => Phase::Pending,
            };
            if done < Phase::Backfill
                && let Some(expr) = self.backfill()
            {
                cx.check_backfill(c.name, expr).await?;
            }
            Ok(done)
        })
    }

    /// An interrupted abort left the check or the trigger.
    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let h = Helpers::new(cx.model, self.0, cx.id);
            let left: bool =
                sqlx::query_scalar(AssertSqlSafe(not_null::set_helpers_exist(cx.model, &h)))
                    .fetch_one(&mut *cx.conn)
                    .await?;
            Ok(left)
        })
    }
}
