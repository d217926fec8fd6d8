//! Everything that depends on a column a rename will drop at contract, read from `pg_depend`
//! (and `pg_index`, `pg_constraint`, `pg_attrdef`, `pg_rewrite`, `pg_policy`, `pg_trigger`,
//! `pg_statistic_ext`, `pg_attribute`), with the definitions PostgreSQL itself writes for each
//! one once the column has its new name.
//!
//! The new definitions come from a probe, not from text substitution: the indexes and CHECK
//! constraints are built on an empty temporary copy of the table, the column is renamed there,
//! and `pg_get_indexdef` / `pg_get_constraintdef` say how they read now. Everything runs in one
//! transaction that is rolled back, with an empty `search_path` so every name in a definition
//! is schema-qualified. Nothing is changed.

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use crate::ident::{Ident, Qualified};
use crate::spec::ModelSpec;

/// An index that mentions the column (as a key or `INCLUDE` column, in an expression or in its
/// predicate), not the index behind a constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DependentIndex {
    pub name: String,
    pub unique: bool,
    /// Its columns by name (key and `INCLUDE`), or `None` when one is an expression: what
    /// PostgreSQL's conventional name is made of.
    pub columns: Option<Vec<String>>,
    /// What follows `USING ` in its definition, over the new column.
    pub body: String,
}

/// What kind of constraint depends on the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DependentKind {
    /// A unique constraint of the table: the body of its index over the new column, its key
    /// columns (new names) and its `DEFERRABLE` clause, if any.
    Unique {
        body: String,
        columns: Vec<String>,
        deferrable: String,
    },
    /// A CHECK of the table, its definition over the new column.
    Check { definition: String },
    /// A foreign key, from the column (on the table) or to it (on any table, this one
    /// included): its definition over the new column, and its local columns.
    ForeignKey {
        definition: String,
        columns: Vec<String>,
        incoming: bool,
    },
}

/// A constraint that depends on the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DependentConstraint {
    pub name: String,
    /// The table the constraint belongs to (another table for a foreign key to the column).
    pub schema: String,
    pub table: String,
    pub validated: bool,
    pub kind: DependentKind,
}

/// A column privilege on the old column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnGrant {
    /// `SELECT`, `INSERT`, `UPDATE` or `REFERENCES`.
    pub privilege: String,
    /// The grantee, quoted (`"reporting"`), or `PUBLIC`.
    pub grantee: String,
    pub grantable: bool,
}

/// Everything that depends on the column, as the catalog has it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ColumnDependents {
    pub indexes: Vec<DependentIndex>,
    pub constraints: Vec<DependentConstraint>,
    /// The default expression (schema-qualified).
    pub default: Option<String>,
    /// Sequences owned by the column (`serial`), schema-qualified and quoted.
    pub owned_sequences: Vec<String>,
    /// The column's comment, as a quoted literal.
    pub comment: Option<String>,
    pub grants: Vec<ColumnGrant>,
    /// What cannot be carried over, each with what to do about it.
    pub blockers: Vec<String>,
    /// `pg_describe_object` of every dependent that is carried over or is pgevolve's own: the
    /// contract refuses to drop the column if anything else depends on it by then.
    pub carried: Vec<String>,
}

/// The dependents of every kind (`pg_depend` rows on the column), one per object.
const DEPENDENTS: &str = "\
SELECT DISTINCT d.classid::regclass::text AS class, d.objid::int8 AS objid, d.objsubid, \
       pg_describe_object(d.classid, d.objid, d.objsubid) AS described, \
       (SELECT c.relkind::text FROM pg_class c WHERE d.classid = 'pg_class'::regclass AND c.oid = d.objid) AS relkind, \
       (SELECT r.ev_class::regclass::text FROM pg_rewrite r WHERE d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid) AS view, \
       (SELECT r.ev_class::int8 FROM pg_rewrite r WHERE d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid) AS view_oid, \
       (SELECT a.adnum FROM pg_attrdef a WHERE d.classid = 'pg_attrdef'::regclass AND a.oid = d.objid) AS adnum, \
       (SELECT k.contype::text FROM pg_constraint k WHERE d.classid = 'pg_constraint'::regclass AND k.oid = d.objid) AS contype, \
       (SELECT deptype::text FROM pg_depend d2 WHERE d2.classid = d.classid AND d2.objid = d.objid \
          AND d2.refobjid = d.refobjid AND d2.refobjsubid = d.refobjsubid ORDER BY deptype = 'i' DESC LIMIT 1) AS deptype \
  FROM pg_depend d \
 WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1::int8::oid AND d.refobjsubid = $2 \
 ORDER BY 4";

/// Reads what depends on column `old` of the model's table, and how each object reads once
/// the column is named `new`. `helper_views` are pgevolve's own views over the table (dropped
/// at contract before the column): they depend on it but need no carrying.
pub(crate) async fn read(
    conn: &mut PgConnection,
    model: &ModelSpec,
    old: &str,
    new: &str,
    helper_views: &[String],
) -> sqlx::Result<ColumnDependents> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('search_path', '', true)")
        .execute(&mut *tx)
        .await?;
    let result = read_in(&mut tx, model, old, new, helper_views).await;
    tx.rollback().await?;
    result
}

async fn read_in(
    conn: &mut PgConnection,
    model: &ModelSpec,
    old: &str,
    new: &str,
    helper_views: &[String],
) -> sqlx::Result<ColumnDependents> {
    let table = Qualified(model.schema, model.table).to_string();
    let row = sqlx::query(
        "SELECT a.attrelid::int8 AS relid, a.attnum, a.attidentity::text AS identity, \
                a.attgenerated::text AS generated, quote_literal(col_description(a.attrelid, a.attnum)) AS comment \
           FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
    )
    .bind(&table)
    .bind(old)
    .fetch_optional(&mut *conn)
    .await?;
    let mut out = ColumnDependents::default();
    let Some(row) = row else {
        return Ok(out);
    };
    let (relid, attnum): (i64, i16) = (row.try_get("relid")?, row.try_get("attnum")?);
    let identity: String = row.try_get("identity")?;
    let generated: String = row.try_get("generated")?;
    out.comment = row.try_get("comment")?;
    if !identity.is_empty() {
        out.blockers.push(format!(
            "`{old}` is an identity column: a rename through a new column cannot carry an identity (the new \
             column would need its own, and both would generate values). Rename it in place with \
             `ALTER TABLE ... RENAME COLUMN` (brief lock, breaks binaries that use the old name), or drop the \
             identity first (`ALTER COLUMN {old} DROP IDENTITY`) and give the column a default"
        ));
    }
    if !generated.is_empty() {
        out.blockers.push(format!(
            "`{old}` is a generated column: its new column would not be generated. Rename it in place with \
             `ALTER TABLE ... RENAME COLUMN`, or drop `renamed_from`"
        ));
    }

    let mut probe_indexes: Vec<(String, bool, Option<Vec<String>>, String)> = Vec::new();
    let mut probe_uniques: Vec<(String, bool, String, String)> = Vec::new();
    let mut probe_checks: Vec<(String, bool, String)> = Vec::new();
    let rows = sqlx::query(DEPENDENTS)
        .bind(relid)
        .bind(i32::from(attnum))
        .fetch_all(&mut *conn)
        .await?;
    for r in rows {
        let class: String = r.try_get("class")?;
        let objid: i64 = r.try_get("objid")?;
        let objsubid: i32 = r.try_get("objsubid")?;
        let described: String = r.try_get("described")?;
        let relkind: Option<String> = r.try_get("relkind")?;
        let view: Option<String> = r.try_get("view")?;
        let view_oid: Option<i64> = r.try_get("view_oid")?;
        let adnum: Option<i16> = r.try_get("adnum")?;
        let contype: Option<String> = r.try_get("contype")?;
        let deptype: Option<String> = r.try_get("deptype")?;
        let mut carried = true;
        match class.as_str() {
            "pg_class" if objid == relid && objsubid != 0 => {
                carried = false;
                out.blockers.push(format!(
                    "{described} is computed from `{old}`: it would be dropped with the column. Rewrite it over the new column by hand first"
                ));
            }
            "pg_class" if relkind.as_deref() == Some("i") => {
                let index = sqlx::query(
                    "SELECT c.relname::text AS name, i.indisunique AS is_unique, i.indisvalid AS valid, \
                            pg_get_indexdef(i.indexrelid) AS definition, \
                            CASE WHEN 0 <> ALL (i.indkey::int2[]) THEN \
                              (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, ord) \
                                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n) END AS columns \
                       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indexrelid = $1::int8::oid",
                )
                .bind(objid)
                .fetch_one(&mut *conn)
                .await?;
                let name: String = index.try_get("name")?;
                if !index.try_get::<bool, _>("valid")? {
                    carried = false;
                    out.blockers.push(format!(
                        "index {name} on `{old}` is INVALID (a failed build): drop it (`DROP INDEX CONCURRENTLY`) or rebuild it (`REINDEX INDEX CONCURRENTLY`) first"
                    ));
                } else {
                    let definition: String = index.try_get("definition")?;
                    let body = definition
                        .split_once(" USING ")
                        .map(|(_, b)| b.to_string())
                        .unwrap_or_default();
                    probe_indexes.push((
                        name,
                        index.try_get("is_unique")?,
                        index.try_get("columns")?,
                        body,
                    ));
                }
            }
            "pg_class" if relkind.as_deref() == Some("S") && deptype.as_deref() == Some("a") => {
                let name: String = sqlx::query_scalar(
                    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::int8::oid",
                )
                .bind(objid)
                .fetch_one(&mut *conn)
                .await?;
                out.owned_sequences.push(name);
            }
            // An identity sequence: reported above.
            "pg_class" if relkind.as_deref() == Some("S") => carried = false,
            "pg_attrdef" if adnum == Some(attnum) => {
                out.default = sqlx::query_scalar(
                    "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE oid = $1::int8::oid",
                )
                .bind(objid)
                .fetch_optional(&mut *conn)
                .await?;
            }
            "pg_attrdef" => {
                carried = false;
                out.blockers.push(format!(
                    "{described} reads `{old}` (a generated column): it would be dropped with the column. \
                     Rewrite it over the new column by hand first"
                ));
            }
            "pg_constraint" => {
                let c = sqlx::query(
                    "SELECT k.conname::text AS name, n.nspname::text AS schema, t.relname::text AS table, \
                            k.convalidated AS validated, pg_get_constraintdef(k.oid) AS definition, \
                            k.conrelid::int8 AS conrelid, k.confrelid::int8 AS confrelid, \
                            (SELECT array_agg(a.attname::text ORDER BY u.ord) FROM unnest(k.conkey) WITH ORDINALITY u(n, ord) \
                               JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n) AS local_columns, \
                            (SELECT array_agg(a.attname::text ORDER BY u.ord) FROM unnest(k.confkey) WITH ORDINALITY u(n, ord) \
                               JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n) AS referenced_columns, \
                            CASE WHEN k.confrelid <> 0 THEN format('%I.%I', fn.nspname, ft.relname) END AS referenced_table, \
                            k.confmatchtype::text AS match_type, k.confupdtype::text AS on_update, \
                            k.confdeltype::text AS on_delete, k.condeferrable AS deferrable, k.condeferred AS deferred, \
                            CASE WHEN k.conindid <> 0 THEN pg_get_indexdef(k.conindid) END AS index_definition \
                       FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid \
                       JOIN pg_namespace n ON n.oid = t.relnamespace \
                       LEFT JOIN pg_class ft ON ft.oid = k.confrelid LEFT JOIN pg_namespace fn ON fn.oid = ft.relnamespace \
                      WHERE k.oid = $1::int8::oid",
                )
                .bind(objid)
                .fetch_one(&mut *conn)
                .await?;
                let name: String = c.try_get("name")?;
                let validated: bool = c.try_get("validated")?;
                let deferrable = match (
                    c.try_get::<bool, _>("deferrable")?,
                    c.try_get::<bool, _>("deferred")?,
                ) {
                    (true, true) => " DEFERRABLE INITIALLY DEFERRED",
                    (true, false) => " DEFERRABLE",
                    _ => "",
                };
                let rename = |cols: Vec<String>| -> Vec<String> {
                    cols.into_iter()
                        .map(|c| if c == old { new.to_string() } else { c })
                        .collect()
                };
                match contype.as_deref() {
                    Some("u") => {
                        let definition: String = c
                            .try_get::<Option<String>, _>("index_definition")?
                            .unwrap_or_default();
                        let body = definition
                            .split_once(" USING ")
                            .map(|(_, b)| b.to_string())
                            .unwrap_or_default();
                        let columns = rename(
                            c.try_get::<Option<Vec<String>>, _>("local_columns")?
                                .unwrap_or_default(),
                        );
                        probe_uniques.push((name.clone(), validated, body, deferrable.to_string()));
                        out.constraints.push(DependentConstraint {
                            name,
                            schema: c.try_get("schema")?,
                            table: c.try_get("table")?,
                            validated,
                            kind: DependentKind::Unique {
                                body: String::new(),
                                columns,
                                deferrable: deferrable.to_string(),
                            },
                        });
                    }
                    Some("c") => {
                        let definition: String = c.try_get("definition")?;
                        let definition = definition
                            .strip_suffix(" NOT VALID")
                            .unwrap_or(&definition)
                            .to_string();
                        probe_checks.push((name, validated, definition));
                    }
                    Some("f") => {
                        let conrelid: i64 = c.try_get("conrelid")?;
                        let confrelid: i64 = c.try_get("confrelid")?;
                        let local: Vec<String> = c
                            .try_get::<Option<Vec<String>>, _>("local_columns")?
                            .unwrap_or_default();
                        let referenced: Vec<String> = c
                            .try_get::<Option<Vec<String>>, _>("referenced_columns")?
                            .unwrap_or_default();
                        let from_column = conrelid == relid && local.iter().any(|c| c == old);
                        let to_column = confrelid == relid && referenced.iter().any(|c| c == old);
                        if from_column && to_column {
                            carried = false;
                            out.blockers.push(format!(
                                "foreign key {name} references `{old}` from `{old}` itself; drop it, or recreate it by hand after the rename"
                            ));
                        } else {
                            let local = if from_column { rename(local) } else { local };
                            let referenced = if to_column {
                                rename(referenced)
                            } else {
                                referenced
                            };
                            let list = |cols: &[String]| {
                                cols.iter()
                                    .map(|c| Ident(c).to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            };
                            let action = |code: String| match code.as_str() {
                                "r" => "RESTRICT",
                                "c" => "CASCADE",
                                "n" => "SET NULL",
                                "d" => "SET DEFAULT",
                                _ => "NO ACTION",
                            };
                            let matching = if c.try_get::<String, _>("match_type")? == "f" {
                                " MATCH FULL"
                            } else {
                                ""
                            };
                            let definition = format!(
                                "FOREIGN KEY ({}) REFERENCES {} ({}){matching} ON UPDATE {} ON DELETE {}{deferrable}",
                                list(&local),
                                c.try_get::<Option<String>, _>("referenced_table")?
                                    .unwrap_or_default(),
                                list(&referenced),
                                action(c.try_get("on_update")?),
                                action(c.try_get("on_delete")?),
                            );
                            out.constraints.push(DependentConstraint {
                                name,
                                schema: c.try_get("schema")?,
                                table: c.try_get("table")?,
                                validated,
                                kind: DependentKind::ForeignKey {
                                    definition,
                                    columns: local,
                                    incoming: to_column,
                                },
                            });
                        }
                    }
                    // NOT NULL as a constraint (PostgreSQL 18): the rename enforces it itself.
                    Some("n") => {}
                    Some("p") => {
                        carried = false;
                        out.blockers.push(format!(
                            "`{old}` is part of the primary key ({name}): a primary key column cannot be renamed through a new column"
                        ));
                    }
                    _ => {
                        carried = false;
                        out.blockers.push(format!(
                            "{described} (`{}`) cannot be carried over to the new column; drop it before the rename and recreate it after",
                            c.try_get::<String, _>("definition")?
                        ));
                    }
                }
            }
            "pg_rewrite"
                if view_oid != Some(relid)
                    && view
                        .as_deref()
                        .is_some_and(|v| helper_views.iter().any(|h| view_is(v, model, h))) => {}
            "pg_rewrite" => {
                carried = false;
                out.blockers.push(format!(
                    "view {} selects `{old}`, and would break when the column is dropped: make it read `{new}` once \
                     the rename's expand has added it (CREATE OR REPLACE VIEW), or drop it and recreate it after the contract",
                    view.unwrap_or(described.clone())
                ));
            }
            "pg_policy" => {
                carried = false;
                out.blockers.push(format!(
                    "{described} reads `{old}`: rewrite the policy over `{new}` (ALTER POLICY) once the expand added it, \
                     or drop it and recreate it after the contract"
                ));
            }
            "pg_trigger" => {
                carried = false;
                out.blockers.push(format!(
                    "{described} names `{old}` (`UPDATE OF` or `WHEN`): recreate it over `{new}`, or drop it and recreate it after the contract"
                ));
            }
            "pg_statistic_ext" => {
                carried = false;
                out.blockers.push(format!(
                    "{described} covers `{old}` and would be dropped with it: drop it before the rename and create it over `{new}` after the contract"
                ));
            }
            _ => {
                carried = false;
                out.blockers.push(format!(
                    "{described} depends on `{old}` and cannot be carried over: drop it before the rename and recreate it after the contract"
                ));
            }
        }
        if carried {
            out.carried.push(described);
        }
    }
    out.grants = sqlx::query(
        "SELECT x.privilege_type AS privilege, \
                CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS grantee, \
                x.is_grantable AS grantable \
           FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) x LEFT JOIN pg_roles r ON r.oid = x.grantee \
          WHERE a.attrelid = $1::int8::oid AND a.attnum = $2 ORDER BY 2, 1",
    )
    .bind(relid)
    .bind(attnum)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| {
        Ok(ColumnGrant {
            privilege: r.try_get("privilege")?,
            grantee: r.try_get("grantee")?,
            grantable: r.try_get("grantable")?,
        })
    })
    .collect::<sqlx::Result<_>>()?;

    if probe_indexes.is_empty() && probe_uniques.is_empty() && probe_checks.is_empty() {
        return Ok(out);
    }
    let over_new = probe(
        conn,
        model,
        old,
        new,
        &probe_indexes,
        &probe_uniques,
        &probe_checks,
    )
    .await?;
    let (index_bodies, rest) = over_new.split_at(probe_indexes.len());
    let (unique_bodies, check_defs) = rest.split_at(probe_uniques.len());
    for ((name, unique, columns, _), body) in probe_indexes.into_iter().zip(index_bodies) {
        out.indexes.push(DependentIndex {
            name,
            unique,
            columns,
            body: body.clone(),
        });
    }
    for ((name, _, _, _), body) in probe_uniques.iter().zip(unique_bodies) {
        if let Some(DependentConstraint {
            kind: DependentKind::Unique { body: b, .. },
            ..
        }) = out.constraints.iter_mut().find(|c| &c.name == name)
        {
            *b = body.clone();
        }
    }
    for ((name, validated, _), definition) in probe_checks.into_iter().zip(check_defs) {
        out.constraints.push(DependentConstraint {
            name,
            schema: model.schema.to_string(),
            table: model.table.to_string(),
            validated,
            kind: DependentKind::Check {
                definition: definition.clone(),
            },
        });
    }
    out.constraints.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Whether `regclass` text (quoted and qualified only when needed) names the helper view.
fn view_is(regclass: &str, model: &ModelSpec, helper: &str) -> bool {
    regclass == helper
        || regclass == Ident(helper).to_string()
        || regclass == Qualified(model.schema, helper).to_string()
        || regclass == format!("{}.{helper}", model.schema)
}

/// Builds the indexes and checks on an empty temporary copy of the table, renames the column
/// there and returns how PostgreSQL writes each one back: index bodies (after `USING `), then
/// unique-constraint index bodies, then check definitions. Runs inside the caller's
/// transaction, under a savepoint that is rolled back.
async fn probe(
    conn: &mut PgConnection,
    model: &ModelSpec,
    old: &str,
    new: &str,
    indexes: &[(String, bool, Option<Vec<String>>, String)],
    uniques: &[(String, bool, String, String)],
    checks: &[(String, bool, String)],
) -> sqlx::Result<Vec<String>> {
    let mut tx = conn.begin().await?;
    let temp = Qualified("pg_temp", "pgevolve_carry_probe").to_string();
    let result = async {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TEMPORARY TABLE pgevolve_carry_probe (LIKE {})",
            Qualified(model.schema, model.table)
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {temp} DROP COLUMN IF EXISTS {}",
            Ident(new)
        )))
        .execute(&mut *tx)
        .await?;
        let mut names = Vec::new();
        for (i, (unique, body)) in indexes
            .iter()
            .map(|(_, u, _, b)| (*u, b))
            .chain(uniques.iter().map(|(_, _, b, _)| (true, b)))
            .enumerate()
        {
            let name = format!("pgevolve_carry_probe_{i}");
            sqlx::query(AssertSqlSafe(format!(
                "CREATE {}INDEX {name} ON {temp} USING {body}",
                if unique { "UNIQUE " } else { "" }
            )))
            .execute(&mut *tx)
            .await?;
            names.push(name);
        }
        for (i, (_, _, definition)) in checks.iter().enumerate() {
            sqlx::query(AssertSqlSafe(format!(
                "ALTER TABLE {temp} ADD CONSTRAINT pgevolve_carry_check_{i} {definition} NOT VALID"
            )))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {temp} RENAME COLUMN {} TO {}",
            Ident(old),
            Ident(new)
        )))
        .execute(&mut *tx)
        .await?;
        let mut out = Vec::new();
        for name in names {
            let definition: String = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT pg_get_indexdef('pg_temp.{name}'::regclass)"
            )))
            .fetch_one(&mut *tx)
            .await?;
            out.push(
                definition
                    .split_once(" USING ")
                    .map(|(_, b)| b.to_string())
                    .unwrap_or_default(),
            );
        }
        for i in 0..checks.len() {
            let definition: String = sqlx::query_scalar(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE conrelid = 'pg_temp.pgevolve_carry_probe'::regclass AND conname = $1",
            )
            .bind(format!("pgevolve_carry_check_{i}"))
            .fetch_one(&mut *tx)
            .await?;
            out.push(
                definition
                    .strip_suffix(" NOT VALID")
                    .unwrap_or(&definition)
                    .to_string(),
            );
        }
        Ok::<_, sqlx::Error>(out)
    }
    .await;
    tx.rollback().await?;
    result
}
