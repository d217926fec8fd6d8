//! A column type change PostgreSQL makes without rewriting the table or rebuilding its indexes
//! (`varchar(20)` to `varchar(50)` or `text`, `numeric(10,2)` to `numeric(12,2)`, ...): one
//! `ALTER COLUMN ... TYPE` at expand, in a short transaction under lock_timeout. Old builds read
//! and write the column as before. Anything not known to be rewrite-free goes through a new
//! column instead (`change_type`); so does a change whose `using` or `down` is written.

use super::resolving::BoxFuture;
use super::{Kind, PlannedPhase, Resolving, Shown};
use crate::error::Result;
use crate::spec::{ColumnSpec, ModelSpec, TypeChange};
use crate::sql::type_change;
use crate::step::{Phase, StepId};
use pgevolve_naming::normalized_type;

pub(crate) struct ChangeTypeInPlace(pub &'static ColumnSpec);

/// Why changing `from` to `to` rewrites nothing, when it is known not to (PostgreSQL changes only
/// the catalog and keeps the indexes); `None` otherwise, including every case where it depends
/// on a setting (timestamp to timestamptz only with `TimeZone` UTC).
pub(crate) fn rewrite_free(change: &TypeChange, to: &str) -> Option<&'static str> {
    if change.using.is_some() || change.down.is_some() {
        return None;
    }
    let (from, to) = (normalized_type(change.from), normalized_type(to));
    let parsed = |t: &str| -> Option<(String, Vec<u32>)> {
        let (base, args) = match t.split_once('(') {
            Some((base, rest)) => (base, rest.strip_suffix(')')?),
            None => (t, ""),
        };
        let args = if args.is_empty() {
            Vec::new()
        } else {
            args.split(',')
                .map(|a| a.parse().ok())
                .collect::<Option<Vec<u32>>>()?
        };
        Some((base.to_string(), args))
    };
    let ((from_base, from_args), (to_base, to_args)) = (parsed(&from)?, parsed(&to)?);
    match (from_base.as_str(), to_base.as_str()) {
        ("character varying", "text") => Some("varchar to text is binary coercible"),
        ("text", "character varying") if to_args.is_empty() => {
            Some("text to an unbounded varchar is binary coercible")
        }
        ("character varying", "character varying") => match (&from_args[..], &to_args[..]) {
            (_, []) => Some("dropping a varchar length limit checks nothing"),
            ([n], [m]) if m > n => Some("a longer varchar limit checks nothing already stored"),
            _ => None,
        },
        ("numeric", "numeric") => {
            let scale = |args: &[u32]| args.get(1).copied().unwrap_or(0);
            match (&from_args[..], &to_args[..]) {
                (_, []) => Some("dropping a numeric precision limit checks nothing"),
                ([p, ..], [q, ..]) if q > p && scale(&from_args) == scale(&to_args) => Some(
                    "a higher numeric precision with the same scale checks nothing already stored",
                ),
                _ => None,
            }
        }
        ("cidr", "inet") if to_args.is_empty() => Some("cidr to inet is binary coercible"),
        _ => None,
    }
}

impl ChangeTypeInPlace {
    fn change(&self) -> TypeChange {
        self.0.type_change.unwrap_or(TypeChange::DEFAULT)
    }
}

impl Kind for ChangeTypeInPlace {
    fn name(&self) -> &'static str {
        "change_type_in_place"
    }

    fn identity(&self) -> Vec<&'static str> {
        vec![self.0.name, self.change().from, self.0.sql_type]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand]
    }

    fn plan(&self, model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![PlannedPhase {
            phase: Phase::Expand,
            note: "in place, no rewrite: one short transaction under lock_timeout that changes only the catalog \
                   (indexes kept); refused as drift while a CHECK, foreign key, view, or expression or partial index \
                   depends on the column (PostgreSQL would check it again under ACCESS EXCLUSIVE, or rebuild it)",
            statements: type_change::alter_in_place(model, self.0),
        }]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "change type of column {}.{} from {} to {} in place ({})",
            model.qualified_name(),
            self.0.name,
            self.change().from,
            self.0.sql_type,
            rewrite_free(&self.change(), self.0.sql_type).unwrap_or("no rewrite"),
        )
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let (column, tc) = (self.0, self.change());
            if let Some(Phase::Expand) = cx.recorded_phase() {
                return Ok(Phase::Expand);
            }
            let Some(live) = cx.live.column(column.name) else {
                return Ok(Phase::Pending);
            };
            let live_type = normalized_type(&live.type_name);
            if live_type == normalized_type(column.sql_type) {
                return Ok(Phase::Expand);
            }
            if live_type != normalized_type(tc.from) {
                cx.problems.add(
                    Some(column.name),
                    format!(
                        "the column has type `{}`, not `{}` as `type_from` of field `{}` says; write its current type in `type_from`",
                        live.type_name, tc.from, column.field
                    ),
                );
                return Ok(Phase::Pending);
            }
            for blocker in crate::catalog::in_place_blockers(cx.conn, cx.model, column.name).await?
            {
                cx.problems.add(
                    Some(column.name),
                    format!(
                        "{blocker} depends on the column: changing its type in place would check it again (a scan under \
                         ACCESS EXCLUSIVE) or fail; drop it for the change, or write `using = \"{}\"` to go through a new \
                         column instead",
                        column.name
                    ),
                );
            }
            Ok(Phase::Pending)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(from: &'static str, to: &str) -> bool {
        let change = TypeChange {
            from,
            ..TypeChange::DEFAULT
        };
        rewrite_free(&change, to).is_some()
    }

    #[test]
    fn only_changes_known_to_need_no_rewrite_are_in_place() {
        assert!(free("varchar(20)", "varchar(50)"));
        assert!(free("character varying(20)", "text"));
        assert!(free("varchar(20)", "character varying"));
        assert!(free("text", "varchar"));
        assert!(free("numeric(10,2)", "numeric(12, 2)"));
        assert!(free("decimal(10,2)", "numeric"));
        assert!(free("cidr", "inet"));
        assert!(
            !free("varchar(50)", "varchar(20)"),
            "shorter checks every row"
        );
        assert!(!free("varchar(20)", "varchar(20)"));
        assert!(!free("text", "varchar(20)"));
        assert!(
            !free("numeric(10,2)", "numeric(12,3)"),
            "another scale rewrites"
        );
        assert!(!free("numeric(10,2)", "numeric(9,2)"));
        assert!(!free("integer", "bigint"));
        assert!(!free("timestamp", "timestamptz"), "depends on TimeZone");
        assert!(!free("varchar(20)", "varchar(x)"));
        let with_using = TypeChange {
            from: "varchar(20)",
            using: Some("upper(label)"),
            down: None,
        };
        assert!(rewrite_free(&with_using, "text").is_none());
    }
}
