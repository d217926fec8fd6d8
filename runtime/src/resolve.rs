//! Holds the plan against the live catalog and the state store: which steps are already
//! satisfied, where each pending one resumes, and every way the database differs from what the
//! models expect (drift), all found before any DDL runs.

mod indexes;

use sqlx::AssertSqlSafe;
use sqlx::PgConnection;

use crate::catalog::{self, LiveColumn, LiveTable};
use crate::error::{DriftProblem, Result};
use crate::ident::{Ident, Qualified};
use crate::plan::{Plan, PlannedStep};
use crate::spec::{ColumnSpec, Fill, ModelSpec};
use crate::state::StepRow;

/// The recorded steps, by id.
pub(crate) type Recorded = std::collections::HashMap<crate::step::StepId, StepRow>;
use crate::step::{Phase, StepKind};

/// A step and the last phase it completed, as the database shows it.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub step: PlannedStep,
    /// Last completed phase; the step's last phase means nothing is left to do.
    pub done: Phase,
    /// The table does not exist: the create-table step will satisfy every column step.
    pub table_missing: bool,
    /// Aborted, but what the abort drops is still there (the abort was interrupted).
    pub abort_leftovers: bool,
    /// The phase the state store has for the step, if it has a row.
    pub recorded: Option<Phase>,
    /// Expanded and not contracted, but a helper its expand creates is missing: a backfilled
    /// column expanded by a pgevolve from before the marker column. Boot runs the expand's
    /// statements again (each is idempotent), without changing the recorded phase.
    pub expand_incomplete: bool,
}

impl Resolved {
    pub fn next_phase(&self) -> Option<Phase> {
        self.step.kind.next_phase(self.done)
    }
}

/// Resolves one model. Drift goes to `problems`; the steps are returned either way.
pub(crate) async fn resolve_model(
    conn: &mut PgConnection,
    recorded: &Recorded,
    model: &ModelSpec,
    problems: &mut Vec<DriftProblem>,
) -> Result<Vec<Resolved>> {
    let plan = Plan::for_model(model);
    let live = catalog::read_table(conn, model).await?;
    let table = model.qualified_name();
    let mut problem = |column: Option<&str>, message: String| {
        problems.push(DriftProblem {
            table: table.clone(),
            column: column.map(str::to_string),
            message,
        })
    };

    if !live.exists {
        return Ok(plan
            .steps
            .into_iter()
            .map(|step| Resolved {
                recorded: recorded.get(&step.id).map(|r| r.phase),
                done: Phase::Pending,
                step,
                table_missing: true,
                abort_leftovers: false,
                expand_incomplete: false,
            })
            .collect());
    }

    let types: Vec<&str> = model.columns.iter().map(|c| c.sql_type).collect();
    let oids = catalog::type_oids(conn, &types).await?;
    for (column, oid) in model.columns.iter().zip(&oids) {
        let Some(oid) = oid else {
            problem(
                Some(column.name),
                format!(
                    "PostgreSQL has no type `{}` (field `{}`); fix `sql_type` or the field's type",
                    column.sql_type, column.field
                ),
            );
            continue;
        };
        if let Some(live_col) = live.column(column.name) {
            generated_drift(model, column, live_col, &mut problem);
        }
        match live.column(column.name) {
            Some(live_col) if live_col.type_oid != *oid => problem(
                Some(column.name),
                format!(
                    "the column has type `{}` but field `{}` declares `{}`; change the field's type (or `sql_type`) to match. \
                     Changing a column's type in place rewrites the table and is not done automatically",
                    live_col.type_name, column.field, column.sql_type
                ),
            ),
            Some(live_col)
                if !live_col.not_null
                    && !column.nullable
                    && column.fill == Fill::None
                    && column.renamed_from.is_none() =>
            {
                problem(
                    Some(column.name),
                    format!(
                        "the column is nullable but field `{}` is not an `Option`; make the field `Option<_>`, \
                         or add `#[evolve(backfill = \"...\")]` to fill the NULLs and enforce NOT NULL",
                        column.field
                    ),
                )
            }
            Some(_) => {}
            None if column.primary_key => problem(
                Some(column.name),
                format!(
                    "primary key column is missing (field `{}`); adding a primary key to a live table is not supported: \
                     add it by hand, or fix `#[evolve(column = \"...\")]`",
                    column.field
                ),
            ),
            None if column.generated => problem(
                Some(column.name),
                format!(
                    "the column does not exist and field `{}` is declared `generated`; pgevolve gives a table an \
                     identity column only when it creates the table (adding one to a live table fills every row \
                     under an exclusive lock): add the column by hand in a maintenance window, or remove `generated`",
                    column.field
                ),
            ),
            None if column.renamed_from.is_some() => {
                let old = column.renamed_from.unwrap_or_default();
                match live.column(old) {
                    Some(old_col) if old_col.type_oid != *oid => problem(
                        Some(old),
                        format!(
                            "the column has type `{}` but field `{}` (renamed from it) declares `{}`; a rename keeps the type:                              change the field's type (or `sql_type`) to match",
                            old_col.type_name, column.field, column.sql_type
                        ),
                    ),
                    Some(_) => {}
                    None => problem(
                        Some(column.name),
                        format!(
                            "neither the old column `{old}` nor the new column `{}` exists (field `{}`);                              fix `renamed_from`, or drop it if the rename is long done",
                            column.name, column.field
                        ),
                    ),
                }
            }
            None if !column.nullable && column.fill == Fill::None => problem(
                Some(column.name),
                format!(
                    "the column does not exist and field `{}` gives no way to fill it; add \
                     `#[evolve(backfill = \"<SQL over the row>\")]` or `#[evolve(default = \"<constant>\")]`, \
                     or make the field `Option<_>`",
                    column.field
                ),
            ),
            None => {}
        }
    }

    let spec_pk: Vec<&str> = model.primary_key().map(|c| c.name).collect();
    if !spec_pk.is_empty() && spec_pk != live.primary_key {
        problem(
            None,
            format!(
                "the primary key is ({}) in the database but the struct declares ({}); fix the `#[evolve(primary_key)]` fields",
                live.primary_key.join(", "),
                spec_pk.join(", ")
            ),
        );
    }

    let mut resolved = Vec::new();
    for step in plan.steps {
        let done = step_progress(conn, recorded, model, &live, &step, &mut problem).await?;
        if let StepKind::RenameColumn(column) = step.kind
            && done < Phase::Contract
            && let Some(old) = column.renamed_from
            && live.column(old).is_some()
        {
            // Contract drops the old column: whatever depends on it must be carried over to
            // the new one, and what cannot be is reported now, before anything runs.
            let carry = crate::sql::carry::read(
                conn,
                model,
                column,
                &step.id,
                &crate::kinds::rename_views(model),
            )
            .await?;
            for blocker in carry.blockers {
                problem(Some(old), blocker);
            }
        }
        let abort_leftovers = done == Phase::Aborted
            && matches!(
                step.kind,
                StepKind::AddFilledColumn(_) | StepKind::RenameColumn(_)
            )
            && step
                .kind
                .column()
                .is_some_and(|c| live.column(c.name).is_some());
        let abort_leftovers = abort_leftovers
            || (done == Phase::Aborted && indexes::abort_leftovers(conn, model, &step).await?);
        let expand_incomplete = expand_incomplete(model, &live, &step, done);
        resolved.push(Resolved {
            recorded: recorded.get(&step.id).map(|r| r.phase),
            step,
            done,
            table_missing: false,
            abort_leftovers,
            expand_incomplete,
        });
    }
    unfilled_reads(&resolved, &mut problem);
    Ok(resolved)
}

/// Whether a backfilled column between expand and contract lacks its marker column (see
/// `sql::Helpers`): its expand ran under an earlier pgevolve. The marker is what the backfill
/// pass and the triggers read, so the expand must run again before anything else.
fn expand_incomplete(model: &ModelSpec, live: &LiveTable, step: &PlannedStep, done: Phase) -> bool {
    let StepKind::AddFilledColumn(column) = step.kind else {
        return false;
    };
    if !matches!(column.fill, Fill::Backfill(_))
        || !(Phase::Expand..Phase::Contract).contains(&done)
        || live.column(column.name).is_none()
    {
        return false;
    }
    let helpers = crate::sql::Helpers::new(model, column, &step.id);
    live.column(&helpers.marker).is_none()
}

/// `#[evolve(generated)]` against what the column is: the database must assign a value when
/// `insert_returning` leaves the column out, and a `GENERATED ALWAYS` identity must be declared,
/// since `insert` writes every field that is not.
fn generated_drift(
    model: &ModelSpec,
    column: &ColumnSpec,
    live: &LiveColumn,
    problem: &mut impl FnMut(Option<&str>, String),
) {
    if column.generated && !live.database_assigns() {
        problem(
            Some(column.name),
            format!(
                "field `{}` is declared `generated` but the column is neither an identity column nor a serial one \
                 (no `nextval(...)` default), so nothing would assign it when `insert_returning` leaves it out; \
                 remove `generated` and choose the values in the application, or make the column an identity by \
                 hand: `ALTER TABLE {} ALTER COLUMN {} ADD GENERATED BY DEFAULT AS IDENTITY (START WITH <max + 1>)` \
                 (the column must be NOT NULL; a brief exclusive lock, no rewrite)",
                column.field,
                Qualified(model.schema, model.table),
                Ident(column.name)
            ),
        );
    } else if !column.generated && live.is_identity_always() {
        problem(
            Some(column.name),
            format!(
                "the column is `GENERATED ALWAYS AS IDENTITY` but field `{0}` is not declared `generated`, so the \
                 accessors' `insert`, which writes every field, would fail (PostgreSQL refuses a value for it: \
                 428C9); add `#[evolve(generated)]` to field `{0}` and insert with `insert_returning`, which lets \
                 the database assign it",
                column.field
            ),
        );
    }
}

/// A backfill that has not run yet must not read a column another step of the model is still
/// filling: its batches and its fill trigger would compute from `NULL` wherever that step has
/// not reached yet, and validation would not notice a non-`NULL` wrong value.
fn unfilled_reads(resolved: &[Resolved], problem: &mut impl FnMut(Option<&str>, String)) {
    for r in resolved {
        let StepKind::AddFilledColumn(column) = r.step.kind else {
            continue;
        };
        let Fill::Backfill(expr) = column.fill else {
            continue;
        };
        if r.done >= Phase::Backfill {
            continue; // filled already, or aborted
        }
        for other in resolved {
            let Some(fill) = other.step.fill() else {
                continue;
            };
            if other.step.id == r.step.id
                || other.done >= Phase::Validate
                || !crate::sql::backfill::references(expr, fill.column.name)
            {
                continue;
            }
            let instead = match fill.column.renamed_from {
                Some(old) => format!(
                    "write the expression over `{old}`, which `{}` is renamed from and which holds every value now",
                    fill.column.name
                ),
                None => format!(
                    "deploy `{}` first and add `{}` in a later release, once that step is validated",
                    fill.column.name, column.name
                ),
            };
            problem(
                Some(column.name),
                format!(
                    "the backfill `{expr}` reads `{}`, which step {} ({}) is still filling: rows it has not reached \
                     would be computed from NULL; {instead}",
                    fill.column.name,
                    other.step.id,
                    other.step.describe()
                ),
            );
        }
    }
}

async fn step_progress(
    conn: &mut PgConnection,
    recorded: &Recorded,
    model: &ModelSpec,
    live: &LiveTable,
    step: &PlannedStep,
    problem: &mut impl FnMut(Option<&str>, String),
) -> Result<Phase> {
    let column = match step.kind {
        StepKind::CreateTable => return Ok(Phase::Expand),
        StepKind::CreateIndex(_)
        | StepKind::AddUnique(_)
        | StepKind::AddForeignKey(_)
        | StepKind::AddCheck(_)
        | StepKind::DropIndex(_) => {
            return indexes::progress(conn, recorded, model, live, step, problem).await;
        }
        StepKind::AddNullableColumn(c) => {
            return Ok(if live.column(c.name).is_some() {
                Phase::Expand
            } else {
                Phase::Pending
            });
        }
        StepKind::AddFilledColumn(c) => c,
        StepKind::RenameColumn(c) => {
            return rename_progress(recorded, live, step, c, problem);
        }
    };
    let recorded = recorded.get(&step.id).map(|r| r.phase);
    let live_col = live.column(column.name);
    let done = match (recorded, live_col) {
        (Some(Phase::Contract), _) => return Ok(Phase::Contract),
        (Some(Phase::Aborted), _) => return Ok(Phase::Aborted),
        (Some(phase), None) if phase >= Phase::Expand => {
            problem(
                Some(column.name),
                format!(
                    "step {} is recorded at phase {phase} but the column is gone (dropped by hand?); \
                     restore the column, or abort the step",
                    step.id
                ),
            );
            return Ok(phase);
        }
        (Some(phase), _) => phase,
        // Already NOT NULL with no record: nothing to do (created with the table, or by hand).
        (None, Some(c)) if c.not_null => return Ok(Phase::Contract),
        // A nullable column with no record: expand is idempotent, so adopt it from the start.
        (None, _) => Phase::Pending,
    };

    if done < Phase::Backfill {
        match column.fill {
            Fill::Backfill(expr) => {
                if live.primary_key.is_empty() {
                    problem(
                        Some(column.name),
                        "a backfill walks the primary key in batches but the table has none; add a primary key to the table first"
                            .into(),
                    );
                }
                let probe = format!(
                    "SELECT ({expr}) FROM {} AS {} LIMIT 0",
                    Qualified(model.schema, model.table),
                    crate::ident::Ident(model.table)
                );
                if let Err(sqlx::Error::Database(e)) = sqlx::query(AssertSqlSafe(&*probe))
                    .execute(&mut *conn)
                    .await
                {
                    problem(
                        Some(column.name),
                        format!(
                            "`backfill = \"{expr}\"` is not a valid expression over the table: {}; fix the expression",
                            e.message()
                        ),
                    );
                }
            }
            Fill::Default(expr) if done == Phase::Pending && live_col.is_none() => {
                match catalog::default_is_metadata_only(conn, column.sql_type, expr).await? {
                    Ok(true) => {}
                    Ok(false) => problem(
                        Some(column.name),
                        format!(
                            "`default = \"{expr}\"` is volatile: adding it would rewrite the whole table under an exclusive lock; \
                             use `backfill = \"{expr}\"` instead, which fills existing rows in batches"
                        ),
                    ),
                    Err(message) => problem(
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
}

fn rename_progress(
    recorded: &Recorded,
    live: &LiveTable,
    step: &PlannedStep,
    column: &'static crate::spec::ColumnSpec,
    problem: &mut impl FnMut(Option<&str>, String),
) -> Result<Phase> {
    let recorded = recorded.get(&step.id).map(|r| r.phase);
    let old = live.column(column.renamed_from.unwrap_or_default());
    let new = live.column(column.name);
    Ok(match (recorded, old, new) {
        (Some(p @ (Phase::Contract | Phase::Aborted)), _, _) => p,
        (Some(p), _, None) if p >= Phase::Expand => {
            problem(
                Some(column.name),
                format!(
                    "step {} is recorded at phase {p} but the new column is gone (dropped by hand?); restore it, or abort the step",
                    step.id
                ),
            );
            p
        }
        (Some(p), None, _) if p >= Phase::Expand => {
            problem(
                Some(column.renamed_from.unwrap_or_default()),
                format!(
                    "step {} is recorded at phase {p} but the old column is gone before contract (dropped by hand?); restore it",
                    step.id
                ),
            );
            p
        }
        (Some(p), _, _) => p,
        // The rename is long done: only the new column is left.
        (None, None, Some(_)) => Phase::Contract,
        // Not started, or started by hand: expand is idempotent, so run it.
        (None, _, _) => Phase::Pending,
    })
}
