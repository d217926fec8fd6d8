//! A table the application no longer declares, named on the evolver with
//! [`Evolver::dropped_table`](crate::Evolver::dropped_table) (a model merely removed is never a
//! drop): nothing at expand, retired once every live instance acknowledged, so no build that
//! still uses the table runs, then `DROP TABLE` at contract inside the deploy window.

use sqlx::AssertSqlSafe;

use super::resolving::BoxFuture;
use super::{Kind, PlannedPhase, Resolving, Shown};
use crate::error::{DriftProblem, Result};
use crate::plan::Plan;
use crate::spec::ModelSpec;
use crate::sql::drop_table;
use crate::step::{Phase, StepId};

pub(crate) struct DropTable;

/// The model of a dropped table: no columns, one step.
pub(crate) fn dropped_table_model(schema: &'static str, table: &'static str) -> ModelSpec {
    ModelSpec {
        rust_name: "(dropped table)",
        schema,
        table,
        table_dropped: true,
        ..ModelSpec::DEFAULT
    }
}

/// A table declared dropped that a model of the same evolver still maps (or declared twice).
pub(crate) fn dropped_table_conflicts(plans: &[Plan]) -> Vec<DriftProblem> {
    let mut problems = Vec::new();
    for (i, dropped) in plans
        .iter()
        .enumerate()
        .filter(|(_, p)| p.model.table_dropped)
    {
        if dropped.model.table.is_empty() || dropped.model.schema.is_empty() {
            problems.push(DriftProblem {
                table: dropped.model.qualified_name(),
                column: None,
                message: "`.dropped_table(..)` names no table; write it, like `.dropped_table(\"legacy_audit\")` \
                          or `.dropped_table(\"schema.legacy_audit\")`"
                    .to_string(),
            });
        }
        for (j, other) in plans.iter().enumerate() {
            // A table declared dropped twice is reported once, on the second declaration.
            if j == i || (other.model.table_dropped && j > i) {
                continue;
            }
            let same = other.model.schema == dropped.model.schema
                && (other.model.table == dropped.model.table
                    || other.model.renamed_from == Some(dropped.model.table));
            if !same {
                continue;
            }
            problems.push(DriftProblem {
                table: dropped.model.qualified_name(),
                column: None,
                message: if other.model.table_dropped {
                    "the table is declared dropped twice on the evolver; name it once".to_string()
                } else {
                    format!(
                        "the table is declared dropped on the evolver but struct `{}` maps it (`.model::<{}>()`); \
                         remove the model to drop the table, or remove `.dropped_table(\"{}\")` to keep it",
                        other.model.rust_name, other.model.rust_name, dropped.model.table
                    )
                },
            });
        }
    }
    problems
}

impl Kind for DropTable {
    fn name(&self) -> &'static str {
        "drop_table"
    }

    fn identity(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand, Phase::Retire, Phase::Contract]
    }

    fn plan(&self, model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "no DDL: the step is recorded, so every instance can tell whether its build knows it",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Retire,
                note: "no DDL: contract waits until every live instance acknowledged, so no build that still \
                       reads or writes the table is running",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Contract,
                note: "gated (deploy window, explicit contract() or auto_contract), after every acknowledgement; \
                       one short transaction under lock_timeout: DROP TABLE without CASCADE (no scan; the rows are \
                       gone: take a backup first if they may be needed)",
                statements: drop_table::contract(model),
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!("drop table {}", model.qualified_name())
    }

    fn object_name(&self, model: &ModelSpec, _id: &StepId) -> Option<String> {
        Some(model.table.to_string())
    }

    /// Nothing changes before contract: an abort only records itself.
    fn aborts_without_ddl(&self) -> bool {
        true
    }

    /// No table: contracted. Otherwise the state store says (a table created again after the
    /// contract is left alone); what would make the contract fail is reported now, before
    /// anything runs.
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let recorded = cx.recorded_phase();
            if recorded == Some(Phase::Aborted) {
                return Ok(Phase::Aborted);
            }
            if !cx.live.exists {
                return Ok(Phase::Contract);
            }
            let blockers: Vec<String> =
                sqlx::query_scalar(AssertSqlSafe(drop_table::blockers(cx.model)))
                    .fetch_all(&mut *cx.conn)
                    .await?;
            for blocker in blockers {
                cx.problems.add(
                    None,
                    format!("the table is declared dropped, but {blocker}"),
                );
            }
            Ok(recorded.unwrap_or(Phase::Pending))
        })
    }
}
