//! A column type change (`type_from = "..."`): a new column of the new type, kept in step with
//! the old one both ways by a trigger, backfilled with `using`, validated (no row whose columns
//! disagree), reads switched, writes of the old column retired, then at contract the old column
//! dropped and the new one given its name, with every index, constraint, default and grant of
//! the old column carried over (as a rename carries them).

use super::resolving::BoxFuture;
use super::{
    FieldAccess, Kind, PlannedPhase, RenamedAtContract, Resolving, Runner, Shown, Verification,
    backfill_phase,
};
use crate::error::Result;
use crate::ident::Ident;
use crate::spec::{ColumnSpec, ModelSpec, TypeChange};
use crate::sql::backfill::FillColumn;
use crate::sql::carry::{Between, Carry};
use crate::sql::type_change::{self, PARAM, TypeHelpers};
use crate::sql::{self, Statement};
use crate::step::{Phase, StepId};

pub(crate) struct ChangeType(pub &'static ColumnSpec);

impl ChangeType {
    fn change(&self) -> TypeChange {
        self.0.type_change.unwrap_or(TypeChange::DEFAULT)
    }

    fn between(&self) -> Between {
        Between {
            old: self.0.name.to_string(),
            new: type_change::shadow_name(self.0),
            takes_old_name: true,
        }
    }
}

impl Kind for ChangeType {
    fn name(&self) -> &'static str {
        "change_type"
    }

    fn identity(&self) -> Vec<&'static str> {
        let tc = self.change();
        vec![
            self.0.name,
            tc.from,
            self.0.sql_type,
            tc.using.unwrap_or_default(),
            tc.down.unwrap_or_default(),
        ]
    }

    fn phases(&self) -> &'static [Phase] {
        super::CARRYING_PHASES
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, shown: &Shown) -> Vec<PlannedPhase> {
        let c = self.0;
        let h = TypeHelpers::new(model, c, id);
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "one short transaction under lock_timeout: new column of the new type, trigger keeping both columns in step both ways \
                       (a writer that sets one column gets the other computed: `using` up, `down` back)",
                statements: type_change::expand(model, c, &h),
            },
            backfill_phase(model, &[self.fill_column(model, id)], shown),
            PlannedPhase {
                phase: Phase::Validate,
                note: "every index and constraint of the old column built over the new one (see below), the NOT NULL check validated \
                       (writes go on), then no row may have columns that disagree both ways",
                statements: type_change::validate(model, c, &h),
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
                note: "gated, one short transaction: NOT NULL through the validated check, trigger and old column dropped, \
                       the new column renamed to the old name (metadata only: no rewrite, no scan)",
                statements: type_change::contract(model, c, &h),
            },
        ]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "change type of column {}.{} from {} to {}",
            model.qualified_name(),
            self.0.name,
            self.change().from,
            self.0.sql_type
        )
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        type_change::abort(model, &TypeHelpers::new(model, self.0, id))
    }

    fn fill(&self, model: &ModelSpec, id: &StepId) -> Option<FillColumn> {
        Some(self.fill_column(model, id))
    }

    /// The new build reads the old column converted with `using` until the new one is filled
    /// (`COALESCE(new, using(old))` meanwhile), the new one from switch; it writes the new column
    /// and the old one converted with `down` until contract.
    fn access(&self, phase: Phase) -> Option<FieldAccess> {
        let c = self.0;
        // The model only gives the `using`/`down` subqueries their alias: the table's name.
        let model = ModelSpec {
            table: "t",
            ..ModelSpec::DEFAULT
        };
        let shadow: &'static str = shadow_static(c);
        let (old, new) = (Ident(c.name).to_string(), Ident(shadow).to_string());
        let up = type_change::up_of(&model, c, &old);
        let down = type_change::down_param(&model, c);
        Some(match phase {
            Phase::Pending | Phase::Aborted => FieldAccess {
                read: up,
                writes: vec![c.name],
                values: vec![down],
            },
            Phase::Expand | Phase::Backfill | Phase::Validate => FieldAccess {
                read: format!("COALESCE({new}, {up})"),
                writes: vec![shadow, c.name],
                values: vec![PARAM.to_string(), down],
            },
            // Both columns in retire too: an insert naming only the new column would leave the
            // old one its default, not the value old builds must read until contract.
            Phase::Switch | Phase::Retire => FieldAccess {
                read: new,
                writes: vec![shadow, c.name],
                values: vec![PARAM.to_string(), down],
            },
            Phase::Contract => FieldAccess::plain(c),
        })
    }

    /// The new column, named by the accessors from expand to retire, is renamed at contract.
    fn renamed_at_contract(&self, phase: Phase) -> Option<RenamedAtContract> {
        (Phase::Expand..=Phase::Retire)
            .contains(&phase)
            .then(|| RenamedAtContract {
                from: type_change::shadow_name(self.0),
                to: self.0.name,
                sql_type: self.0.sql_type,
                contract_next: phase >= Phase::Switch,
            })
    }

    fn verifications(&self, model: &ModelSpec) -> Vec<Verification> {
        let (c, tc) = (self.0, self.change());
        let mut checks = Vec::new();
        if !c.nullable {
            checks.push(Verification {
                sql: type_change::count_nulls(model, c),
                message: format!(
                    "rows have NULL in the new column of {} ({} converted to {}): make the field an `Option`, or give `using` a value for them, then boot again",
                    c.name, tc.from, c.sql_type
                ),
                proven_by_not_null_check: true,
                condition: None,
            });
        }
        checks.push(Verification {
            sql: type_change::count_differences(model, c),
            message: format!(
                "rows of {} have an old ({}) and a new ({}) value that disagree both ways: a writer bypassed the trigger \
                 (session_replication_role?); set the new column to NULL on those rows and boot again to refill them",
                c.name, tc.from, c.sql_type
            ),
            proven_by_not_null_check: false,
            condition: Some(type_change::differences(model, c)),
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
        Box::pin(async move { progress(self, cx).await })
    }

    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        let shadow = TypeHelpers::new(cx.model, self.0, cx.id).shadow;
        let left = cx.live.column(&shadow).is_some();
        Box::pin(async move { Ok(left) })
    }

    fn carries_dependents(&self) -> bool {
        true
    }

    fn carried_between(&self) -> Option<Between> {
        Some(self.between())
    }

    /// What validate builds over the new column, and what contract carries.
    fn plan_notes(&self, model: &ModelSpec) -> Vec<String> {
        sql::carry::plan_lines(model, &self.between())
    }

    fn contract_carrying(&self, model: &ModelSpec, id: &StepId, carry: &Carry) -> Vec<Statement> {
        let h = TypeHelpers::new(model, self.0, id);
        type_change::contract_carrying(model, self.0, &h, carry)
    }
}

impl ChangeType {
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

/// The new column's name as a `&'static str` (accessors keep column names so), made once per
/// distinct change and kept for the process: a few bytes per declared type change.
fn shadow_static(column: &ColumnSpec) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let name = type_change::shadow_name(column);
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    names
        .entry(name.clone())
        .or_insert_with(|| Box::leak(name.into_boxed_str()))
}

/// How far a step that shadows `column` with a new column `shadow` is (a type change, a widened
/// key): the recorded phase, or with no record `Contract` when the column already has the new
/// type (`changed`) and no shadow is left, `Pending` otherwise (not started, or an expand
/// interrupted: expand is idempotent, so it runs). A step recorded past expand whose shadow is
/// gone is drift.
pub(super) fn shadow_phase(
    cx: &mut Resolving<'_, '_>,
    column: &ColumnSpec,
    shadow: &str,
    changed: bool,
) -> Phase {
    let new = cx.live.column(shadow).is_some();
    match (cx.recorded_phase(), new) {
        (Some(p @ (Phase::Contract | Phase::Aborted)), _) => p,
        (Some(p), false) if p >= Phase::Expand => {
            cx.problems.add(
                Some(column.name),
                format!(
                    "step {} is recorded at phase {p} but the new column {shadow} is gone (dropped by hand?); abort the step, then boot again to start over",
                    cx.id
                ),
            );
            p
        }
        (Some(p), _) => p,
        (None, false) if changed => Phase::Contract,
        (None, _) => Phase::Pending,
    }
}

async fn progress(kind: &ChangeType, cx: &mut Resolving<'_, '_>) -> Result<Phase> {
    let (column, tc) = (kind.0, kind.change());
    let shadow = type_change::shadow_name(column);
    let old = cx
        .live
        .column(column.name)
        .map(|c| (c.type_oid, c.type_name.clone()));
    let oids = crate::catalog::type_oids(cx.conn, &[tc.from, column.sql_type]).await?;
    let (from, to) = (oids[0], oids[1]);
    let id = cx.id.clone();
    let changed = old.as_ref().is_some_and(|(oid, _)| Some(*oid) == to);
    let done = shadow_phase(cx, column, &shadow, changed);
    if done >= Phase::Contract {
        return Ok(done);
    }
    if from.is_some() && from == to {
        cx.problems.add(
            Some(column.name),
            format!(
                "`type_from = \"{}\"` of field `{}` is the field's own type `{}`; remove `type_from`, or write the column's previous type",
                tc.from, column.field, column.sql_type
            ),
        );
        return Ok(done);
    }
    if from.is_none() {
        cx.problems.add(
            Some(column.name),
            format!(
                "PostgreSQL has no type `{}` (`type_from` of field `{}`); write the column's current type as PostgreSQL spells it",
                tc.from, column.field
            ),
        );
        return Ok(done);
    }
    match &old {
        Some((oid, name)) if Some(*oid) != from => {
            cx.problems.add(
                Some(column.name),
                format!(
                    "the column has type `{name}`, not `{}` as `type_from` of field `{}` says; write its current type in `type_from`",
                    tc.from, column.field
                ),
            );
            return Ok(done);
        }
        _ => {}
    }
    // `using` and `down` must compute a value of the other type: tried on NULLs, touching no
    // table, before anything runs.
    let probe = type_change::probe(cx.model, column);
    let mut tx = sqlx::Connection::begin(&mut *cx.conn).await?;
    let tried = sqlx::query(sqlx::AssertSqlSafe(probe))
        .execute(&mut *tx)
        .await;
    tx.rollback().await?;
    if let Err(e) = tried {
        cx.problems.add(
            Some(column.name),
            format!(
                "the conversion of field `{}` from `{}` to `{}` does not work: {e}; give `using = \"<SQL over {}>\"` \
                 (and `down` for the way back) where a plain cast does not convert the values",
                column.field, tc.from, column.sql_type, column.name
            ),
        );
        return Ok(done);
    }
    if old.is_some() {
        // Contract drops the old column: whatever depends on it must be carried over to the new
        // one, and what cannot be is reported now, before anything runs.
        let carry = super::read_carry(cx.conn, cx.model, column, &id, &kind.between()).await?;
        for blocker in carry.blockers {
            cx.problems.add(Some(column.name), blocker);
        }
    }
    Ok(done)
}
