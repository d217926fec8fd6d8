//! What a rename carries over from the old column to the new one, and the SQL of each piece.
//!
//! The objects come from the live catalog ([`ColumnDependents`]), so the statements are
//! resolved when the step runs, not when the plan is built; `plan()` shows their shape
//! ([`plan_lines`]). Every object on the old column is rebuilt over the new one:
//!
//! - **before switch** (validate phase, after the backfill, so the batches do not maintain the
//!   new indexes row by row): each index, and the index behind each unique constraint, with
//!   `CREATE [UNIQUE] INDEX CONCURRENTLY`; each CHECK and foreign key (from the column, or from
//!   another table to it) `NOT VALID`, then `VALIDATE CONSTRAINT`; column privileges granted;
//! - **at contract**, in its one transaction: the table locked and a guard that refuses to go
//!   on if anything not carried depends on the old column; default, owned sequences and comment
//!   moved; foreign keys to the old column dropped; then, after the old column is dropped, each
//!   unique index attached with `ADD CONSTRAINT ... UNIQUE USING INDEX` and each object renamed
//!   to its final name.
//!
//! Names: an object PostgreSQL named (`<table>_<columns>_<suffix>`) gets the conventional name
//! over the new column; an object the user named keeps its name, restored at contract (it is
//! built under `pgevolve_carry_<table>_<column>_<hash>` meanwhile, the old one still having it).

use super::{Exists, Statement, table};
use crate::catalog::dependents::{ColumnDependents, DependentKind};
use crate::ident::{Ident, Literal, Qualified};
use crate::spec::{ColumnSpec, ModelSpec};
use crate::step::{StepId, fnv1a};
use pgevolve_naming::{self as naming, conventional_name, object_name, plain_name};

/// An index built over the new column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CarriedIndex {
    /// The index on the old column (or the unique constraint) it replaces.
    pub old: String,
    /// The name it is built under.
    pub name: String,
    /// The name it has after contract.
    pub final_name: String,
    pub unique: bool,
    /// What follows `USING ` in its definition.
    pub body: String,
    /// `Some(deferrable clause)` when it becomes a unique constraint at contract.
    pub constraint: Option<String>,
}

impl CarriedIndex {
    /// `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS`: outside any transaction, run by
    /// `concurrent::Build` like pgevolve's own index steps.
    pub fn create(&self, model: &ModelSpec) -> Statement {
        Statement::always(format!(
            "CREATE {}INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING {}",
            if self.unique { "UNIQUE " } else { "" },
            Ident(&self.name),
            table(model),
            self.body
        ))
    }
}

/// A CHECK or foreign key added over the new column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CarriedConstraint {
    pub old: String,
    pub name: String,
    pub final_name: String,
    /// The table it belongs to.
    pub schema: String,
    pub table: String,
    /// Its definition over the new column (without `NOT VALID`).
    pub definition: String,
    /// Validated after it is added (the old one was).
    pub validate: bool,
    /// A foreign key on another table (or this one) that references the old column.
    pub incoming: bool,
}

impl CarriedConstraint {
    pub fn owner(&self) -> Qualified<'_> {
        Qualified(&self.schema, &self.table)
    }

    /// `ADD CONSTRAINT ... NOT VALID`: brief lock, no scan; skipped when it exists.
    pub fn add(&self) -> Statement {
        Statement::unless(
            format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID",
                self.owner(),
                Ident(&self.name),
                self.definition
            ),
            Exists::Constraint(self.name.clone()),
        )
    }

    /// `VALIDATE CONSTRAINT`: SHARE UPDATE EXCLUSIVE, reads and writes go on.
    pub fn validate(&self) -> Statement {
        Statement::always(format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            self.owner(),
            Ident(&self.name)
        ))
    }
}

/// Everything a rename carries over, with its statements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Carry {
    pub indexes: Vec<CarriedIndex>,
    pub constraints: Vec<CarriedConstraint>,
    /// Column privileges, granted on the new column before switch (and again at contract).
    pub grants: Vec<Statement>,
    /// Contract, in its transaction, before the old column is dropped.
    pub before_drop: Vec<Statement>,
    /// Contract, after the old column is dropped.
    pub after_drop: Vec<Statement>,
    /// What cannot be carried, each with what to do: drift.
    pub blockers: Vec<String>,
}

/// The two columns a carry moves dependents between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Between {
    /// The column whose dependents are carried (dropped at contract).
    pub old: String,
    /// The column they are rebuilt over.
    pub new: String,
    /// The new column takes the old one's name at contract (a type change): every carried
    /// object then gets back the name of the object it replaces.
    pub takes_old_name: bool,
}

impl Between {
    /// A rename's: from `renamed_from` to the field's column, whose name stays.
    pub fn rename(column: &ColumnSpec) -> Between {
        Between {
            old: column.renamed_from.unwrap_or(column.name).to_string(),
            new: column.name.to_string(),
            takes_old_name: false,
        }
    }
}

fn hashed(id: &StepId, old: &str) -> String {
    format!("{:016x}", fnv1a(&["carry", id.as_str(), old]))
}

/// The name a carried object is built under, and its name after contract.
fn names(
    model: &ModelSpec,
    column: &ColumnSpec,
    id: &StepId,
    owner: &str,
    old: &str,
    columns: Option<(&[String], &[String])>,
    suffix: &str,
) -> (String, String) {
    let final_name = match columns {
        Some((old_cols, new_cols))
            if old_cols != new_cols && *old == plain_name(owner, old_cols, suffix) =>
        {
            conventional_name(owner, new_cols, suffix, &hashed(id, old))
        }
        _ => old.to_string(),
    };
    let build = if final_name != old {
        final_name.clone()
    } else {
        object_name("pgevolve_carry", model.table, column.name, &hashed(id, old))
    };
    (build, final_name)
}

impl Carry {
    /// What carrying `deps` (the dependents of the old column) over to the new one takes.
    pub fn new(
        model: &ModelSpec,
        column: &ColumnSpec,
        id: &StepId,
        between: &Between,
        deps: &ColumnDependents,
    ) -> Carry {
        let t = table(model);
        let (old, new) = (between.old.as_str(), between.new.as_str());
        let keep = between.takes_old_name;
        let rename = |cols: &[String]| -> Vec<String> {
            cols.iter()
                .map(|c| if c == old { new.to_string() } else { c.clone() })
                .collect()
        };
        let unrename = |cols: &[String]| -> Vec<String> {
            cols.iter()
                .map(|c| if c == new { old.to_string() } else { c.clone() })
                .collect()
        };
        let mut carry = Carry {
            blockers: deps.blockers.clone(),
            ..Carry::default()
        };
        for ix in &deps.indexes {
            let new_cols = ix.columns.as_deref().map(rename);
            let cols = ix.columns.as_deref().zip(new_cols.as_deref());
            let (name, final_name) = names(
                model,
                column,
                id,
                model.table,
                &ix.name,
                cols.filter(|_| !keep),
                naming::INDEX,
            );
            carry.indexes.push(CarriedIndex {
                old: ix.name.clone(),
                name,
                final_name,
                unique: ix.unique,
                body: ix.body.clone(),
                constraint: None,
            });
        }
        for c in &deps.constraints {
            match &c.kind {
                DependentKind::Unique {
                    body,
                    columns,
                    deferrable,
                } => {
                    let old_cols = unrename(columns);
                    let (name, final_name) = names(
                        model,
                        column,
                        id,
                        model.table,
                        &c.name,
                        (!keep).then_some((&old_cols[..], &columns[..])),
                        naming::UNIQUE,
                    );
                    carry.indexes.push(CarriedIndex {
                        old: c.name.clone(),
                        name,
                        final_name,
                        unique: true,
                        body: body.clone(),
                        constraint: Some(deferrable.clone()),
                    });
                }
                DependentKind::Check { definition } => {
                    let (name, final_name) = names(
                        model,
                        column,
                        id,
                        model.table,
                        &c.name,
                        (!keep).then_some((&[old.to_string()][..], &[new.to_string()][..])),
                        naming::CHECK,
                    );
                    carry.constraints.push(CarriedConstraint {
                        old: c.name.clone(),
                        name,
                        final_name,
                        schema: c.schema.clone(),
                        table: c.table.clone(),
                        definition: definition.clone(),
                        validate: c.validated,
                        incoming: false,
                    });
                }
                DependentKind::ForeignKey {
                    definition,
                    columns,
                    incoming,
                } => {
                    let old_cols = if *incoming {
                        columns.clone()
                    } else {
                        unrename(columns)
                    };
                    let (name, final_name) = names(
                        model,
                        column,
                        id,
                        &c.table,
                        &c.name,
                        (!keep).then_some((&old_cols[..], &columns[..])),
                        naming::FOREIGN_KEY,
                    );
                    carry.constraints.push(CarriedConstraint {
                        old: c.name.clone(),
                        name,
                        final_name,
                        schema: c.schema.clone(),
                        table: c.table.clone(),
                        definition: definition.clone(),
                        validate: c.validated,
                        incoming: *incoming,
                    });
                }
            }
        }
        carry.grants = deps
            .grants
            .iter()
            .map(|g| {
                Statement::always(format!(
                    "GRANT {} ({}) ON {t} TO {}{}",
                    g.privilege,
                    Ident(new),
                    g.grantee,
                    if g.grantable {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                ))
            })
            .collect();

        // Contract, first: nothing may start depending on the old column any more (ACCESS
        // EXCLUSIVE, which the drop takes anyway), and nothing not carried may depend on it.
        carry.before_drop.push(Statement::always(format!(
            "LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"
        )));
        carry.before_drop.push(guard(model, old, &deps.carried));
        if let Some(default) = &deps.default {
            carry.before_drop.push(Statement::always(format!(
                "ALTER TABLE {t} ALTER COLUMN {} SET DEFAULT {default}",
                Ident(new)
            )));
        }
        for sequence in &deps.owned_sequences {
            carry.before_drop.push(Statement::always(format!(
                "ALTER SEQUENCE {sequence} OWNED BY {t}.{}",
                Ident(new)
            )));
        }
        if let Some(comment) = &deps.comment {
            carry.before_drop.push(Statement::always(format!(
                "COMMENT ON COLUMN {t}.{} IS {comment}",
                Ident(new)
            )));
        }
        carry.before_drop.extend(carry.grants.iter().cloned());
        for c in carry.constraints.iter().filter(|c| c.incoming) {
            carry.before_drop.push(Statement::always(format!(
                "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                c.owner(),
                Ident(&c.old)
            )));
        }
        for ix in &carry.indexes {
            match &ix.constraint {
                Some(deferrable) => carry.after_drop.push(Statement::unless(
                    format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {} UNIQUE USING INDEX {}{deferrable}",
                        Ident(&ix.final_name),
                        Ident(&ix.name)
                    ),
                    Exists::Constraint(ix.final_name.clone()),
                )),
                None if ix.name != ix.final_name => {
                    carry.after_drop.push(Statement::always(format!(
                        "ALTER INDEX {} RENAME TO {}",
                        Qualified(model.schema, &ix.name),
                        Ident(&ix.final_name)
                    )))
                }
                None => {}
            }
        }
        for c in carry.constraints.iter().filter(|c| c.name != c.final_name) {
            carry.after_drop.push(Statement::always(format!(
                "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                c.owner(),
                Ident(&c.name),
                Ident(&c.final_name)
            )));
        }
        carry
    }

    /// A contract's statements with what the carry does before the old column is dropped
    /// first and what it does after last, for one transaction.
    pub fn around(&self, contract: Vec<Statement>) -> Vec<Statement> {
        let mut out = self.before_drop.clone();
        out.extend(contract);
        out.extend(self.after_drop.iter().cloned());
        out
    }

    /// Nothing to carry but the guard.
    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty() && self.constraints.is_empty() && self.grants.is_empty()
    }

    /// The abort's statements that run in a transaction, before the indexes are dropped: the
    /// carried constraints (a foreign key to the new column depends on its unique index).
    pub fn abort_constraints(&self) -> Vec<Statement> {
        self.constraints
            .iter()
            .map(|c| {
                Statement::always(format!(
                    "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                    c.owner(),
                    Ident(&c.name)
                ))
            })
            .collect()
    }

    /// The abort's `DROP INDEX CONCURRENTLY` of every carried index.
    pub fn abort_indexes(&self, model: &ModelSpec) -> Vec<Statement> {
        self.indexes
            .iter()
            .map(|ix| super::index::drop_concurrently(model, &ix.name))
            .collect()
    }

    /// One line per carried object, for logs and the journal.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .indexes
            .iter()
            .map(|ix| {
                format!(
                    "{} {} as {} ({}{}USING {})",
                    if ix.constraint.is_some() {
                        "unique constraint"
                    } else {
                        "index"
                    },
                    ix.old,
                    ix.final_name,
                    if ix.unique { "UNIQUE " } else { "" },
                    if ix.name != ix.final_name {
                        format!("built as {}, ", ix.name)
                    } else {
                        String::new()
                    },
                    ix.body
                )
            })
            .collect();
        out.extend(self.constraints.iter().map(|c| {
            format!(
                "constraint {} as {} ({})",
                c.old, c.final_name, c.definition
            )
        }));
        out.extend(self.grants.iter().map(|g| g.sql.clone()));
        out
    }
}

/// A statement of the contract's transaction that fails when something depends on the old
/// column that was not carried over (created since the carry was read): the column is not
/// dropped, and the error names the object.
fn guard(model: &ModelSpec, old: &str, carried: &[String]) -> Statement {
    let t = Literal(&table(model).to_string()).to_string();
    let allowed = if carried.is_empty() {
        "ARRAY[]::text[]".to_string()
    } else {
        format!(
            "ARRAY[{}]",
            carried
                .iter()
                .map(|c| Literal(c).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Statement::always(format!(
        "DO $pgevolve$\n\
         DECLARE uncarried text; saved text := current_setting('search_path');\n\
         BEGIN\n\
         \x20 -- Objects are described as when they were read: every name schema-qualified.\n\
         \x20 PERFORM set_config('search_path', '', true);\n\
         \x20 SELECT string_agg(DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid), ', ') INTO uncarried\n\
         \x20   FROM pg_depend d\n\
         \x20  WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = {t}::regclass\n\
         \x20    AND d.refobjsubid = (SELECT attnum FROM pg_attribute WHERE attrelid = {t}::regclass AND attname = {})\n\
         \x20    AND pg_describe_object(d.classid, d.objid, d.objsubid) <> ALL ({allowed});\n\
         \x20 PERFORM set_config('search_path', saved, true);\n\
         \x20 IF uncarried IS NOT NULL THEN\n\
         \x20   RAISE EXCEPTION 'pgevolve: % depend(s) on column % and would be dropped with it; nothing was dropped', uncarried, {}\n\
         \x20     USING ERRCODE = 'dependent_objects_still_exist', HINT = 'boot again: pgevolve carries what it can and reports the rest as drift';\n\
         \x20 END IF;\n\
         END\n\
         $pgevolve$",
        Literal(old),
        Literal(old),
    ))
}

/// How `plan()` shows what a rename carries over: the statements' shapes, resolved from the
/// catalog when the step runs (the exact statements go to the log and the journal then).
pub(crate) fn plan_lines(model: &ModelSpec, between: &Between) -> Vec<String> {
    let t = table(model);
    let old = Ident(&between.old);
    let new = Ident(&between.new);
    vec![
        format!(
            "carried over from the catalog at boot: every object on {old} is rebuilt over {new} (resolved when the step runs; \
             what cannot be carried, such as a view, policy, trigger or statistics object on {old}, an identity or a primary key, is drift)"
        ),
        format!(
            "validate, first (in the background, outside any transaction, lock_timeout = 0, like index steps): \
             CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS <name> ON {t} USING <each index and unique constraint on {old}, over {new}>"
        ),
        format!(
            "validate, then (short transactions under lock_timeout): ALTER TABLE <table> ADD CONSTRAINT <name> \
             <each CHECK on {old} and foreign key from or to {old}, over {new}> NOT VALID; ALTER TABLE <table> VALIDATE CONSTRAINT <name>; \
             GRANT <privilege> ({new}) ON {t} TO <each grantee of a column privilege on {old}>"
        ),
        format!(
            "contract, first in its transaction: LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE; a guard that fails if anything not carried \
             depends on {old}; ALTER TABLE {t} ALTER COLUMN {new} SET DEFAULT <the default of {old}>; ALTER SEQUENCE <owned by {old}> \
             OWNED BY {t}.{new}; COMMENT ON COLUMN {t}.{new} IS <the comment of {old}>; the grants again; \
             ALTER TABLE <table> DROP CONSTRAINT IF EXISTS <each foreign key to {old}>"
        ),
        format!(
            "contract, after {old} is dropped: ALTER TABLE {t} ADD CONSTRAINT <name> UNIQUE USING INDEX <built index>; \
             ALTER INDEX / ALTER TABLE ... RENAME CONSTRAINT <built name> TO <final name> (a name the user gave is kept)"
        ),
        "abort, first: ALTER TABLE <table> DROP CONSTRAINT IF EXISTS <each carried constraint>; then, outside any transaction, \
         DROP INDEX CONCURRENTLY IF EXISTS <each carried index>"
            .to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::dependents::{ColumnGrant, DependentConstraint, DependentIndex};

    static FULL_NAME: ColumnSpec = ColumnSpec {
        field: "full_name",
        name: "full_name",
        sql_type: "text",
        renamed_from: Some("name"),
        ..ColumnSpec::DEFAULT
    };
    const MODEL: ModelSpec = ModelSpec {
        rust_name: "Person",
        table: "people",
        ..ModelSpec::DEFAULT
    };

    #[test]
    fn conventional_names_follow_the_column_and_given_names_are_kept() {
        let id = StepId::from_stored("0123456789abcdef".into());
        let deps = ColumnDependents {
            indexes: vec![
                DependentIndex {
                    name: "people_name_idx".into(),
                    unique: false,
                    columns: Some(vec!["name".into()]),
                    body: "btree (full_name)".into(),
                },
                DependentIndex {
                    name: "by_lower_name".into(),
                    unique: false,
                    columns: None,
                    body: "btree (lower(full_name))".into(),
                },
            ],
            constraints: vec![
                DependentConstraint {
                    name: "people_name_key".into(),
                    schema: "public".into(),
                    table: "people".into(),
                    validated: true,
                    kind: DependentKind::Unique {
                        body: "btree (full_name)".into(),
                        columns: vec!["full_name".into()],
                        deferrable: String::new(),
                    },
                },
                DependentConstraint {
                    name: "orders_buyer_fkey".into(),
                    schema: "public".into(),
                    table: "orders".into(),
                    validated: true,
                    kind: DependentKind::ForeignKey {
                        definition: "FOREIGN KEY (buyer) REFERENCES public.people (full_name)"
                            .into(),
                        columns: vec!["buyer".into()],
                        incoming: true,
                    },
                },
            ],
            grants: vec![ColumnGrant {
                privilege: "SELECT".into(),
                grantee: "\"reporting\"".into(),
                grantable: false,
            }],
            ..ColumnDependents::default()
        };
        let carry = Carry::new(&MODEL, &FULL_NAME, &id, &Between::rename(&FULL_NAME), &deps);
        let names: Vec<(&str, &str)> = carry
            .indexes
            .iter()
            .map(|i| (i.name.as_str(), i.final_name.as_str()))
            .collect();
        assert_eq!(names[0], ("people_full_name_idx", "people_full_name_idx"));
        assert!(names[1].0.starts_with("pgevolve_carry_people_full_name_"));
        assert_eq!(names[1].1, "by_lower_name");
        assert_eq!(names[2], ("people_full_name_key", "people_full_name_key"));
        let fk = &carry.constraints[0];
        assert!(
            fk.incoming
                && fk.name.starts_with("pgevolve_carry_")
                && fk.final_name == "orders_buyer_fkey"
        );
        let contract: Vec<&str> = carry
            .before_drop
            .iter()
            .chain(&carry.after_drop)
            .map(|s| s.sql.as_str())
            .collect();
        assert!(
            contract.contains(
                &"GRANT SELECT (\"full_name\") ON \"public\".\"people\" TO \"reporting\""
            )
        );
        assert!(contract.contains(
            &"ALTER TABLE \"public\".\"orders\" DROP CONSTRAINT IF EXISTS \"orders_buyer_fkey\""
        ));
        assert!(contract.contains(
            &"ALTER TABLE \"public\".\"people\" ADD CONSTRAINT \"people_full_name_key\" UNIQUE USING INDEX \"people_full_name_key\""
        ));
        assert!(
            contract
                .iter()
                .any(|s| s.starts_with("ALTER INDEX") && s.ends_with("TO \"by_lower_name\""))
        );
    }
}
