//! The statements of a renamed table (`#[evolve(table = "new", renamed_from = "old")]`): the
//! rename and a view under the old name at expand, the view dropped at contract, both undone by
//! an abort. A rename is a catalog change only: the table keeps its oid, so its rows, sequences
//! and identity, indexes, constraints, triggers, grants and the foreign keys that point at it
//! follow it without a scan or a rewrite.

use super::Statement;
use crate::ident::{Ident, Literal, Qualified};

/// The two names of a renamed table, in one schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableRename<'a> {
    pub schema: &'a str,
    pub from: &'a str,
    pub to: &'a str,
}

impl TableRename<'_> {
    fn old_name(&self) -> Qualified<'_> {
        Qualified(self.schema, self.from)
    }

    fn new_name(&self) -> Qualified<'_> {
        Qualified(self.schema, self.to)
    }
}

/// Expand, one transaction: the rename, then the view under the old name with the table's
/// grants. A view over one table with `SELECT *` and nothing else is automatically updatable
/// (inserts, updates, deletes and `RETURNING` go to the table, whose defaults, identity and
/// triggers apply). From PostgreSQL 15 the view is `security_invoker`, so privileges and
/// row-level security are checked for the caller as on the table; before 15 the option does not
/// exist and the view reads the table with its owner's rights.
pub(crate) fn expand(r: &TableRename<'_>) -> Vec<Statement> {
    let (old, new) = (r.old_name(), r.new_name());
    let view = |options: &str| format!("CREATE VIEW {old}{options} AS SELECT * FROM {new}");
    vec![
        Statement::always(format!("ALTER TABLE {old} RENAME TO {}", Ident(r.to))),
        Statement::always(format!(
            "DO $pgevolve$\n\
             DECLARE g record;\n\
             BEGIN\n\
             \x20 IF current_setting('server_version_num')::int >= 150000 THEN\n\
             \x20   EXECUTE {};\n\
             \x20 ELSE\n\
             \x20   EXECUTE {};\n\
             \x20 END IF;\n\
             \x20 FOR g IN SELECT a.privilege_type AS privilege, a.grantee \
             FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) a \
             WHERE c.oid = {}::regclass AND a.grantee <> c.relowner \
             AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE') LOOP\n\
             \x20   EXECUTE format('GRANT %s ON {} TO %s', g.privilege, \
             CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END);\n\
             \x20 END LOOP;\n\
             END $pgevolve$",
            Literal(&view(" WITH (security_invoker = true)")),
            Literal(&view("")),
            Literal(&new.to_string()),
            old.to_string().replace('\'', "''").replace('%', "%%"),
        )),
    ]
}

/// Contract: the view under the old name (older builds, which use it, are gone by then).
pub(crate) fn contract(r: &TableRename<'_>) -> Vec<Statement> {
    vec![Statement::always(format!(
        "DROP VIEW IF EXISTS {}",
        r.old_name()
    ))]
}

/// Abort, one transaction: the view, then the table back to its old name. Both idempotent, so
/// an abort interrupted after its record runs again.
pub(crate) fn abort(r: &TableRename<'_>) -> Vec<Statement> {
    vec![
        Statement::always(format!("DROP VIEW IF EXISTS {}", r.old_name())),
        Statement::always(format!(
            "ALTER TABLE IF EXISTS {} RENAME TO {}",
            r.new_name(),
            Ident(r.from)
        )),
    ]
}

/// One row: `old` and `new`, the `relkind` of the relation under each name (`NULL` when
/// there is none): `r` a table, `p` a partitioned table, `v` a view.
pub(crate) fn relations(r: &TableRename<'_>) -> String {
    let kind = |name: &Qualified<'_>| {
        format!(
            "(SELECT c.relkind::text FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass({}))",
            Literal(&name.to_string())
        )
    };
    format!(
        "SELECT {} AS old, {} AS new",
        kind(&r.old_name()),
        kind(&r.new_name())
    )
}

/// The tables (`base`, one row each) that the view under `name` reads from its own schema;
/// nothing when `name` is not a view. A rename's view reads exactly one.
pub(crate) fn view_bases(schema: &str, name: &str) -> String {
    format!(
        "SELECT DISTINCT t.relname::text AS base \
           FROM pg_catalog.pg_class v JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid \
                JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
                     AND d.refclassid = 'pg_catalog.pg_class'::regclass \
                JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND t.relkind IN ('r', 'p') \
          WHERE v.oid = pg_catalog.to_regclass({}) AND v.relkind = 'v' AND t.oid <> v.oid \
            AND t.relnamespace = v.relnamespace",
        Literal(&Qualified(schema, name).to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: TableRename<'static> = TableRename {
        schema: "public",
        from: "clients",
        to: "customers",
    };

    #[test]
    fn rename_names_the_new_table_unqualified_and_the_view_reads_it() {
        let expand = expand(&R);
        assert_eq!(
            expand[0].sql,
            r#"ALTER TABLE "public"."clients" RENAME TO "customers""#
        );
        assert!(expand[1].sql.contains(
            r#"'CREATE VIEW "public"."clients" WITH (security_invoker = true) AS SELECT * FROM "public"."customers"'"#
        ));
        assert!(
            expand[1]
                .sql
                .contains(r#"GRANT %s ON "public"."clients" TO %s"#)
        );
    }

    #[test]
    fn quotes_in_names_are_escaped_inside_the_do_block() {
        let r = TableRename {
            schema: "public",
            from: "o'ld",
            to: "new",
        };
        let sql = &expand(&r)[1].sql;
        assert!(
            sql.contains(r#"GRANT %s ON "public"."o''ld" TO %s"#),
            "{sql}"
        );
        assert!(sql.contains(r#"'CREATE VIEW "public"."o''ld""#), "{sql}");
    }
}
