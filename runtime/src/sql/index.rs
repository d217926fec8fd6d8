//! The SQL of index steps: `CREATE [UNIQUE] INDEX CONCURRENTLY` (run outside any transaction),
//! the unique constraint attached to a concurrently built index, `DROP INDEX CONCURRENTLY`, and
//! the query that finds the duplicates a unique build met.

use super::{Exists, Statement, table};
use crate::ident::{Ident, Qualified};
use crate::plan::PlannedPhase;
use crate::spec::{ColumnSpec, IndexMethod, IndexSpec, ModelSpec};
use crate::step::{Phase, StepId, StepKind};

/// An index as pgevolve builds it: from an [`IndexSpec`], or the unique index behind
/// `#[evolve(unique)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexDef {
    pub name: String,
    pub unique: bool,
    pub method: IndexMethod,
    pub columns: Vec<&'static str>,
    pub include: Vec<&'static str>,
    pub predicate: Option<&'static str>,
}

impl IndexDef {
    /// The index of a `CreateIndex` step.
    pub fn for_index(model: &ModelSpec, index: &'static IndexSpec, id: &StepId) -> IndexDef {
        IndexDef {
            name: match index.name {
                Some(name) => name.to_string(),
                None => conventional_name(model.table, index.columns, "idx", id),
            },
            unique: index.unique,
            method: index.method,
            columns: index.columns.to_vec(),
            include: index.include.to_vec(),
            predicate: index.predicate,
        }
    }

    /// The unique index of an `AddUnique` step, named like the constraint it becomes.
    pub fn for_unique(model: &ModelSpec, column: &'static ColumnSpec, id: &StepId) -> IndexDef {
        IndexDef {
            name: unique_name(model, column, id),
            unique: true,
            method: IndexMethod::Btree,
            columns: vec![column.name],
            include: Vec::new(),
            predicate: None,
        }
    }

    /// The index a step builds, if it builds one.
    pub fn for_step(model: &ModelSpec, kind: &StepKind, id: &StepId) -> Option<IndexDef> {
        match *kind {
            StepKind::CreateIndex(index) => Some(IndexDef::for_index(model, index, id)),
            StepKind::AddUnique(column) => Some(IndexDef::for_unique(model, column, id)),
            _ => None,
        }
    }

    /// Everything after `ON <table>`: `USING btree ("a", "b") INCLUDE ("c") WHERE (...)`.
    pub fn body(&self) -> String {
        let list = |cols: &[&str]| {
            cols.iter()
                .map(|c| Ident(c).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut body = format!("USING {} ({})", self.method.as_str(), list(&self.columns));
        if !self.include.is_empty() {
            body.push_str(&format!(" INCLUDE ({})", list(&self.include)));
        }
        if let Some(predicate) = self.predicate {
            body.push_str(&format!(" WHERE ({predicate})"));
        }
        body
    }

    fn create_keyword(&self) -> &'static str {
        if self.unique {
            "CREATE UNIQUE INDEX"
        } else {
            "CREATE INDEX"
        }
    }

    /// The column list for messages: `(a, b)`.
    pub fn describe_columns(&self) -> String {
        format!("({})", self.columns.join(", "))
    }
}

/// `<table>_<columns>_<suffix>`, as PostgreSQL names an index or constraint it is not given a
/// name for. When that exceeds 63 bytes, the table and column part is cut and the step id's
/// first 8 digits keep the name unique.
pub(crate) fn conventional_name(
    table: &str,
    columns: &[&str],
    suffix: &str,
    id: &StepId,
) -> String {
    let base = std::iter::once(table)
        .chain(columns.iter().copied())
        .collect::<Vec<_>>()
        .join("_");
    let plain = format!("{base}_{suffix}");
    if plain.len() <= 63 {
        return plain;
    }
    let mut cut = 63 - suffix.len() - 10;
    let mut base = base;
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    base.truncate(cut);
    format!("{base}_{}_{suffix}", &id.as_str()[..8])
}

/// The name of the unique constraint (and of its index) of `#[evolve(unique)]`.
pub(crate) fn unique_name(model: &ModelSpec, column: &ColumnSpec, id: &StepId) -> String {
    conventional_name(model.table, &[column.name], "key", id)
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS`: outside any transaction, on a dedicated
/// connection (see `crate::concurrent`).
pub(crate) fn create_concurrently(model: &ModelSpec, index: &IndexDef) -> Statement {
    Statement::always(format!(
        "{} CONCURRENTLY IF NOT EXISTS {} ON {} {}",
        index.create_keyword(),
        Ident(&index.name),
        table(model),
        index.body()
    ))
}

/// `CREATE [UNIQUE] INDEX` in the transaction that creates the table: nobody can see the table
/// before it commits, and it is empty, so there is nothing to build concurrently.
pub(crate) fn create_with_table(model: &ModelSpec, index: &IndexDef) -> Statement {
    Statement::always(format!(
        "{} IF NOT EXISTS {} ON {} {}",
        index.create_keyword(),
        Ident(&index.name),
        table(model),
        index.body()
    ))
}

/// `DROP INDEX CONCURRENTLY IF EXISTS`: outside any transaction.
pub(crate) fn drop_concurrently(model: &ModelSpec, name: &str) -> Statement {
    Statement::always(format!(
        "DROP INDEX CONCURRENTLY IF EXISTS {}",
        Qualified(model.schema, name)
    ))
}

/// Attaches a valid unique index as a constraint: brief ACCESS EXCLUSIVE, no scan.
pub(crate) fn attach_unique(model: &ModelSpec, name: &str) -> Statement {
    Statement {
        sql: format!(
            "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE USING INDEX {}",
            table(model),
            Ident(name),
            Ident(name)
        ),
        unless: Some(Exists::Constraint(name.to_string())),
    }
}

/// `ALTER TABLE ... DROP CONSTRAINT IF EXISTS`.
pub(crate) fn drop_constraint(model: &ModelSpec, name: &str) -> Statement {
    Statement::always(format!(
        "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
        table(model),
        Ident(name)
    ))
}

/// Whether a statement must run outside any transaction block.
pub(crate) fn is_concurrent(statement: &Statement) -> bool {
    [
        "CREATE INDEX CONCURRENTLY",
        "CREATE UNIQUE INDEX CONCURRENTLY",
        "DROP INDEX CONCURRENTLY",
    ]
    .iter()
    .any(|p| statement.sql.starts_with(p))
}

/// Up to `limit` key values that appear more than once (where the index's predicate holds and
/// no key column is NULL), most repeated first: one row per value, the key as a text array and
/// how many rows share it.
pub(crate) fn duplicates(model: &ModelSpec, index: &IndexDef, limit: u32) -> String {
    let cols: Vec<String> = index.columns.iter().map(|c| Ident(c).to_string()).collect();
    let mut filter: Vec<String> = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect();
    if let Some(predicate) = index.predicate {
        filter.push(format!("({predicate})"));
    }
    format!(
        "SELECT ARRAY[{}], count(*) FROM {} AS {} WHERE {} GROUP BY {} HAVING count(*) > 1 \
         ORDER BY count(*) DESC LIMIT {limit}",
        cols.iter()
            .map(|c| format!("{c}::text"))
            .collect::<Vec<_>>()
            .join(", "),
        table(model),
        Ident(model.table),
        filter.join(" AND "),
        cols.join(", ")
    )
}

/// How a concurrent phase runs, for reviewers of `plan()`.
const BUILD_NOTE: &str = "in the background, not at boot: outside any transaction, on a dedicated connection with \
lock_timeout = 0 and statement_timeout = 0 (SHARE UPDATE EXCLUSIVE blocks neither reads nor writes, and the build \
waits for older transactions by design); an INVALID index of this name is dropped CONCURRENTLY first, \
pg_index.indisvalid is checked after";

const UNIQUE_BUILD_NOTE: &str = "in the background, not at boot: outside any transaction, on a dedicated connection \
with lock_timeout = 0 and statement_timeout = 0 (SHARE UPDATE EXCLUSIVE blocks neither reads nor writes); an INVALID \
index of this name is dropped CONCURRENTLY first; on duplicates the INVALID index is dropped and the error lists them";

/// The phases of an index step (`CreateIndex`, `AddUnique`, `DropIndex`).
pub(crate) fn phases(model: &ModelSpec, kind: &StepKind, id: &StepId) -> Vec<PlannedPhase> {
    match *kind {
        StepKind::CreateIndex(index) => vec![PlannedPhase {
            phase: Phase::Expand,
            note: BUILD_NOTE,
            statements: vec![create_concurrently(
                model,
                &IndexDef::for_index(model, index, id),
            )],
        }],
        StepKind::AddUnique(column) => {
            let index = IndexDef::for_unique(model, column, id);
            vec![
                PlannedPhase {
                    phase: Phase::Expand,
                    note: UNIQUE_BUILD_NOTE,
                    statements: vec![create_concurrently(model, &index)],
                },
                PlannedPhase {
                    phase: Phase::Validate,
                    note: "one short transaction under lock_timeout, retried: the valid index becomes the \
                           constraint (ACCESS EXCLUSIVE for an instant, no scan)",
                    statements: vec![attach_unique(model, &index.name)],
                },
            ]
        }
        StepKind::DropIndex(name) => vec![PlannedPhase {
            phase: Phase::Contract,
            note: "gated; outside any transaction, lock_timeout = 0: SHARE UPDATE EXCLUSIVE, waits for the \
                   transactions that may use the index, blocks neither reads nor writes",
            statements: vec![drop_concurrently(model, name)],
        }],
        _ => Vec::new(),
    }
}

/// What undoes an index step: the constraint (if attached), then the index, concurrently.
pub(crate) fn abort(model: &ModelSpec, kind: &StepKind, id: &StepId) -> Vec<Statement> {
    match *kind {
        StepKind::CreateIndex(index) => {
            vec![drop_concurrently(
                model,
                &IndexDef::for_index(model, index, id).name,
            )]
        }
        StepKind::AddUnique(column) => {
            let name = unique_name(model, column, id);
            vec![
                drop_constraint(model, &name),
                drop_concurrently(model, &name),
            ]
        }
        _ => Vec::new(),
    }
}

/// One line for an index step.
pub(crate) fn describe(model: &ModelSpec, kind: &StepKind, id: &StepId) -> String {
    let table = model.qualified_name();
    match *kind {
        StepKind::CreateIndex(index) => {
            let def = IndexDef::for_index(model, index, id);
            let mut line = format!(
                "create {}index {} on {table} using {} {}",
                if def.unique { "unique " } else { "" },
                def.name,
                def.method.as_str(),
                def.describe_columns()
            );
            if !def.include.is_empty() {
                line.push_str(&format!(" include ({})", def.include.join(", ")));
            }
            if let Some(predicate) = def.predicate {
                line.push_str(&format!(" where {predicate}"));
            }
            line
        }
        StepKind::AddUnique(column) => format!(
            "add unique constraint {} on {table} ({})",
            unique_name(model, column, id),
            column.name
        ),
        StepKind::DropIndex(name) => {
            format!("drop index {name} on {table} (no longer declared)")
        }
        _ => String::new(),
    }
}

/// The name of the index or constraint a step creates (recorded in the state store, so that an
/// index removed from the struct can still be found and dropped).
pub(crate) fn object_name(model: &ModelSpec, kind: &StepKind, id: &StepId) -> Option<String> {
    match *kind {
        StepKind::CreateIndex(_) | StepKind::AddUnique(_) => {
            IndexDef::for_step(model, kind, id).map(|d| d.name)
        }
        StepKind::AddForeignKey(column) => Some(super::constraint::fk_name(model, column, id)),
        StepKind::AddCheck(check) => Some(super::constraint::check_name(model, check, id)),
        StepKind::DropIndex(name) => Some(name.to_string()),
        _ => None,
    }
}

/// The statements of every index of a model, to run in the transaction that creates its table.
pub(crate) fn with_new_table(model: &ModelSpec) -> Vec<Statement> {
    model
        .indexes
        .iter()
        .map(|index| {
            let id = StepId::for_step(model, &StepKind::CreateIndex(index));
            create_with_table(model, &IndexDef::for_index(model, index, &id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventional_names_fit_the_identifier_limit() {
        let id = StepId::from_stored("0123456789abcdef".into());
        assert_eq!(
            conventional_name("users", &["email"], "idx", &id),
            "users_email_idx"
        );
        let long = "c".repeat(40);
        let name = conventional_name("users", &[&long, &long], "key", &id);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("_01234567_key"), "{name}");
    }
}
