//! The statements of a dropped table ([`Evolver::dropped_table`](crate::Evolver::dropped_table)):
//! `DROP TABLE` at contract, and the query that finds what would make it fail.

use super::{Statement, table};
use crate::ident::Literal;
use crate::spec::ModelSpec;

/// Contract: the table, without `CASCADE`: what depends on it from outside (a view, a foreign
/// key of another table) is reported as drift at boot and makes the statement fail rather than
/// go with it. Its own indexes, constraints, triggers and owned sequences go with it.
pub(crate) fn contract(model: &ModelSpec) -> Vec<Statement> {
    vec![Statement::always(format!(
        "DROP TABLE IF EXISTS {}",
        table(model)
    ))]
}

/// One text row per object outside the table that depends on it (`DROP TABLE` would fail), each
/// with what to do.
pub(crate) fn blockers(model: &ModelSpec) -> String {
    let t = Literal(&table(model).to_string()).to_string();
    format!(
        "SELECT DISTINCT format('%s %s reads it: DROP TABLE would fail; change it not to read the table, or drop it, first', \
                CASE v.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'rule on' END, v.oid::regclass) \
           FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
                JOIN pg_catalog.pg_class v ON v.oid = r.ev_class \
          WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass \
            AND d.refobjid = {t}::regclass AND r.ev_class <> {t}::regclass \
         UNION ALL \
         SELECT format('foreign key %s of %s references it: DROP TABLE would fail; drop the foreign key first', \
                k.conname, k.conrelid::regclass) \
           FROM pg_catalog.pg_constraint k WHERE k.contype = 'f' AND k.confrelid = {t}::regclass \
            AND k.conrelid <> {t}::regclass \
         ORDER BY 1"
    )
}
