//! A table renamed (`#[evolve(table = "new", renamed_from = "old")]`): renamed at expand with
//! an updatable view under the old name in the same short transaction, so builds that still use
//! the old name keep reading and writing; retired once every live instance acknowledged; the view
//! dropped at contract. An abort before retire drops the view and renames the table back.

use sqlx::{AssertSqlSafe, Row};

use super::resolving::BoxFuture;
use super::{Kind, PlannedPhase, Resolving, Shown};
use crate::error::Result;
use crate::spec::ModelSpec;
use crate::sql::Statement;
use crate::sql::rename_table::{self, TableRename};
use crate::step::{Phase, StepId};

pub(crate) struct RenameTable {
    pub from: &'static str,
    pub to: &'static str,
}

impl RenameTable {
    fn names<'m>(&self, model: &'m ModelSpec) -> TableRename<'m> {
        TableRename {
            schema: model.schema,
            from: self.from,
            to: self.to,
        }
    }
}

/// The `relkind` under the old and the new name (`None`: no relation of that name).
pub(crate) async fn relations(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    from: &str,
    to: &str,
) -> Result<(Option<String>, Option<String>)> {
    let sql = rename_table::relations(&TableRename { schema, from, to });
    let row = sqlx::query(AssertSqlSafe(sql)).fetch_one(conn).await?;
    Ok((row.try_get("old")?, row.try_get("new")?))
}

/// The table a model's table name reaches through the view of a rename in flight: `model.table`
/// is a view over one table of its schema, and the state store has that table's rename from
/// `model.table` between expand and contract. An instance of the build from before the rename
/// that starts again meanwhile is then resolved against that table (its accessors go on using
/// the view). Leaked once found, to make a `ModelSpec` of it: a rename in flight, once per boot.
pub(crate) async fn renamed_under(
    conn: &mut sqlx::PgConnection,
    recorded: &super::Recorded,
    model: &ModelSpec,
) -> Result<Option<&'static str>> {
    let bases: Vec<String> = sqlx::query_scalar(AssertSqlSafe(rename_table::view_bases(
        model.schema,
        model.table,
    )))
    .fetch_all(conn)
    .await?;
    let [base] = bases.as_slice() else {
        return Ok(None);
    };
    let to: &'static str = Box::leak(base.clone().into_boxed_str());
    let renamed = ModelSpec {
        table: to,
        renamed_from: Some(model.table),
        ..*model
    };
    let kind = crate::step::StepKind::RenameTable {
        from: model.table,
        to,
    };
    let id = StepId::for_step(&renamed, &kind);
    let in_flight = recorded
        .get(&id)
        .is_some_and(|r| (Phase::Expand..Phase::Contract).contains(&r.phase));
    Ok(in_flight.then_some(to))
}

/// Whether a `relkind` is a table (plain or partitioned).
pub(crate) fn is_table(relkind: Option<&str>) -> bool {
    matches!(relkind, Some("r" | "p"))
}

impl Kind for RenameTable {
    fn name(&self) -> &'static str {
        "rename_table"
    }

    fn identity(&self) -> Vec<&'static str> {
        vec![self.from]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand, Phase::Retire, Phase::Contract]
    }

    fn plan(&self, model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        let names = self.names(model);
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "one short transaction under lock_timeout, catalog only (no scan, no rewrite): the rename \
                       (sequences and identity, indexes, constraints, triggers, grants and foreign keys follow the \
                       table), then an updatable view under the old name (security_invoker from PostgreSQL 15) \
                       with the table's grants, through which older builds keep reading and writing",
                statements: rename_table::expand(&names),
            },
            PlannedPhase {
                phase: Phase::Retire,
                note: "no DDL: contract waits until every live instance acknowledged, so no build that still \
                       uses the old name is running",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Contract,
                note: "gated (deploy window, explicit contract() or auto_contract), after every acknowledgement; \
                       one short transaction: DROP VIEW of the old name",
                statements: rename_table::contract(&names),
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "rename table {}.{} to {}.{} (a view keeps the old name until contract)",
            model.schema, self.from, model.schema, self.to
        )
    }

    fn object_name(&self, _model: &ModelSpec, _id: &StepId) -> Option<String> {
        Some(self.from.to_string())
    }

    fn abort(&self, model: &ModelSpec, _id: &StepId) -> Vec<Statement> {
        rename_table::abort(&self.names(model))
    }

    fn changes_accessors(&self) -> bool {
        true
    }

    /// Until expand, and once aborted, this build's accessors use the old name too: the table
    /// has it.
    fn accessed_table(&self, phase: Phase) -> Option<&'static str> {
        matches!(phase, Phase::Pending | Phase::Aborted).then_some(self.from)
    }

    /// New name a table and old name a view: expanded (or retired, as recorded). New name a
    /// table and no old name: contracted. Old name a table and no new name: pending. (Neither,
    /// or two tables, is drift, reported by `resolve` before any step.)
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let recorded = cx.recorded_phase();
            if recorded == Some(Phase::Aborted) {
                return Ok(Phase::Aborted);
            }
            let (old, new) = relations(cx.conn, cx.model.schema, self.from, self.to).await?;
            Ok(match (old.as_deref(), is_table(new.as_deref())) {
                (None, true) => Phase::Contract,
                (Some("v"), true) => recorded
                    .filter(|p| *p >= Phase::Expand)
                    .unwrap_or(Phase::Expand),
                _ => Phase::Pending,
            })
        })
    }

    /// An interrupted abort: the table still has the new name, or the view is still there.
    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (old, new) = relations(cx.conn, cx.model.schema, self.from, self.to).await?;
            Ok(is_table(new.as_deref()) || old.as_deref() == Some("v"))
        })
    }
}
