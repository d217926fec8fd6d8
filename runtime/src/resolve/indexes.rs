//! Index and constraint steps against the live catalog. The catalog is the truth for these
//! steps (the state store only says whether one was aborted): a valid index with the planned
//! name and definition is adopted, an INVALID one is left for the build to drop and redo, and
//! anything else under the planned name is drift, reported before any DDL runs.

use sqlx::PgConnection;

use super::Recorded;
use crate::catalog::LiveTable;
use crate::catalog::indexes::{self, Probe, Referenced};
use crate::error::Result;
use crate::plan::{Plan, PlannedStep};
use crate::spec::ModelSpec;
use crate::sql::constraint;
use crate::step::{Phase, StepKind};

/// The last phase an index or constraint step completed, judged on the catalog.
pub(super) async fn progress(
    conn: &mut PgConnection,
    recorded: &Recorded,
    model: &ModelSpec,
    live: &LiveTable,
    step: &PlannedStep,
    problem: &mut impl FnMut(Option<&str>, String),
) -> Result<Phase> {
    let recorded = recorded.get(&step.id).map(|r| r.phase);
    if recorded == Some(Phase::Aborted) {
        return Ok(Phase::Aborted);
    }
    let Some(name) = step.object_name() else {
        return Ok(Phase::Pending);
    };
    if let Some(other) = Plan::for_model(model)
        .steps
        .iter()
        .take_while(|s| s.id != step.id)
        .find(|s| s.object_name().as_deref() == Some(name.as_str()))
    {
        problem(
            None,
            format!(
                "two declarations would both be named `{name}` ({}; {}); give one of them another `name = \"...\"`",
                other.describe(),
                step.describe()
            ),
        );
        return Ok(Phase::Pending);
    }
    match step.kind {
        StepKind::CreateIndex(_) | StepKind::AddUnique(_) => {
            index_progress(conn, model, live, step, &name, problem).await
        }
        StepKind::AddForeignKey(column) => fk_progress(conn, model, column, &name, problem).await,
        StepKind::AddCheck(check) => {
            let planned = match indexes::probe(conn, model, live, Probe::Check(check.expr)).await? {
                Ok(definition) => Some(definition),
                Err(message) => {
                    problem(
                        check.column,
                        format!(
                            "`check = \"{}\"` is not a valid CHECK expression on the table: {message}; fix the expression",
                            check.expr
                        ),
                    );
                    None
                }
            };
            Ok(match indexes::constraint_named(conn, model, &name).await? {
                None => Phase::Pending,
                Some(c) if c.kind == "c" && Some(&c.definition) == planned.as_ref() => {
                    if c.validated {
                        Phase::Validate
                    } else {
                        Phase::Expand
                    }
                }
                Some(_) if planned.is_none() => Phase::Pending,
                Some(c) => {
                    problem(
                        check.column,
                        format!(
                            "a constraint `{name}` already exists with a different definition (`{}`) but the struct declares \
                             `CHECK ({})`; give the check another `name = \"...\"`, or drop the existing constraint by hand",
                            c.definition, check.expr
                        ),
                    );
                    Phase::Pending
                }
            })
        }
        _ => Ok(Phase::Pending),
    }
}

async fn index_progress(
    conn: &mut PgConnection,
    model: &ModelSpec,
    live: &LiveTable,
    step: &PlannedStep,
    name: &str,
    problem: &mut impl FnMut(Option<&str>, String),
) -> Result<Phase> {
    let Some(def) = step.index() else {
        return Ok(Phase::Pending);
    };
    let column = match step.kind {
        StepKind::AddUnique(c) => Some(c.name),
        _ => None,
    };
    if let StepKind::AddUnique(c) = step.kind {
        // Any unique or primary key constraint on exactly this column satisfies the step.
        if indexes::unique_constraint(conn, model, c.name)
            .await?
            .is_some()
        {
            return Ok(Phase::Validate);
        }
        if let Some(other) = indexes::constraint_named(conn, model, name).await? {
            problem(
                column,
                format!(
                    "a constraint `{name}` already exists (`{}`), so the unique constraint of `{}` cannot take that name; \
                     rename or drop the existing constraint by hand",
                    other.definition, c.field
                ),
            );
            return Ok(Phase::Pending);
        }
    }
    let planned = match indexes::probe(conn, model, live, Probe::Index { unique: def.unique, body: &def.body() }).await? {
        Ok(key) => Some(key),
        Err(message) => {
            problem(
                column,
                format!(
                    "index `{name}` cannot be built: PostgreSQL rejects `{}`: {message}; fix the index attribute",
                    def.body()
                ),
            );
            None
        }
    };
    let Some(existing) = indexes::read_index(conn, model, name).await? else {
        return Ok(Phase::Pending);
    };
    if !existing.on_table {
        problem(
            column,
            format!(
                "`{name}` already exists in schema `{}` and is not an index of this table; give the index another \
                 `name = \"...\"`",
                model.schema
            ),
        );
        return Ok(Phase::Pending);
    }
    if !existing.valid {
        // Left by a failed or interrupted build, or being built right now by a session whose
        // process died: the build waits for that one, then drops what is INVALID and redoes it.
        return Ok(Phase::Pending);
    }
    match planned {
        // The declared index is there: adopt it (for `unique`, attaching it is what is left).
        Some(key) if key == existing.key => Ok(Phase::Expand),
        Some(_) => {
            problem(
                column,
                format!(
                    "index `{name}` already exists with a different definition (`{}`) but the struct declares `{}`; \
                     to replace it without downtime, give the declared index another `name = \"...\"` (it is built \
                     concurrently, and the old one is dropped at contract once no struct declares it), or drop the \
                     existing index by hand (`DROP INDEX CONCURRENTLY`)",
                    existing.definition,
                    def.body()
                ),
            );
            Ok(Phase::Pending)
        }
        None => Ok(Phase::Pending),
    }
}

async fn fk_progress(
    conn: &mut PgConnection,
    model: &ModelSpec,
    column: &'static crate::spec::ColumnSpec,
    name: &str,
    problem: &mut impl FnMut(Option<&str>, String),
) -> Result<Phase> {
    let Some(fk) = constraint::foreign_key(column) else {
        return Ok(Phase::Pending);
    };
    let referenced = constraint::referenced(model, fk).to_string();
    let target = format!(
        "{}.{}({})",
        fk.schema.unwrap_or(model.schema),
        fk.table,
        fk.column
    );
    let expected = match fk.on_delete {
        crate::spec::OnDelete::NoAction => "a",
        crate::spec::OnDelete::Restrict => "r",
        crate::spec::OnDelete::Cascade => "c",
        crate::spec::OnDelete::SetNull => "n",
    };
    if let Some(existing) =
        indexes::foreign_key(conn, model, column.name, &referenced, fk.column).await?
    {
        if existing.on_delete.as_deref() == Some(expected) {
            return Ok(if existing.validated {
                Phase::Validate
            } else {
                Phase::Expand
            });
        }
        problem(
            Some(column.name),
            format!(
                "foreign key `{}` already references {target} but as `{}`, and field `{}` declares ON DELETE {}; \
                 change `on_delete` to match, or drop the existing constraint by hand",
                existing.name,
                existing.definition,
                column.field,
                fk.on_delete.as_sql()
            ),
        );
        return Ok(Phase::Pending);
    }
    if let Some(other) = indexes::constraint_named(conn, model, name).await? {
        problem(
            Some(column.name),
            format!(
                "a constraint `{name}` already exists with a different definition (`{}`), so the foreign key of \
                 field `{}` cannot take that name; rename or drop the existing constraint by hand",
                other.definition, column.field
            ),
        );
        return Ok(Phase::Pending);
    }
    match indexes::referenced(conn, &referenced, fk.column).await? {
        // Possibly created by another model of this evolution; if not, expand says so.
        Referenced::NoTable | Referenced::Ok => {}
        Referenced::NoColumn => problem(
            Some(column.name),
            format!(
                "field `{}` references {target}, but that table has no column `{}`; fix `references`",
                column.field, fk.column
            ),
        ),
        Referenced::NotUnique => problem(
            Some(column.name),
            format!(
                "field `{}` references {target}, but `{}` has no primary key or unique constraint, which PostgreSQL \
                 requires of a referenced column; add `#[evolve(unique)]` to it in one deploy and the foreign key \
                 in the next, or reference the primary key",
                column.field, fk.column
            ),
        ),
    }
    Ok(Phase::Pending)
}

/// Whether an aborted index or constraint step left its object behind (the abort was
/// interrupted): then boot runs the abort's statements again.
pub(super) async fn abort_leftovers(
    conn: &mut PgConnection,
    model: &ModelSpec,
    step: &PlannedStep,
) -> Result<bool> {
    let Some(name) = step.object_name() else {
        return Ok(false);
    };
    Ok(match step.kind {
        StepKind::CreateIndex(_) => indexes::read_index(conn, model, &name)
            .await?
            .is_some_and(|ix| ix.on_table),
        StepKind::AddUnique(_) => {
            indexes::read_index(conn, model, &name)
                .await?
                .is_some_and(|ix| ix.on_table)
                || indexes::constraint_named(conn, model, &name)
                    .await?
                    .is_some()
        }
        StepKind::AddForeignKey(_) | StepKind::AddCheck(_) => {
            indexes::constraint_named(conn, model, &name)
                .await?
                .is_some()
        }
        _ => false,
    })
}
