//! The SQL of widening an integer primary key to `bigint` (see `kinds::widen_key`), beyond what
//! the key table shares with a column type change (`sql::type_change`: the new column, its
//! trigger, its NOT NULL check, its backfill):
//!
//! - on every column of another table that references the key through a foreign key (found in
//!   the catalog when the phase runs, see [`referencing`]): a `bigint` shadow column kept in step
//!   both ways by a trigger, filled in batches of heap pages, and a new foreign key `NOT VALID`
//!   from it to the key's shadow (through the shadow's unique index), then validated;
//! - on the key table: the shadow's unique index built `CONCURRENTLY`, the serial sequence
//!   and at contract the primary key moved onto the shadow with `USING INDEX`, the serial
//!   sequence widened and moved with it;
//! - at contract, one short transaction per referencing table (old foreign key and column
//!   dropped, shadow renamed to the old name, new foreign key given the old one's name), then
//!   one for the key table.

use std::time::Duration;

use super::type_change::not_null_named_after;
use super::{Exists, Statement};
use crate::ident::{Ident, Literal, Qualified};
use crate::spec::{ColumnSpec, ModelSpec};
use crate::step::StepId;

/// Every name of the helpers on a referencing table starts with this and the step's id, so an
/// abort finds them all in the catalog (see [`abort_referencing`]).
fn prefix(id: &StepId) -> String {
    format!("pgevolve_k{}", &id.as_str()[..12])
}

/// The shadow key's unique index on the key table (made the primary key at contract).
pub(crate) fn key_index(id: &StepId) -> String {
    format!("{}_key", prefix(id))
}

/// A column referencing the key through a single-column foreign key, as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Referencing {
    pub schema: String,
    pub table: String,
    pub column: String,
    /// `format_type` of the column (`integer` is the one handled).
    pub column_type: String,
    /// The foreign key's name, which the new one takes at contract.
    pub constraint: String,
    pub not_null: bool,
    /// `pg_constraint.confupdtype`, `confdeltype`, `confmatchtype`.
    pub on_update: String,
    pub on_delete: String,
    pub match_type: String,
    pub deferrable: bool,
    pub deferred: bool,
    /// Plain single-column indexes on the column (name, unique, access method): built again
    /// over the shadow before contract and given their names back after it.
    pub indexes: Vec<(String, bool, String)>,
}

/// Names of the helpers on one referencing table.
#[derive(Debug, Clone)]
pub(crate) struct RefHelpers {
    pub shadow: String,
    pub function: String,
    pub trigger: String,
    pub fkey: String,
    pub check: String,
}

impl Referencing {
    pub(crate) fn table(&self) -> Qualified<'_> {
        Qualified(&self.schema, &self.table)
    }

    /// `schema.table`, unquoted, for messages.
    pub(crate) fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    pub(crate) fn helpers(&self, id: &StepId) -> RefHelpers {
        let p = prefix(id);
        let hash = format!(
            "{:08x}",
            crate::step::fnv1a(&[
                self.schema.as_str(),
                self.table.as_str(),
                self.column.as_str()
            ]) as u32
        );
        let mut shadow = format!("{p}_{}", self.column);
        if shadow.len() > pgevolve_naming::MAX_IDENTIFIER_BYTES {
            shadow = format!("{p}_{hash}");
        }
        RefHelpers {
            shadow,
            function: format!("{p}_{hash}_f"),
            trigger: format!("{p}_{hash}_t"),
            fkey: format!("{p}_{hash}_fk"),
            check: format!("{p}_{hash}_nn"),
        }
    }

    /// The new index over the shadow that replaces `name` at contract.
    pub(crate) fn index_copy(&self, id: &StepId, name: &str) -> String {
        format!(
            "{}_{:08x}_ix",
            prefix(id),
            crate::step::fnv1a(&[self.schema.as_str(), self.table.as_str(), name]) as u32
        )
    }
}

/// What the catalog says of the key column when the contract runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFacts {
    /// The primary key constraint's name (kept).
    pub constraint: String,
    /// The column's default (`nextval(...)` of a serial), moved to the new column.
    pub default: Option<String>,
    /// The sequence the column owns (a serial's or an identity's), qualified and quoted.
    pub sequence: Option<String>,
    /// `pg_attribute.attidentity`: `a` (ALWAYS), `d` (BY DEFAULT) or empty.
    pub identity: String,
}

impl KeyFacts {
    /// What plans show: the conventional names of a serial key (`<table>_pkey`,
    /// `<table>_<column>_seq`); the engine reads the real ones when the phase runs.
    pub(crate) fn shown(model: &ModelSpec, column: &ColumnSpec) -> KeyFacts {
        let seq = Qualified(
            model.schema,
            &format!("{}_{}_seq", model.table, column.name),
        )
        .to_string();
        KeyFacts {
            constraint: format!("{}_pkey", model.table),
            default: Some(format!("nextval({}::regclass)", Literal(&seq))),
            sequence: Some(seq),
            identity: String::new(),
        }
    }
}

/// The columns referencing the key (`$1` the key table, `$2` the key column): schema, table,
/// column, type, constraint, not_null, on_update, on_delete, match_type, deferrable, deferred,
/// columns (of the foreign key), partitioned (the referencing table is partitioned or a partition),
/// indexes (`name:unique:method` per plain single-column index), and `others` (what else depends
/// on the column and cannot be carried: multi-column or expression indexes).
pub(crate) fn referencing() -> &'static str {
    "SELECT n.nspname::text AS schema, c.relname::text AS table, a.attname::text AS column, \
            format_type(a.atttypid, a.atttypmod) AS column_type, k.conname::text AS constraint, \
            a.attnotnull AS not_null, k.confupdtype::text AS on_update, k.confdeltype::text AS on_delete, \
            k.confmatchtype::text AS match_type, k.condeferrable AS deferrable, k.condeferred AS deferred, \
            cardinality(k.conkey) AS columns, (c.relkind = 'p' OR c.relispartition) AS partitioned, \
            coalesce((SELECT array_agg(i.relname::text || ':' || x.indisunique::text || ':' || am.amname::text ORDER BY i.relname) \
                      FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
                      JOIN pg_catalog.pg_am am ON am.oid = i.relam \
                      WHERE x.indrelid = k.conrelid AND x.indnatts = 1 AND x.indkey[0] = a.attnum \
                        AND x.indexprs IS NULL AND x.indpred IS NULL), '{}') AS indexes, \
            coalesce((SELECT array_agg(i.relname::text ORDER BY i.relname) \
                      FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
                      WHERE x.indrelid = k.conrelid AND a.attnum = ANY (x.indkey::int2[]) \
                        AND NOT (x.indnatts = 1 AND x.indkey[0] = a.attnum AND x.indexprs IS NULL AND x.indpred IS NULL)), '{}') AS others \
     FROM pg_catalog.pg_constraint k \
     JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1] \
     WHERE k.contype = 'f' AND k.confrelid = $1::regclass \
       AND (SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped) = ANY (k.confkey) \
     ORDER BY 1, 2, 3, 5"
}

/// Whether the key table (`$1`) is partitioned or a partition.
pub(crate) fn key_table_partitioned() -> &'static str {
    "SELECT (relkind = 'p' OR relispartition) AS partitioned FROM pg_catalog.pg_class WHERE oid = $1::regclass"
}

/// The key column's facts (`$1` the table, `$2` the column): constraint, default, sequence, identity.
pub(crate) fn key_facts() -> &'static str {
    "SELECT (SELECT conname::text FROM pg_catalog.pg_constraint WHERE conrelid = $1::regclass AND contype = 'p') AS constraint, \
            (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d \
              WHERE d.adrelid = $1::regclass AND d.adnum = a.attnum) AS default, \
            (SELECT s.oid::regclass::text FROM pg_catalog.pg_depend dep JOIN pg_catalog.pg_class s ON s.oid = dep.objid \
              WHERE dep.refobjid = $1::regclass AND dep.refobjsubid = a.attnum AND dep.classid = 'pg_catalog.pg_class'::regclass \
                AND s.relkind = 'S' AND dep.deptype IN ('a', 'i') LIMIT 1) AS sequence, \
            a.attidentity::text AS identity \
     FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::regclass AND a.attname = $2 AND NOT a.attisdropped"
}

fn action(code: &str) -> &'static str {
    match code {
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        _ => "NO ACTION",
    }
}

/// Expand on a referencing table, one transaction: the shadow column, the trigger keeping it in
/// step with the old column both ways, and its `NOT NULL` check `NOT VALID` when the old column
/// is NOT NULL. Idempotent.
pub(crate) fn expand_referencing(r: &Referencing, h: &RefHelpers) -> Vec<Statement> {
    let t = r.table();
    let old = Ident(&r.column);
    let new = Ident(&h.shadow);
    let function = Qualified(&r.schema, &h.function);
    let mut out = vec![
        Statement::always(format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {new} bigint"
        )),
        Statement::always(format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $pgevolve$\n\
             BEGIN\n\
             \x20 -- Keep {old} (integer) and {new} (bigint) in step for writers that set one of them.\n\
             \x20 IF TG_OP = 'INSERT' THEN\n\
             \x20   IF NEW.{new} IS NULL THEN\n\
             \x20     NEW.{new} := CAST(NEW.{old} AS bigint);\n\
             \x20   ELSE\n\
             \x20     NEW.{old} := CAST(NEW.{new} AS integer);\n\
             \x20   END IF;\n\
             \x20 ELSIF NEW.{new} IS DISTINCT FROM OLD.{new} THEN\n\
             \x20   IF NEW.{old} IS NOT DISTINCT FROM OLD.{old} AND NEW.{new} IS DISTINCT FROM CAST(NEW.{old} AS bigint) THEN\n\
             \x20     NEW.{old} := CAST(NEW.{new} AS integer);\n\
             \x20   END IF;\n\
             \x20 -- A row the backfill has not reached yet gets its value when written for any reason\n\
             \x20 -- (a NOT VALID check applies to every row written).\n\
             \x20 ELSIF NEW.{old} IS DISTINCT FROM OLD.{old} OR (NEW.{new} IS NULL AND NEW.{old} IS NOT NULL) THEN\n\
             \x20   NEW.{new} := CAST(NEW.{old} AS bigint);\n\
             \x20 END IF;\n\
             \x20 RETURN NEW;\n\
             END\n\
             $pgevolve$"
        )),
    ];
    out.extend(super::create_trigger(
        &t,
        &h.trigger,
        "BEFORE INSERT OR UPDATE",
        &function,
    ));
    if r.not_null {
        out.push(Statement::unless(
            format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({new} IS NOT NULL) NOT VALID",
                Ident(&h.check)
            ),
            Exists::Constraint(h.check.clone()),
        ));
    }
    out
}

/// One batch of the fill of a referencing table's shadow: the rows of heap pages `$1` (from,
/// inclusive) to `$2` (to, exclusive) that still lack a value. The condition is the checkpoint:
/// a batch run again finds nothing to do; rows written meanwhile got theirs from the trigger.
pub(crate) fn fill_referencing(r: &Referencing, h: &RefHelpers) -> String {
    format!(
        "UPDATE {} SET {new} = CAST({old} AS bigint) \
         WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid \
         AND {new} IS NULL AND {old} IS NOT NULL",
        r.table(),
        new = Ident(&h.shadow),
        old = Ident(&r.column),
    )
}

/// The settings of a referencing fill's batch transaction: it holds its rows' locks until it
/// commits, so it runs at most `batch_timeout` (`statement_timeout`) and waits for a writer's
/// row at most `lock_timeout`. Then, in the same simple query, the WAL position before the
/// batch (`backfill::wal_start`), for the WAL budget.
pub(crate) fn fill_settings(batch_timeout: Duration, lock_timeout: Duration) -> String {
    format!(
        "SET LOCAL statement_timeout = '{}ms'; SET LOCAL lock_timeout = '{}ms'; {} {}",
        batch_timeout.as_millis().max(1),
        lock_timeout.as_millis().max(1),
        super::NO_JIT,
        super::backfill::wal_start(),
    )
}

/// The rows the planner estimates in a table (`$1`), for the fill's progress (0 when never
/// analyzed).
pub(crate) fn estimated_rows() -> &'static str {
    "SELECT greatest(reltuples, 0)::real AS estimate FROM pg_catalog.pg_class WHERE oid = $1::regclass"
}

/// The heap pages of a referencing table when its fill starts (`$1` the table).
pub(crate) fn heap_pages() -> &'static str {
    "SELECT (pg_relation_size($1::regclass) / current_setting('block_size')::bigint) AS pages"
}

/// The copies of the referencing column's plain indexes over the shadow, each built alone:
/// the copy's qualified name and its build.
pub(crate) fn index_copies(
    r: &Referencing,
    h: &RefHelpers,
    id: &StepId,
) -> Vec<(String, Statement)> {
    r.indexes
        .iter()
        .map(|(name, unique, method)| {
            let copy = r.index_copy(id, name);
            (
                Qualified(&r.schema, &copy).to_string(),
                Statement::concurrently(format!(
                    "CREATE {}INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING {} ({})",
                    if *unique { "UNIQUE " } else { "" },
                    Ident(&copy),
                    r.table(),
                    Ident(method),
                    Ident(&h.shadow)
                )),
            )
        })
        .collect()
}

/// The shadow key's unique index, built alone (`CONCURRENTLY`): what the new foreign keys
/// reference, and the primary key's index from contract on.
pub(crate) fn key_unique_index(model: &ModelSpec, shadow: &str, id: &StepId) -> Statement {
    Statement::concurrently(format!(
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})",
        Ident(&key_index(id)),
        super::table(model),
        Ident(shadow)
    ))
}

/// The serial sequence widened to `bigint`, in the key table's contract (so that an abort has
/// nothing to undo).
pub(crate) fn widen_sequence(sequence: &str) -> Statement {
    Statement::always(format!("ALTER SEQUENCE {sequence} AS bigint"))
}

/// The new foreign key from the shadow to the key's shadow, `NOT VALID` (SHARE ROW EXCLUSIVE on
/// both tables, no scan), with the old one's actions; then its validation in a statement (and
/// transaction) of its own (SHARE UPDATE EXCLUSIVE: writes go on).
pub(crate) fn new_foreign_key(
    model: &ModelSpec,
    key_shadow: &str,
    r: &Referencing,
    h: &RefHelpers,
) -> [Statement; 2] {
    let mut options = String::new();
    if r.match_type == "f" {
        options.push_str(" MATCH FULL");
    }
    options.push_str(&format!(
        " ON UPDATE {} ON DELETE {}",
        action(&r.on_update),
        action(&r.on_delete)
    ));
    if r.deferrable {
        options.push_str(" DEFERRABLE");
        if r.deferred {
            options.push_str(" INITIALLY DEFERRED");
        }
    }
    [
        Statement::unless(
            format!(
                "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}){options} NOT VALID",
                r.table(),
                Ident(&h.fkey),
                Ident(&h.shadow),
                super::table(model),
                Ident(key_shadow)
            ),
            Exists::Constraint(h.fkey.clone()),
        ),
        Statement::always(format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            r.table(),
            Ident(&h.fkey)
        )),
    ]
}

/// The shadow's NOT NULL check validated (when the old column is NOT NULL).
pub(crate) fn validate_referencing_check(r: &Referencing, h: &RefHelpers) -> Option<Statement> {
    r.not_null.then(|| {
        Statement::always(format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            r.table(),
            Ident(&h.check)
        ))
    })
}

/// Rows of a referencing table whose two columns disagree: must be zero.
pub(crate) fn count_referencing_differences(r: &Referencing, h: &RefHelpers) -> String {
    format!(
        "SELECT count(*) FROM {} WHERE {} IS DISTINCT FROM CAST({} AS bigint)",
        r.table(),
        Ident(&h.shadow),
        Ident(&r.column)
    )
}

/// Contract of one referencing table, one short transaction (ACCESS EXCLUSIVE on it, and on the
/// key table for the old foreign key's triggers: catalog changes only, no scan): NOT NULL
/// through the validated check, the old foreign key, trigger and column dropped, the shadow
/// given the old column's name, the new foreign key and index copies the old names.
pub(crate) fn contract_referencing(r: &Referencing, h: &RefHelpers, id: &StepId) -> Vec<Statement> {
    let t = r.table();
    let t_lit = Literal(&t.to_string()).to_string();
    let mut out = vec![Statement::always(format!(
        "LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"
    ))];
    if r.not_null {
        out.push(Statement::always(format!(
            "DO $pgevolve$ BEGIN\n\
             \x20 IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = {t_lit}::regclass \
             AND conname = {} AND contype = 'c' AND convalidated) THEN\n\
             \x20   RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE = {};\n\
             \x20 END IF;\n\
             END $pgevolve$",
            Literal(&h.check),
            Literal(&format!(
                "check {} on {t} is not validated: SET NOT NULL would scan the table under ACCESS EXCLUSIVE, so contract refuses; \
                 VALIDATE it, then contract again",
                h.check
            ))
        )));
        out.push(Statement::always(format!(
            "ALTER TABLE {t} ALTER COLUMN {} SET NOT NULL",
            Ident(&h.shadow)
        )));
        out.push(Statement::always(format!(
            "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
            Ident(&h.check)
        )));
    }
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP CONSTRAINT {}",
        Ident(&r.constraint)
    )));
    out.push(Statement::always(format!(
        "DROP TRIGGER IF EXISTS {} ON {t}",
        Ident(&h.trigger)
    )));
    out.push(Statement::always(format!(
        "DROP FUNCTION IF EXISTS {}()",
        Qualified(&r.schema, &h.function)
    )));
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP COLUMN {}",
        Ident(&r.column)
    )));
    out.push(Statement::always(format!(
        "ALTER TABLE {t} RENAME COLUMN {} TO {}",
        Ident(&h.shadow),
        Ident(&r.column)
    )));
    out.push(Statement::always(format!(
        "ALTER TABLE {t} RENAME CONSTRAINT {} TO {}",
        Ident(&h.fkey),
        Ident(&r.constraint)
    )));
    for (name, _, _) in &r.indexes {
        out.push(Statement::always(format!(
            "ALTER INDEX {} RENAME TO {}",
            Qualified(&r.schema, &r.index_copy(id, name)),
            Ident(name)
        )));
    }
    if r.not_null {
        out.extend(not_null_named_after(&r.schema, &r.table, &r.column));
    }
    out
}

/// Contract of the key table, one short transaction once every referencing table is done: NOT
/// NULL through the validated check, the old primary key, trigger and column dropped (the
/// sequence moved first), the shadow given the key's name, the primary key added again under
/// its name `USING INDEX` the shadow's unique index (no build, no scan), the default or
/// identity restored on it.
pub(crate) fn contract_key(
    model: &ModelSpec,
    column: &ColumnSpec,
    h: &super::type_change::TypeHelpers,
    facts: &KeyFacts,
    id: &StepId,
) -> Vec<Statement> {
    let t = super::table(model);
    let old = Ident(column.name);
    let new = Ident(&h.shadow);
    let mut out = super::not_null_through_check(model, &h.shadow, &h.check);
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP CONSTRAINT {}",
        Ident(&facts.constraint)
    )));
    out.extend(super::drop_trigger(model, &h.trigger, &h.function));
    let identity = match facts.identity.as_str() {
        "a" => Some("ALWAYS"),
        "d" => Some("BY DEFAULT"),
        _ => None,
    };
    match (identity, &facts.sequence) {
        (Some(kind), Some(seq)) => {
            // The identity goes with its column: read where it stands, drop it, give the new
            // column one under the same sequence name that starts there (nobody can insert
            // meanwhile: the table is locked).
            out.push(Statement::always(format!(
                "DO $pgevolve$\n\
                 DECLARE next bigint;\n\
                 BEGIN\n\
                 \x20 SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next FROM {seq};\n\
                 \x20 ALTER TABLE {t} ALTER COLUMN {old} DROP IDENTITY;\n\
                 \x20 EXECUTE format('ALTER TABLE %s ALTER COLUMN %I ADD GENERATED {kind} AS IDENTITY (SEQUENCE NAME %s START WITH %s)', \
                 {tl}, {nl}, {sl}, next);\n\
                 END\n\
                 $pgevolve$",
                tl = Literal(&t.to_string()),
                nl = Literal(&h.shadow),
                sl = Literal(seq),
            )));
        }
        (None, seq) => {
            if let Some(seq) = seq {
                out.push(widen_sequence(seq));
                out.push(Statement::always(format!(
                    "ALTER SEQUENCE {seq} OWNED BY {t}.{new}"
                )));
            }
            if let Some(default) = &facts.default {
                out.push(Statement::always(format!(
                    "ALTER TABLE {t} ALTER COLUMN {new} SET DEFAULT {default}"
                )));
            }
        }
        (Some(_), None) => {}
    }
    out.push(Statement::always(format!(
        "ALTER TABLE {t} DROP COLUMN {old}"
    )));
    out.push(Statement::always(format!(
        "ALTER TABLE {t} RENAME COLUMN {new} TO {old}"
    )));
    out.push(Statement::always(format!(
        "ALTER TABLE {t} ADD CONSTRAINT {} PRIMARY KEY USING INDEX {}",
        Ident(&facts.constraint),
        Ident(&key_index(id))
    )));
    out.extend(not_null_named_after(model.schema, model.table, column.name));
    out
}

/// Abort on the referencing tables, found by the step's prefix in the catalog (the set may have
/// changed since expand): the new foreign keys, triggers, functions, index copies and shadows
/// dropped; the old columns kept every write. Runs before the key table's own abort, which
/// drops the shadow these foreign keys reference.
pub(crate) fn abort_referencing(model: &ModelSpec, id: &StepId) -> Statement {
    let p = Literal(&format!("{}\\_%", prefix(id).replace('_', "\\_"))).to_string();
    let t = Literal(&super::table(model).to_string()).to_string();
    Statement::always(format!(
        "DO $pgevolve$\n\
         DECLARE r record;\n\
         BEGIN\n\
         \x20 FOR r IN SELECT conrelid::regclass::text AS tbl, conname FROM pg_catalog.pg_constraint\n\
         \x20     WHERE contype = 'f' AND confrelid = {t}::regclass AND conname LIKE {p} LOOP\n\
         \x20   EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);\n\
         \x20 END LOOP;\n\
         \x20 FOR r IN SELECT tgrelid::regclass::text AS tbl, tgname, tgfoid::regproc::text AS fn FROM pg_catalog.pg_trigger\n\
         \x20     WHERE NOT tgisinternal AND tgname LIKE {p} LOOP\n\
         \x20   EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.tbl);\n\
         \x20   EXECUTE format('DROP FUNCTION IF EXISTS %s()', r.fn);\n\
         \x20 END LOOP;\n\
         \x20 FOR r IN SELECT i.oid::regclass::text AS idx FROM pg_catalog.pg_class i\n\
         \x20     WHERE i.relkind = 'i' AND i.relname LIKE {p} LOOP\n\
         \x20   EXECUTE format('DROP INDEX %s', r.idx);\n\
         \x20 END LOOP;\n\
         \x20 FOR r IN SELECT attrelid::regclass::text AS tbl, attname FROM pg_catalog.pg_attribute\n\
         \x20     WHERE attname LIKE {p} AND NOT attisdropped AND attnum > 0 LOOP\n\
         \x20   EXECUTE format('ALTER TABLE %s DROP COLUMN %I', r.tbl, r.attname);\n\
         \x20 END LOOP;\n\
         END\n\
         $pgevolve$"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> Referencing {
        Referencing {
            schema: "public".into(),
            table: "orders".into(),
            column: "user_id".into(),
            column_type: "integer".into(),
            constraint: "orders_user_id_fkey".into(),
            not_null: true,
            on_update: "a".into(),
            on_delete: "c".into(),
            match_type: "s".into(),
            deferrable: false,
            deferred: false,
            indexes: vec![],
        }
    }

    #[test]
    fn helper_names_fit_and_share_the_step_prefix() {
        let id = StepId::from_stored("0123456789abcdef".to_string());
        let h = orders().helpers(&id);
        assert_eq!(h.shadow, "pgevolve_k0123456789ab_user_id");
        for name in [&h.shadow, &h.function, &h.trigger, &h.fkey, &h.check] {
            assert!(name.starts_with("pgevolve_k0123456789ab_"));
            assert!(name.len() <= pgevolve_naming::MAX_IDENTIFIER_BYTES);
        }
        let long = Referencing {
            column: "c".repeat(60),
            ..orders()
        };
        assert!(long.helpers(&id).shadow.len() <= pgevolve_naming::MAX_IDENTIFIER_BYTES);
    }

    #[test]
    fn the_new_foreign_key_keeps_the_old_actions_and_is_not_valid() {
        let id = StepId::from_stored("0123456789abcdef".to_string());
        let model = ModelSpec {
            table: "users",
            ..ModelSpec::DEFAULT
        };
        let r = orders();
        let [add, validate] = new_foreign_key(&model, "pgevolve_new_id", &r, &r.helpers(&id));
        assert!(
            add.sql
                .contains("ON UPDATE NO ACTION ON DELETE CASCADE NOT VALID")
        );
        assert!(
            validate
                .sql
                .starts_with("ALTER TABLE \"public\".\"orders\" VALIDATE")
        );
    }
}
