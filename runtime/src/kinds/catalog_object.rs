//! Index and constraint steps against the live catalog, shared by the rooms of the index,
//! unique, foreign key, check and drop-index kinds. The catalog is the truth for these steps
//! (the state store only says whether one was aborted): a valid index with the planned name and
//! definition is adopted, an INVALID one is left for the build to drop and redo, and anything
//! else under the planned name is drift, reported before any DDL runs.

use super::resolving::Resolving;
use crate::catalog::indexes::{self, Probe, Referenced};
use crate::error::Result;
use crate::spec::{CheckSpec, ColumnSpec};
use crate::sql::constraint;
use crate::sql::index::IndexDef;
use crate::step::Phase;

/// What every index and constraint step checks first: an aborted step stays aborted, and two
/// declarations may not take one name. `Some`: the step's phase is decided.
pub(super) fn settled(cx: &mut Resolving<'_, '_>, name: &str, describe: &str) -> Option<Phase> {
    if cx.recorded_phase() == Some(Phase::Aborted) {
        return Some(Phase::Aborted);
    }
    if let Some((_, other)) = cx
        .earlier
        .iter()
        .find(|(object, _)| object.as_deref() == Some(name))
    {
        cx.problems.add(
            None,
            format!(
                "two declarations would both be named `{name}` ({other}; {describe}); give one of them another `name = \"...\"`"
            ),
        );
        return Some(Phase::Pending);
    }
    None
}

/// A CHECK: adopted when a constraint of its name has the same definition.
pub(super) async fn check_progress(
    cx: &mut Resolving<'_, '_>,
    check: &'static CheckSpec,
    name: &str,
) -> Result<Phase> {
    let Resolving {
        conn,
        model,
        live,
        problems,
        ..
    } = cx;
    let planned = match indexes::probe(conn, model, live, Probe::Check(check.expr)).await? {
        Ok(definition) => Some(definition),
        Err(message) => {
            problems.add(
                check.column,
                format!(
                    "`check = \"{}\"` is not a valid CHECK expression on the table: {message}; fix the expression",
                    check.expr
                ),
            );
            None
        }
    };
    Ok(match indexes::constraint_named(conn, model, name).await? {
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
            problems.add(
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

/// An index, or the index of a unique constraint on `unique` (then any unique or primary key
/// constraint on exactly that column satisfies the step).
pub(super) async fn index_progress(
    cx: &mut Resolving<'_, '_>,
    def: &IndexDef,
    unique: Option<&'static ColumnSpec>,
    name: &str,
) -> Result<Phase> {
    let Resolving {
        conn,
        model,
        live,
        problems,
        ..
    } = cx;
    let column = unique.map(|c| c.name);
    if let Some(c) = unique {
        // Any unique or primary key constraint on exactly this column satisfies the step.
        if indexes::unique_constraint(conn, model, c.name)
            .await?
            .is_some()
        {
            return Ok(Phase::Validate);
        }
        if let Some(other) = indexes::constraint_named(conn, model, name).await? {
            problems.add(
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
    let planned = match indexes::probe(
        conn,
        model,
        live,
        Probe::Index {
            unique: def.unique,
            body: &def.body(),
        },
    )
    .await?
    {
        Ok(key) => Some(key),
        Err(message) => {
            problems.add(
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
        problems.add(
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
            problems.add(
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

/// A foreign key: adopted when one from the column to the same target with the same
/// `ON DELETE` exists, whatever its name.
pub(super) async fn fk_progress(
    cx: &mut Resolving<'_, '_>,
    column: &'static ColumnSpec,
    name: &str,
) -> Result<Phase> {
    let Resolving {
        conn,
        model,
        problems,
        ..
    } = cx;
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
        problems.add(
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
        problems.add(
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
        Referenced::NoColumn => problems.add(
            Some(column.name),
            format!(
                "field `{}` references {target}, but that table has no column `{}`; fix `references`",
                column.field, fk.column
            ),
        ),
        Referenced::NotUnique => problems.add(
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

/// Whether an aborted index step left its index (or, for `constraint`, its constraint) behind:
/// the abort was interrupted, and boot runs its statements again.
pub(super) async fn index_left(
    cx: &mut Resolving<'_, '_>,
    name: &str,
    constraint: bool,
) -> Result<bool> {
    Ok(indexes::read_index(cx.conn, cx.model, name)
        .await?
        .is_some_and(|ix| ix.on_table)
        || (constraint && constraint_left(cx, name).await?))
}

/// Whether an aborted constraint step left its constraint behind.
pub(super) async fn constraint_left(cx: &mut Resolving<'_, '_>, name: &str) -> Result<bool> {
    Ok(indexes::constraint_named(cx.conn, cx.model, name)
        .await?
        .is_some())
}
