//! A column renamed through a new column kept equal to the old one by a trigger
//! (`renamed_from = "..."`): backfilled, validated, reads switched, writes of the old column
//! retired, then the old column dropped at contract with every object that depended on it
//! carried over to the new one.

use super::resolving::BoxFuture;
use super::{
    FieldAccess, Kind, PlannedPhase, Resolving, Runner, Shown, Verification, backfill_phase,
};
use crate::error::Result;
use crate::ident::Ident;
use crate::spec::{ColumnSpec, ModelSpec};
use crate::sql::backfill::FillColumn;
use crate::sql::carry::{Between, Carry};
use crate::sql::{self, RenameHelpers, Statement, rename};
use crate::step::{Phase, StepId, StepKind};

pub(crate) struct RenameColumn(pub &'static ColumnSpec);

impl RenameColumn {
    fn old(&self) -> &'static str {
        self.0.renamed_from.unwrap_or(self.0.name)
    }

    /// The columns that steps after this one in the plan add.
    fn added_later(model: &ModelSpec, renamed: &ColumnSpec) -> Vec<&'static str> {
        let kinds = super::of_model(model);
        let me = kinds
            .iter()
            .position(|k| matches!(k, StepKind::RenameColumn(c) if c.name == renamed.name));
        kinds
            .iter()
            .skip(me.map_or(kinds.len(), |i| i + 1))
            .filter_map(|k| k.column().map(|c| c.name))
            .collect()
    }
}

impl Kind for RenameColumn {
    fn name(&self) -> &'static str {
        "rename_column"
    }

    fn identity(&self) -> Vec<&'static str> {
        vec![
            self.0.renamed_from.unwrap_or_default(),
            self.0.name,
            self.0.sql_type,
        ]
    }

    fn phases(&self) -> &'static [Phase] {
        super::CARRYING_PHASES
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, shown: &Shown) -> Vec<PlannedPhase> {
        let c = self.0;
        let h = RenameHelpers::new(model, c, id);
        let later = Self::added_later(model, c);
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "one short transaction under lock_timeout: new column, sync trigger (both names stay equal for writers that set one), compatibility view with the new names",
                statements: rename::expand(model, c, &h, &later),
            },
            backfill_phase(
                model,
                &[FillColumn {
                    step: id.clone(),
                    column: c,
                    expr: Ident(self.old()).to_string(),
                    marker: None,
                    target: None,
                }],
                shown,
            ),
            PlannedPhase {
                phase: Phase::Validate,
                note: "the NOT NULL check is validated (writes go on), then no row may differ between the two columns",
                statements: rename::validate(model, c, &h),
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
                statements: rename::contract(model, c, &h),
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "rename column {}.{} to {}",
            model.qualified_name(),
            self.old(),
            self.0.name
        )
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        rename::abort(model, self.0, &RenameHelpers::new(model, self.0, id))
    }

    fn fill(&self, _model: &ModelSpec, id: &StepId) -> Option<FillColumn> {
        FillColumn::rename(id, self.0)
    }

    /// Read the old column until the new one is filled (`COALESCE(new, old)` meanwhile), the new
    /// one from switch; write both until retire, then only the new one.
    fn access(&self, phase: Phase) -> Option<FieldAccess> {
        let c = self.0;
        let (col, old_col) = (Ident(c.name).to_string(), Ident(self.old()).to_string());
        Some(match phase {
            Phase::Pending | Phase::Aborted => FieldAccess {
                read: old_col,
                writes: vec![self.old()],
                values: Vec::new(),
            },
            Phase::Expand | Phase::Backfill | Phase::Validate => FieldAccess {
                read: format!("COALESCE({col}, {old_col})"),
                writes: vec![c.name, self.old()],
                values: Vec::new(),
            },
            Phase::Switch => FieldAccess {
                read: col,
                writes: vec![c.name, self.old()],
                values: Vec::new(),
            },
            Phase::Retire | Phase::Contract => FieldAccess::plain(c),
        })
    }

    fn verifications(&self, model: &ModelSpec) -> Vec<Verification> {
        let (c, old) = (self.0, self.old());
        let mut checks = Vec::new();
        if !c.nullable {
            checks.push(Verification {
                sql: sql::count_nulls(model, c),
                message: format!(
                    "rows have NULL in {} (copied from {old}): make the field an `Option`, or fill those rows, then boot again",
                    c.name
                ),
                proven_by_not_null_check: true,
                condition: None,
            });
        }
        checks.push(Verification {
            sql: rename::count_differences(model, c),
            message: format!(
                "rows differ between {old} and {}: a writer bypassed the sync trigger (session_replication_role?); boot again to re-run the backfill check",
                c.name
            ),
            proven_by_not_null_check: false,
            condition: Some(rename::differences(c)),
        });
        checks
    }

    fn runner(&self, phase: Phase) -> Runner {
        Runner::carrying(phase)
    }

    fn changes_accessors(&self) -> bool {
        true
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let recorded = cx.recorded_phase();
            let (column, live, id) = (self.0, cx.live, cx.id);
            let old = live.column(column.renamed_from.unwrap_or_default());
            let new = live.column(column.name);
            let done = match (recorded, old, new) {
                (Some(p @ (Phase::Contract | Phase::Aborted)), _, _) => p,
                (Some(p), _, None) if p >= Phase::Expand => {
                    cx.problems.add(
                        Some(column.name),
                        format!(
                            "step {} is recorded at phase {p} but the new column is gone (dropped by hand?); restore it, or abort the step",
                            id
                        ),
                    );
                    p
                }
                (Some(p), None, _) if p >= Phase::Expand => {
                    cx.problems.add(
                        Some(column.renamed_from.unwrap_or_default()),
                        format!(
                            "step {} is recorded at phase {p} but the old column is gone before contract (dropped by hand?); restore it",
                            id
                        ),
                    );
                    p
                }
                (Some(p), _, _) => p,
                // The rename is long done: only the new column is left.
                (None, None, Some(_)) => Phase::Contract,
                // Not started, or started by hand: expand is idempotent, so run it.
                (None, _, _) => Phase::Pending,
            };
            if done < Phase::Contract
                && let Some(old) = column.renamed_from
                && live.column(old).is_some()
            {
                // Contract drops the old column: whatever depends on it must be carried over to
                // the new one, and what cannot be is reported now, before anything runs.
                let carry =
                    read_carry(cx.conn, cx.model, column, id, &Between::rename(column)).await?;
                for blocker in carry.blockers {
                    cx.problems.add(Some(old), blocker);
                }
            }
            Ok(done)
        })
    }

    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        let left = cx.live.column(self.0.name).is_some();
        Box::pin(async move { Ok(left) })
    }

    fn carries_dependents(&self) -> bool {
        true
    }

    fn carried_between(&self) -> Option<Between> {
        Some(Between::rename(self.0))
    }

    fn contract_carrying(&self, model: &ModelSpec, id: &StepId, carry: &Carry) -> Vec<Statement> {
        let h = RenameHelpers::new(model, self.0, id);
        rename::contract_carrying(model, self.0, &h, carry)
    }

    /// What contract carries from the old column to the new one.
    fn plan_notes(&self, model: &ModelSpec) -> Vec<String> {
        sql::carry::plan_lines(model, &Between::rename(self.0))
    }
}

/// Reads what depends on the old column of a rename or a type change (`catalog::dependents`)
/// and what carrying it over to the new one takes (`sql::carry`), `between` saying which. The
/// renames' own compatibility views (of every rename of the model) depend on old columns too,
/// and are dropped by contract before the column: they need no carrying.
pub(crate) async fn read_carry(
    conn: &mut sqlx::PgConnection,
    model: &ModelSpec,
    column: &ColumnSpec,
    id: &StepId,
    between: &Between,
) -> sqlx::Result<Carry> {
    let views = super::rename_views(model);
    let deps =
        crate::catalog::dependents::read(conn, model, &between.old, &between.new, &views).await?;
    Ok(Carry::new(model, column, id, between, &deps))
}
