//! An integer primary key widened to `bigint` (`#[evolve(primary_key, type_from = "integer")]`
//! on an `i64` field), with every foreign key that references it, in one deploy.
//!
//! The key table goes as a type change goes (`change_type`): a `bigint` shadow kept in step both
//! ways by a trigger, backfilled, a `NOT NULL` check validated. Every column of another table
//! that references the key through a foreign key (found in the catalog when each phase runs, so
//! the referencing tables need not be models of this build) gets the same: a shadow, a trigger,
//! a fill in batches of heap pages. Before switch, the shadow's unique index is built
//! `CONCURRENTLY`, and each referencing shadow gets a new foreign
//! key to the key's shadow, `NOT VALID` then validated. At contract, each referencing table in
//! one short transaction (old foreign key and column dropped, shadow renamed, new foreign key
//! given the old name), then the key table in one (old primary key and column dropped, shadow
//! renamed, the primary key added again under its name `USING INDEX` the unique index, default
//! or identity moved): catalog changes only, each under lock_timeout with retries.

use super::change_type::ChangeType;
use super::resolving::BoxFuture;
use super::{
    FieldAccess, Kind, PlannedPhase, RenamedAtContract, Resolving, Runner, Shown, Verification,
    backfill_phase,
};
use crate::error::Result;
use crate::spec::{ColumnSpec, ModelSpec};
use crate::sql::backfill::FillColumn;
use crate::sql::key_widening::{self as kw, KeyFacts, Referencing};
use crate::sql::type_change::{self, TypeHelpers};
use crate::sql::{self, Statement};
use crate::step::{Phase, StepId};

pub(crate) struct WidenKey(pub &'static ColumnSpec);

impl WidenKey {
    fn as_change(&self) -> ChangeType {
        ChangeType(self.0)
    }

    /// A referencing column as plans show it (the engine reads the real ones).
    fn shown_referencing(model: &ModelSpec) -> Referencing {
        Referencing {
            schema: model.schema.to_string(),
            table: "<referencing table>".into(),
            column: "<column>".into(),
            column_type: "integer".into(),
            constraint: "<its foreign key>".into(),
            not_null: true,
            on_update: "a".into(),
            on_delete: "a".into(),
            match_type: "s".into(),
            deferrable: false,
            deferred: false,
            indexes: vec![("<its index>".into(), false, "btree".into())],
        }
    }
}

impl Kind for WidenKey {
    fn name(&self) -> &'static str {
        "widen_key"
    }

    fn identity(&self) -> Vec<&'static str> {
        let tc = self
            .0
            .type_change
            .unwrap_or(crate::spec::TypeChange::DEFAULT);
        vec![self.0.name, tc.from, self.0.sql_type]
    }

    fn phases(&self) -> &'static [Phase] {
        super::CARRYING_PHASES
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, shown: &Shown) -> Vec<PlannedPhase> {
        let c = self.0;
        let h = TypeHelpers::new(model, c, id);
        let r = Self::shown_referencing(model);
        let rh = r.helpers(id);
        let facts = KeyFacts::shown(model, c);
        let mut validate = kw::expand_referencing(&r, &rh);
        validate.push(Statement::always(kw::fill_referencing(&r, &rh)));
        validate.extend(kw::index_copies(&r, &rh, id).into_iter().map(|(_, s)| s));
        validate.push(kw::key_unique_index(model, &h.shadow, id));
        validate.extend(kw::validate_referencing_check(&r, &rh));
        validate.extend(kw::new_foreign_key(model, &h.shadow, &r, &rh));
        validate.extend(type_change::validate(model, c, &h));
        let mut contract = kw::contract_referencing(&r, &rh, id);
        contract.extend(kw::contract_key(model, c, &h, &facts, id));
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "one short transaction under lock_timeout on the key table: a bigint shadow of the key, a trigger keeping both \
                       in step both ways, its NOT NULL check NOT VALID",
                statements: type_change::expand(model, c, &h),
            },
            backfill_phase(model, &[self.fill_column(model, id)], shown),
            PlannedPhase {
                phase: Phase::Validate,
                note: "for every column that references the key through a foreign key (read from the catalog; shown for one): \
                       a bigint shadow with its trigger (one short transaction), filled in batches of heap pages; then the key \
                       shadow's unique index built CONCURRENTLY, the NOT NULL checks validated, \
                       a new foreign key per referencing shadow NOT VALID (SHARE ROW EXCLUSIVE, no scan) then VALIDATE \
                       (SHARE UPDATE EXCLUSIVE: writes go on), then no row may have columns that disagree",
                statements: validate,
            },
            PlannedPhase {
                phase: Phase::Switch,
                note: "no DDL: accessors of every instance read the new column; writes still go to both",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Retire,
                note: "no DDL: old builds must be gone: contract waits until every live instance acknowledged",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Contract,
                note: "gated; one short transaction per referencing table, then one for the key table (names, default and \
                       sequence read from the catalog; shown for a serial key `<table>_pkey`): catalog changes only, \
                       no rewrite, no scan, the primary key added again USING INDEX",
                statements: contract,
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "widen primary key {}.{} from {} to {}, with the foreign keys that reference it",
            model.qualified_name(),
            self.0.name,
            self.0
                .type_change
                .unwrap_or(crate::spec::TypeChange::DEFAULT)
                .from,
            self.0.sql_type
        )
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    /// The referencing tables' helpers first (their foreign keys reference the key's shadow),
    /// then the key table's, as a type change's abort.
    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        let mut out = vec![kw::abort_referencing(model, id)];
        out.extend(self.as_change().abort(model, id));
        out
    }

    fn fill(&self, model: &ModelSpec, id: &StepId) -> Option<FillColumn> {
        Some(self.fill_column(model, id))
    }

    /// As a type change: both columns written until contract, reads of the shadow from switch.
    fn access(&self, phase: Phase) -> Option<FieldAccess> {
        self.as_change().access(phase)
    }

    fn renamed_at_contract(&self, phase: Phase) -> Option<RenamedAtContract> {
        self.as_change().renamed_at_contract(phase)
    }

    fn verifications(&self, model: &ModelSpec) -> Vec<Verification> {
        self.as_change().verifications(model)
    }

    fn runner(&self, phase: Phase) -> Runner {
        match phase {
            Phase::Backfill => Runner::Backfill,
            Phase::Validate | Phase::Contract => Runner::KeyWidening,
            _ => Runner::Statements,
        }
    }

    fn changes_accessors(&self) -> bool {
        true
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move { progress(self, cx).await })
    }

    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        let shadow = TypeHelpers::new(cx.model, self.0, cx.id).shadow;
        let left = cx.live.column(&shadow).is_some();
        Box::pin(async move { Ok(left) })
    }

    fn plan_notes(&self, _model: &ModelSpec) -> Vec<String> {
        [
            "referencing columns (every single-column foreign key to the key, read from the catalog when each phase runs)",
            "their plain single-column indexes: built again over the shadows CONCURRENTLY in validate, their names given back at contract",
            "a multi-column foreign key to the key, a reference that is not integer, or another index on a referencing column: drift at boot, nothing runs",
        ]
        .map(String::from)
        .to_vec()
    }
}

impl WidenKey {
    fn fill_column(&self, model: &ModelSpec, id: &StepId) -> FillColumn {
        FillColumn {
            step: id.clone(),
            column: self.0,
            expr: type_change::fill_expr(model, self.0),
            marker: None,
            target: Some(TypeHelpers::new(model, self.0, id).shadow),
        }
    }
}

/// The id of the step that widens `schema.table(column)` from `from` to `bigint`: what
/// `StepId::for_step` gives a `WidenKey` of that column (a widened reference in another model
/// follows it, see `widen_reference`).
pub(crate) fn step_id(schema: &str, table: &str, column: &str, from: &str) -> StepId {
    StepId::from_stored(format!(
        "{:016x}",
        crate::step::fnv1a(&["v1", "widen_key", schema, table, column, from, "bigint"])
    ))
}

/// Why a referencing column cannot be widened with the key, if it cannot.
pub(crate) fn refusal(
    r: &Referencing,
    columns: i32,
    partitioned: bool,
    others: &[String],
) -> Option<String> {
    if columns != 1 {
        return Some(format!(
            "foreign key {} of {} references the key together with other columns; widening a key that a multi-column \
             foreign key references is not supported, and nothing was changed: drop that foreign key (or widen its \
             columns by hand) first, then boot again",
            r.constraint,
            r.name()
        ));
    }
    if partitioned {
        return Some(format!(
            "foreign key {} of {} references the key from a partitioned table (or a partition); widening a key that a \
             partitioned table references is not supported, and nothing was changed: drop that foreign key during the \
             widening and add it again afterwards, or widen both by hand",
            r.constraint,
            r.name()
        ));
    }
    if r.column_type != "integer" {
        return Some(format!(
            "column {} of {} references the key but has type `{}`, not `integer`; only integer references are widened with \
             the key: make it integer, or drop its foreign key ({}) first",
            r.column,
            r.name(),
            r.column_type,
            r.constraint
        ));
    }
    if !others.is_empty() {
        return Some(format!(
            "column {} of {} references the key and has indexes that are not plain single-column ones ({}); only those \
             are built again over the widened column: drop them, or widen the column by hand",
            r.column,
            r.name(),
            others.join(", ")
        ));
    }
    None
}

/// The referencing columns, read from the catalog, with what refuses them.
pub(crate) async fn read_referencing(
    conn: &mut sqlx::PgConnection,
    model: &ModelSpec,
    column: &ColumnSpec,
) -> Result<Vec<(Referencing, Option<String>)>> {
    use sqlx::Row;
    let rows = sqlx::query(kw::referencing())
        .bind(sql::table(model).to_string())
        .bind(column.name)
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let indexes: Vec<String> = row.try_get("indexes")?;
        let r = Referencing {
            schema: row.try_get("schema")?,
            table: row.try_get("table")?,
            column: row.try_get("column")?,
            column_type: row.try_get("column_type")?,
            constraint: row.try_get("constraint")?,
            not_null: row.try_get("not_null")?,
            on_update: row.try_get("on_update")?,
            on_delete: row.try_get("on_delete")?,
            match_type: row.try_get("match_type")?,
            deferrable: row.try_get("deferrable")?,
            deferred: row.try_get("deferred")?,
            indexes: indexes
                .iter()
                .filter_map(|s| {
                    let mut parts = s.rsplitn(3, ':');
                    let method = parts.next()?.to_string();
                    let unique = parts.next()? == "true";
                    Some((parts.next()?.to_string(), unique, method))
                })
                .collect(),
        };
        let columns: i32 = row.try_get("columns")?;
        let partitioned: bool = row.try_get("partitioned")?;
        let others: Vec<String> = row.try_get("others")?;
        let refused = refusal(&r, columns, partitioned, &others);
        out.push((r, refused));
    }
    Ok(out)
}

async fn progress(kind: &WidenKey, cx: &mut Resolving<'_, '_>) -> Result<Phase> {
    let column = kind.0;
    let shadow = type_change::shadow_name(column);
    let old = cx.live.column(column.name).map(|c| c.type_name.clone());
    // Widened long ago: the key is bigint and no shadow is left.
    let widened = old.as_deref() == Some("bigint");
    let done = super::change_type::shadow_phase(cx, column, &shadow, widened);
    if done >= Phase::Contract {
        return Ok(done);
    }
    let from = column
        .type_change
        .unwrap_or(crate::spec::TypeChange::DEFAULT)
        .from;
    match old.as_deref() {
        Some("integer" | "smallint") => {}
        Some(other) => {
            cx.problems.add(
                Some(column.name),
                format!(
                    "the key column has type `{other}`, not `{from}` as `type_from` of field `{}` says; write its current type in `type_from`",
                    column.field
                ),
            );
            return Ok(done);
        }
        None => return Ok(done),
    }
    let partitioned: bool = sqlx::query_scalar(kw::key_table_partitioned())
        .bind(sql::table(cx.model).to_string())
        .fetch_one(&mut *cx.conn)
        .await?;
    if partitioned {
        cx.problems.add(
            Some(column.name),
            format!(
                "table {} is partitioned (or a partition); widening the key of a partitioned table is not supported, and \
                 nothing was changed: remove `type_from` from field `{}` and widen the key by hand, partition by partition",
                cx.model.qualified_name(),
                column.field
            ),
        );
        return Ok(done);
    }
    for (_, refused) in read_referencing(cx.conn, cx.model, column).await? {
        if let Some(why) = refused {
            cx.problems.add(Some(column.name), why);
        }
    }
    Ok(done)
}

/// Drift across the build's models, before any DDL: a model whose column references a key this
/// build widens must declare it as a widened reference (`type_from = "integer"` with
/// `references`, on an `i64` field), and a widened reference needs its key widened by this
/// build (or already bigint).
pub(crate) async fn build_problems(
    conn: &mut sqlx::PgConnection,
    plans: &[crate::plan::Plan],
    recorded: &super::Recorded,
    problems: &mut Vec<crate::error::DriftProblem>,
) -> Result<()> {
    use crate::step::StepKind;
    let drift = |model: &ModelSpec, column: &str, message: String| crate::error::DriftProblem {
        table: model.qualified_name(),
        column: Some(column.to_string()),
        message,
    };
    let mut keys: Vec<StepId> = Vec::new();
    for plan in plans.iter().filter(|p| !p.model.table_dropped) {
        for step in &plan.steps {
            let StepKind::WidenKey(key) = step.kind else {
                continue;
            };
            keys.push(step.id.clone());
            if recorded
                .get(&step.id)
                .is_some_and(|r| matches!(r.phase, Phase::Contract | Phase::Aborted))
            {
                continue;
            }
            let model = &plan.model;
            let key_type: Option<String> = sqlx::query_scalar(
                "SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute \
                 WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped",
            )
            .bind(sql::table(model).to_string())
            .bind(key.name)
            .fetch_optional(&mut *conn)
            .await?;
            if !matches!(key_type.as_deref(), Some("integer" | "smallint")) {
                continue;
            }
            let from = key
                .type_change
                .unwrap_or(crate::spec::TypeChange::DEFAULT)
                .from;
            let target = format!("{}({})", model.table, key.name);
            for (r, _) in read_referencing(conn, model, key).await? {
                let Some((other, c)) = plans
                    .iter()
                    .filter(|p| {
                        !p.model.table_dropped
                            && p.model.schema == r.schema
                            && p.model.table == r.table
                    })
                    .find_map(|p| {
                        p.model
                            .columns
                            .iter()
                            .find(|c| c.name == r.column)
                            .map(|c| (&p.model, c))
                    })
                else {
                    continue;
                };
                let declare = format!(
                    "declare field `{}` `i64` with `#[evolve(type_from = \"{}\", references = \"{target}\")]`: the column is then \
                     widened by the key's step (one shadow, trigger and fill) and its accessors follow that step",
                    c.field, r.column_type
                );
                if super::widen_reference::is_widened_reference(c) {
                    let follows = super::widen_reference::WidenReference(c).key_step(other);
                    if follows != step.id {
                        problems.push(drift(
                            other,
                            c.name,
                            format!(
                                "field `{}` is a widened reference to {}, but its `type_from`/`references` do not name the \
                                 key that step {} widens ({} from `{from}`); {declare}",
                                c.field,
                                c.references.map(|f| f.table).unwrap_or_default(),
                                step.id,
                                target
                            ),
                        ));
                    }
                } else if c.type_change.is_some() {
                    problems.push(drift(
                        other,
                        c.name,
                        format!(
                            "field `{}` declares a type change of {}.{}, which references {target}, a key this build widens \
                             (step {}): a type change of its own would compete with the key's widening of the same column; \
                             nothing was changed: {declare}",
                            c.field,
                            r.name(),
                            r.column,
                            step.id
                        ),
                    ));
                } else {
                    problems.push(drift(
                        other,
                        c.name,
                        format!(
                            "column {}.{} references {target}, a key this build widens to bigint (step {}), but field `{}` \
                             declares `{}` with no `type_from`; nothing was changed: {declare}",
                            r.name(),
                            r.column,
                            step.id,
                            c.field,
                            c.sql_type
                        ),
                    ));
                }
            }
        }
    }
    // A widened reference whose key no model of the build widens, while the column is integer.
    for plan in plans.iter().filter(|p| !p.model.table_dropped) {
        for step in &plan.steps {
            let StepKind::WidenReference(c) = step.kind else {
                continue;
            };
            let room = super::widen_reference::WidenReference(c);
            let key = room.key_step(&plan.model);
            if keys.contains(&key) || recorded.contains_key(&key) {
                continue;
            }
            let column_type: Option<String> = sqlx::query_scalar(
                "SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute \
                 WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped",
            )
            .bind(sql::table(&plan.model).to_string())
            .bind(c.name)
            .fetch_optional(&mut *conn)
            .await?;
            if column_type.as_deref() == Some("bigint") {
                continue;
            }
            let (schema, table, column) = room.target(&plan.model);
            problems.push(drift(
                &plan.model,
                c.name,
                format!(
                    "field `{}` is widened with the key {schema}.{table}.{column} it references (`type_from` with \
                     `references`), but no model of this build widens that key; nothing was changed: give the key \
                     `#[evolve(primary_key, type_from = \"{}\")]` in its model and add that model to the evolver, \
                     or remove `type_from` and keep the field `i32`",
                    c.field,
                    room.key_from()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TypeChange;
    use crate::step::StepKind;

    static KEY: ColumnSpec = ColumnSpec {
        field: "id",
        name: "id",
        sql_type: "bigint",
        primary_key: true,
        type_change: Some(TypeChange {
            from: "integer",
            ..TypeChange::DEFAULT
        }),
        ..ColumnSpec::DEFAULT
    };

    /// A widened reference in another model finds the key's step by this id.
    #[test]
    fn step_id_is_the_widen_key_steps_id() {
        let model = ModelSpec {
            table: "accounts",
            ..ModelSpec::DEFAULT
        };
        assert_eq!(
            step_id(model.schema, "accounts", "id", "integer"),
            StepId::for_step(&model, &StepKind::WidenKey(&KEY))
        );
    }
}
