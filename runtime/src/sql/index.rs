//! The SQL of index steps: `CREATE [UNIQUE] INDEX CONCURRENTLY` (run outside any transaction),
//! the unique constraint attached to a concurrently built index, `DROP INDEX CONCURRENTLY`, and
//! the query that finds the duplicates a unique build met.

use super::{Exists, Statement, table};
use crate::ident::{Ident, Qualified};
use crate::spec::{ColumnSpec, IndexMethod, IndexSpec, ModelSpec};
use crate::step::StepId;
use pgevolve_naming::{self as naming, conventional_name};

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
                None => conventional_name(model.table, index.columns, naming::INDEX, id.as_str()),
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

/// The name of the unique constraint (and of its index) of `#[evolve(unique)]`.
pub(crate) fn unique_name(model: &ModelSpec, column: &ColumnSpec, id: &StepId) -> String {
    conventional_name(model.table, &[column.name], naming::UNIQUE, id.as_str())
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS`: outside any transaction, on a dedicated
/// connection (see `crate::concurrent`).
pub(crate) fn create_concurrently(model: &ModelSpec, index: &IndexDef) -> Statement {
    Statement::concurrently(format!(
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
    Statement::concurrently(format!(
        "DROP INDEX CONCURRENTLY IF EXISTS {}",
        Qualified(model.schema, name)
    ))
}

/// Attaches a valid unique index as a constraint: brief ACCESS EXCLUSIVE, no scan.
pub(crate) fn attach_unique(model: &ModelSpec, name: &str) -> Statement {
    Statement::unless(
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE USING INDEX {}",
            table(model),
            Ident(name),
            Ident(name)
        ),
        Exists::Constraint(name.to_string()),
    )
}

/// `ALTER TABLE ... DROP CONSTRAINT IF EXISTS`.
pub(crate) fn drop_constraint(model: &ModelSpec, name: &str) -> Statement {
    Statement::always(format!(
        "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
        table(model),
        Ident(name)
    ))
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
        "SELECT ARRAY[{}] AS key, count(*) AS rows FROM {} AS {} WHERE {} GROUP BY {} HAVING count(*) > 1 \
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
