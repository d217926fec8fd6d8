//! The statements of a dropped column (`#[evolve(dropped("..."))]`): NOT NULL relaxed at expand
//! so that the new build's inserts, which never name the column, work; the column dropped at
//! contract; NOT NULL restored by an abort without a scan under ACCESS EXCLUSIVE.

use pgevolve_naming::object_name;

use super::{Statement, table};
use crate::ident::{Ident, Literal};
use crate::spec::ModelSpec;
use crate::step::StepId;

/// The names of a dropped column's helper constraints.
#[derive(Debug, Clone)]
pub(crate) struct DropHelpers {
    /// A constraint that is always true (`col IS NULL OR col IS NOT NULL`, `NOT VALID`): its
    /// presence records that expand relaxed NOT NULL, so the abort knows to restore it. It
    /// costs writers one trivial expression per row and goes with the column.
    pub relaxed: String,
    /// The abort's `CHECK (col IS NOT NULL)`, validated before `SET NOT NULL` so that it does
    /// not scan.
    pub check: String,
}

impl DropHelpers {
    pub(crate) fn new(model: &ModelSpec, column: &str, id: &StepId) -> DropHelpers {
        DropHelpers {
            relaxed: object_name("pgevolve_relaxed", model.table, column, id.as_str()),
            check: object_name("pgevolve_nn", model.table, column, id.as_str()),
        }
    }
}

/// Expand: when the column is NOT NULL without a default (so an insert that leaves it out
/// fails), `DROP NOT NULL` (metadata only) and the marker; otherwise nothing.
pub(crate) fn expand(model: &ModelSpec, column: &str, h: &DropHelpers) -> Vec<Statement> {
    let t = table(model);
    let c = Ident(column);
    let regclass = Literal(&t.to_string()).to_string();
    vec![Statement::always(format!(
        "DO $pgevolve$ BEGIN\n\
         \x20 IF EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = {regclass}::regclass AND attname = {} \
         AND NOT attisdropped AND attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = '') THEN\n\
         \x20   ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL;\n\
         \x20   IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = {regclass}::regclass AND conname = {}) THEN\n\
         \x20     ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({c} IS NULL OR {c} IS NOT NULL) NOT VALID;\n\
         \x20   END IF;\n\
         \x20 END IF;\n\
         END $pgevolve$",
        Literal(column),
        Literal(&h.relaxed),
        Ident(&h.relaxed),
    ))]
}

/// Contract: the marker and the column.
pub(crate) fn contract(model: &ModelSpec, column: &str, h: &DropHelpers) -> Vec<Statement> {
    let t = table(model);
    vec![
        Statement::always(format!(
            "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
            Ident(&h.relaxed)
        )),
        Statement::always(format!(
            "ALTER TABLE {t} DROP COLUMN IF EXISTS {}",
            Ident(column)
        )),
    ]
}

/// Counts the rows with NULL in the column (the abort refuses while there are some).
pub(crate) fn count_nulls(model: &ModelSpec, column: &str) -> String {
    format!(
        "SELECT count(*) FROM {} WHERE {} IS NULL",
        table(model),
        Ident(column)
    )
}

/// Whether expand relaxed NOT NULL: the marker exists.
pub(crate) fn relaxed_exists(model: &ModelSpec, h: &DropHelpers) -> String {
    format!(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = to_regclass({}) AND conname = {})",
        Literal(&table(model).to_string()),
        Literal(&h.relaxed)
    )
}

/// The abort's first transaction: `CHECK (col IS NOT NULL) NOT VALID` (brief lock, no scan).
pub(crate) fn abort_add_check(model: &ModelSpec, column: &str, h: &DropHelpers) -> Statement {
    super::add_not_null_check(model, column, &h.check)
}

/// The abort's second transaction: the scan, under SHARE UPDATE EXCLUSIVE (writes go on).
pub(crate) fn abort_validate_check(model: &ModelSpec, h: &DropHelpers) -> Statement {
    Statement::always(format!(
        "ALTER TABLE {} VALIDATE CONSTRAINT {}",
        table(model),
        Ident(&h.check)
    ))
}

/// Undoes [`abort_add_check`] when the validation failed: the table is as before the abort.
pub(crate) fn abort_drop_check(model: &ModelSpec, h: &DropHelpers) -> Statement {
    Statement::always(format!(
        "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
        table(model),
        Ident(&h.check)
    ))
}

/// The abort's DDL, after the check was validated: when expand relaxed NOT NULL (the marker is
/// there), `SET NOT NULL` through the validated check (no scan), then the check and the marker
/// go. Nothing when expand changed nothing.
pub(crate) fn abort(model: &ModelSpec, column: &str, h: &DropHelpers) -> Vec<Statement> {
    let t = table(model);
    let regclass = Literal(&t.to_string()).to_string();
    let message = format!(
        "check {} on {t} is not validated: SET NOT NULL would scan the table under ACCESS EXCLUSIVE, \
         so the abort refuses; abort again (it adds and validates the check first)",
        h.check
    );
    vec![Statement::always(format!(
        "DO $pgevolve$ BEGIN\n\
         \x20 IF EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = {regclass}::regclass AND conname = {}) THEN\n\
         \x20   LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE;\n\
         \x20   IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = {regclass}::regclass \
         AND conname = {} AND contype = 'c' AND convalidated) THEN\n\
         \x20     RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE = {};\n\
         \x20   END IF;\n\
         \x20   ALTER TABLE {t} ALTER COLUMN {} SET NOT NULL;\n\
         \x20   ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {};\n\
         \x20   ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {};\n\
         \x20 END IF;\n\
         END $pgevolve$",
        Literal(&h.relaxed),
        Literal(&h.check),
        Literal(&message),
        Ident(column),
        Ident(&h.check),
        Ident(&h.relaxed),
    ))]
}

/// The objects that stop `DROP COLUMN` (a view or rule reading the column, a foreign key from
/// another table referencing it) or that it would take along besides the column itself (an
/// index or constraint over other columns too), one line each, naming the object.
pub(crate) fn blockers(model: &ModelSpec, column: &str, h: &DropHelpers) -> String {
    let t = Literal(&table(model).to_string()).to_string();
    let c = Literal(column);
    let marker = Literal(&h.relaxed);
    format!(
        "WITH col AS (SELECT attrelid, attnum FROM pg_catalog.pg_attribute \
                      WHERE attrelid = {t}::regclass AND attname = {c} AND NOT attisdropped) \
         SELECT DISTINCT format('%s %s reads it: DROP COLUMN would fail; change it not to read the column, or drop it, first', \
                CASE v.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'rule on' END, v.oid::regclass) \
           FROM col JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::regclass \
                AND d.refobjid = col.attrelid AND d.refobjsubid = col.attnum AND d.classid = 'pg_catalog.pg_rewrite'::regclass \
           JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid JOIN pg_catalog.pg_class v ON v.oid = r.ev_class \
          WHERE r.ev_class <> col.attrelid \
         UNION ALL \
         SELECT format('foreign key %s of %s references it: DROP COLUMN would fail; drop the foreign key first', \
                k.conname, k.conrelid::regclass) \
           FROM col JOIN pg_catalog.pg_constraint k ON k.contype = 'f' AND k.confrelid = col.attrelid \
                AND col.attnum = ANY (k.confkey) AND k.conrelid <> col.attrelid \
         UNION ALL \
         SELECT format('index %s covers other columns too: DROP COLUMN would drop it with the column; drop it, \
                        or create the index you want without the column, first', i.indexrelid::regclass) \
           FROM col JOIN pg_catalog.pg_index i ON i.indrelid = col.attrelid \
          WHERE col.attnum = ANY (i.indkey::int2[]) AND i.indnatts > 1 \
            AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = col.attrelid) \
         UNION ALL \
         SELECT format('constraint %s covers other columns too: DROP COLUMN would drop it with the column; drop it, \
                        or add the constraint you want without the column, first', k.conname) \
           FROM col JOIN pg_catalog.pg_constraint k ON k.conrelid = col.attrelid \
          WHERE col.attnum = ANY (k.conkey) AND cardinality(k.conkey) > 1 AND k.conname <> {marker} \
         ORDER BY 1"
    )
}
