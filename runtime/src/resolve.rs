//! Holds the plan against the live catalog and the state store: which steps are already
//! satisfied, where each pending one resumes, and every way the database differs from what the
//! models expect (drift), all found before any DDL runs.

use sqlx::PgConnection;

use crate::catalog::{self, LiveColumn};
use crate::error::{DriftProblem, Result};
use crate::ident::{Ident, Qualified};
use crate::plan::{Plan, PlannedStep};
use crate::spec::{ColumnSpec, Fill, ModelSpec};

pub(crate) use crate::kinds::Recorded;
use crate::kinds::{Problems, Resolving};
use crate::step::Phase;

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
    plan: &Plan,
    problems: &mut Vec<DriftProblem>,
) -> Result<Vec<Resolved>> {
    let model = &plan.model;
    let mut problems = Problems::new(model, problems);
    // A table still under its old name is resolved under that name: a rename changes no column,
    // index or constraint, and every step's expand runs after the rename's (plan order).
    let before_rename;
    let model = match renamed_table(conn, recorded, model, &mut problems).await? {
        Renamed::No => model,
        Renamed::Drift => return Ok(Vec::new()),
        Renamed::Under(name) => {
            before_rename = ModelSpec {
                table: name,
                ..*model
            };
            &before_rename
        }
    };
    let live = catalog::read_table(conn, model).await?;

    // A dropped table has no columns to check: its one step judges the table.
    if model.table_dropped {
        let mut resolved = Vec::new();
        for step in plan.steps.iter().cloned() {
            let room = step.room();
            let mut cx = Resolving {
                conn: &mut *conn,
                recorded,
                model,
                live: &live,
                id: &step.id,
                earlier: &[],
                problems: &mut problems,
            };
            let done = room.progress(&mut cx).await?;
            resolved.push(Resolved {
                recorded: recorded.get(&step.id).map(|r| r.phase),
                step,
                done,
                table_missing: false,
                abort_leftovers: false,
                expand_incomplete: false,
            });
        }
        return Ok(resolved);
    }

    if !live.exists {
        return Ok(plan
            .steps
            .iter()
            .cloned()
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
            // An enum type this build creates (`kinds::enum_type`), for a column it adds.
            if column.enum_type.is_some() && live.column(column.name).is_none() {
                continue;
            }
            problems.add(
                Some(column.name),
                format!(
                    "PostgreSQL has no type `{}` (field `{}`); fix `sql_type` or the field's type",
                    column.sql_type, column.field
                ),
            );
            continue;
        };
        if let Some(live_col) = live.column(column.name) {
            generated_drift(model, column, live_col, &mut problems);
        }
        match live.column(column.name) {
            // A declared type change judges the column's type itself (see `kinds::change_type`).
            Some(live_col) if live_col.type_oid != *oid && column.type_change.is_none() => problems.add(
                Some(column.name),
                format!(
                    "the column has type `{}` but field `{}` declares `{}`; change the field's type (or `sql_type`) to match, \
                     or declare the change with `#[evolve(type_from = \"{}\")]` (a new column kept in sync, then swapped in; \
                     `using = \"...\"` when a plain cast does not convert the values)",
                    live_col.type_name, column.field, column.sql_type, live_col.type_name
                ),
            ),
            Some(live_col)
                if !live_col.not_null
                    && !column.nullable
                    && column.fill == Fill::None
                    && column.computed.is_none()
                    && column.set_not_null.is_none()
                    && column.renamed_from.is_none() =>
            {
                problems.add(
                    Some(column.name),
                    format!(
                        "the column is nullable but field `{}` is not an `Option`; make the field `Option<_>`, \
                         or add `#[evolve(set_not_null, backfill = \"<SQL for the NULL rows>\")]` to fill the NULLs \
                         and enforce NOT NULL",
                        column.field
                    ),
                )
            }
            Some(_) => {}
            None if column.primary_key => problems.add(
                Some(column.name),
                format!(
                    "primary key column is missing (field `{}`); adding a primary key to a live table is not supported: \
                     add it by hand, or fix `#[evolve(column = \"...\")]`",
                    column.field
                ),
            ),
            None if column.generated => problems.add(
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
                    Some(old_col) if old_col.type_oid != *oid => problems.add(
                        Some(old),
                        format!(
                            "the column has type `{}` but field `{}` (renamed from it) declares `{}`; a rename keeps the type:                              change the field's type (or `sql_type`) to match",
                            old_col.type_name, column.field, column.sql_type
                        ),
                    ),
                    Some(_) => {}
                    None => problems.add(
                        Some(column.name),
                        format!(
                            "neither the old column `{old}` nor the new column `{}` exists (field `{}`);                              fix `renamed_from`, or drop it if the rename is long done",
                            column.name, column.field
                        ),
                    ),
                }
            }
            None if !column.nullable
                && column.fill == Fill::None
                && column.computed.is_none()
                && column.set_not_null.is_none() =>
            {
                problems.add(
                Some(column.name),
                format!(
                    "the column does not exist and field `{}` gives no way to fill it; add \
                     `#[evolve(backfill = \"<SQL over the row>\")]`, `#[evolve(default = \"<constant>\")]` or \
                     `#[evolve(backfill_with = \"<Rust function>\", inputs(..))]`, or make the field `Option<_>`",
                    column.field
                ),
            )
            }
            None => {}
        }
    }

    undeclared_columns(model, &live, &mut problems);

    let spec_pk: Vec<&str> = model.primary_key().map(|c| c.name).collect();
    if !spec_pk.is_empty() && spec_pk != live.primary_key {
        problems.add(
            None,
            format!(
                "the primary key is ({}) in the database but the struct declares ({}); fix the `#[evolve(primary_key)]` fields",
                live.primary_key.join(", "),
                spec_pk.join(", ")
            ),
        );
    }

    let mut resolved = Vec::new();
    // The objects of the steps resolved so far: two declarations may not take one name.
    let mut earlier: Vec<(Option<String>, String)> = Vec::new();
    for step in plan.steps.iter().cloned() {
        let room = step.room();
        let mut cx = Resolving {
            conn: &mut *conn,
            recorded,
            model,
            live: &live,
            id: &step.id,
            earlier: &earlier,
            problems: &mut problems,
        };
        let done = room.progress(&mut cx).await?;
        let abort_leftovers = done == Phase::Aborted && room.abort_leftovers(&mut cx).await?;
        let expand_incomplete = room.expand_incomplete(&cx, done);
        earlier.push((step.object_name(), step.describe()));
        resolved.push(Resolved {
            recorded: recorded.get(&step.id).map(|r| r.phase),
            step,
            done,
            table_missing: false,
            abort_leftovers,
            expand_incomplete,
        });
    }
    unfilled_reads(&resolved, &mut problems);
    Ok(resolved)
}

/// Where a model's table rename stands, before anything else is read.
enum Renamed {
    /// No rename, or the table has its new name.
    No,
    /// The table is under this name: its old one, before the model's rename; or its new one,
    /// for a model of the build from before a rename in flight (its name is the view's).
    Under(&'static str),
    /// Neither name, or both, is a table: reported.
    Drift,
}

/// A declared table rename (`renamed_from` on the struct) against the catalog: exactly one of
/// the old and the new name must be a table (the old one may be the rename's view).
async fn renamed_table(
    conn: &mut PgConnection,
    recorded: &Recorded,
    model: &ModelSpec,
    problems: &mut Problems<'_>,
) -> Result<Renamed> {
    let Some(from) = model.renamed_from else {
        return Ok(
            match crate::kinds::renamed_under(conn, recorded, model).await? {
                Some(to) => Renamed::Under(to),
                None => Renamed::No,
            },
        );
    };
    let (old, new) = crate::kinds::table_relations(conn, model.schema, from, model.table).await?;
    let (old_table, new_table) = (
        crate::kinds::is_table(old.as_deref()),
        crate::kinds::is_table(new.as_deref()),
    );
    let (s, to, rust) = (model.schema, model.table, model.rust_name);
    let message = match (old.as_deref(), new.as_deref()) {
        (_, Some(_)) if new_table && (old.is_none() || old.as_deref() == Some("v")) => {
            return Ok(Renamed::No);
        }
        (Some(_), None) if old_table => return Ok(Renamed::Under(from)),
        (None, None) => format!(
            "neither the old table {s}.{from} nor the new table {s}.{to} exists, and struct `{rust}` declares              `renamed_from = \"{from}\"`; fix `renamed_from` (or `table`), or remove `renamed_from` to have \
             pgevolve create the table"
        ),
        _ if old_table && new_table => format!(
            "both the old table {s}.{from} and the new table {s}.{to} exist, so struct `{rust}`'s \
             `renamed_from = \"{from}\"` cannot rename one to the other; if {to} is the table to keep, remove \
             `renamed_from` (and drop {from} by hand once nothing uses it); if {from} holds the data, drop or \
             rename the other {to} by hand, then boot again"
        ),
        _ => format!(
            "struct `{rust}` declares `renamed_from = \"{from}\"`, but {s}.{from} is {} and {s}.{to} is {}: \
             one of them must be a table; rename or drop the other relation by hand, or fix `renamed_from`",
            relkind_name(old.as_deref()),
            relkind_name(new.as_deref())
        ),
    };
    problems.add(None, message);
    Ok(Renamed::Drift)
}

/// A `relkind` for messages.
fn relkind_name(relkind: Option<&str>) -> &'static str {
    match relkind {
        None => "missing",
        Some("r" | "p") => "a table",
        Some("v") => "a view",
        Some("m") => "a materialized view",
        Some("i" | "I") => "an index",
        Some("S") => "a sequence",
        Some("f") => "a foreign table",
        Some(_) => "another kind of relation",
    }
}

/// `#[evolve(generated)]` against what the column is: the database must assign a value when
/// `insert_returning` leaves the column out, and a `GENERATED ALWAYS` identity must be declared,
/// since `insert` writes every field that is not.
fn generated_drift(
    model: &ModelSpec,
    column: &ColumnSpec,
    live: &LiveColumn,
    problems: &mut Problems<'_>,
) {
    if column.generated && !live.database_assigns() {
        problems.add(
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
        problems.add(
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

/// A column the table has and the struct neither maps nor marks dropped, NOT NULL with nothing
/// the database would assign: every insert of this build, which never names it, would fail.
/// pgevolve never drops a column only because a field is gone (a removed field may be a
/// mistake); the fix is to say so.
fn undeclared_columns(model: &ModelSpec, live: &catalog::LiveTable, problems: &mut Problems<'_>) {
    let known = |name: &str| {
        model.columns.iter().any(|c| c.name == name || c.renamed_from == Some(name))
            || model.dropped.contains(&name)
            // pgevolve's own helper columns (a backfill's marker column).
            || name.starts_with("pgevolve_")
    };
    for column in live.columns.iter().filter(|c| !known(&c.name)) {
        if column.not_null && column.default.is_none() && !column.database_assigns() {
            problems.add(
                Some(&column.name),
                format!(
                    "the column is NOT NULL without a default and struct `{}` has no field for it, so every insert \
                     of this build (which never names it) would fail; if the column is meant to go, add \
                     `#[evolve(dropped(\"{}\"))]` to the struct (NOT NULL is relaxed at expand, the column dropped \
                     at contract); if the field was removed by mistake, restore it",
                    model.rust_name, column.name
                ),
            );
        }
    }
}

/// A backfill that has not run yet must not read a column another step of the model is still
/// filling: its batches and its fill trigger would compute from `NULL` wherever that step has
/// not reached yet, and validation would not notice a non-`NULL` wrong value.
fn unfilled_reads(resolved: &[Resolved], problems: &mut Problems<'_>) {
    for r in resolved {
        // A `backfill = "..."` expression (with its marker column); a rename's fill copies its
        // old column and reads nothing else.
        let Some(own) = r.step.fill().filter(|f| f.marker.is_some()) else {
            continue;
        };
        let (column, expr) = (own.column, own.expr.as_str());
        if r.done >= Phase::Backfill {
            continue; // filled already, or aborted
        }
        for other in resolved {
            let Some(fill) = other.step.fill() else {
                continue;
            };
            // A type change's old column holds every value meanwhile: reading it is fine.
            if other.step.id == r.step.id
                || fill.target.is_some()
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
            problems.add(
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
