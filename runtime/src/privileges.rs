//! The privileges a boot needs, checked before any DDL, so that a role that lacks one is told
//! which, on what, and the statement that grants it, and nothing is changed.
//!
//! pgevolve needs no superuser. What it needs follows from what the plan does:
//!
//! - **the state schema** (default `pgevolve`): `CREATE` on the database when the schema does
//!   not exist (pgevolve creates it), or, when it exists, `USAGE` on it, `CREATE` when its
//!   tables are missing or older (pgevolve creates or upgrades them), ownership of its tables
//!   when it upgrades them, and otherwise `SELECT`, `INSERT`, `UPDATE`, `DELETE` on them and
//!   `USAGE` on their sequences;
//! - **every existing table with work left** (a step not at its last phase, or an interrupted
//!   abort): ownership, or membership in the owning role (every `ALTER TABLE`, `CREATE INDEX`,
//!   trigger); `CREATE` on its schema when a step still creates a helper function or a
//!   compatibility view there; ownership of the helper functions and views an earlier boot (as
//!   another role) left on it, which a later phase replaces or drops;
//! - **a table to create**: `CREATE` on its schema, or on the database when the schema does not
//!   exist;
//! - **a foreign key to add**: `REFERENCES` on the referenced table;
//! - **an enum type** (`#[derive(EvolveEnum)]`): `CREATE` on its schema (or on the database
//!   when the schema does not exist) to create it; ownership of it, or membership in the owning
//!   role, to add a label it lacks or to rename one (`ALTER TYPE`). Judged on the catalog: a
//!   type with every label needs nothing, whoever owns it;
//! - **`TEMPORARY` on the database**: the checks at boot compare definitions on empty temporary
//!   tables (granted to `PUBLIC` by default).
//!
//! [`BackfillOptions::skip_user_triggers`](crate::BackfillOptions::skip_user_triggers) needs the
//! right to set `session_replication_role`, checked beside this
//! ([`ErrorKind::TriggerSkipDenied`](crate::ErrorKind::TriggerSkipDenied)).

use std::fmt;

use sqlx::{PgConnection, Row};

use crate::ident::{Ident, Literal, Qualified};
use crate::plan::PlannedStep;
use crate::resolve::Resolved;
use crate::spec::{EnumSpec, ModelSpec};
use crate::step::{Phase, StepKind};

/// A privilege pgevolve needs on a database object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Privilege {
    /// Owning the object, or being a member of the role that owns it (`ALTER`, `DROP`,
    /// `CREATE INDEX`, triggers).
    Ownership,
    /// `CREATE` on a database (new schemas) or a schema (new tables, functions, views).
    Create,
    /// `USAGE` on a schema or a sequence.
    Usage,
    /// `TEMPORARY` on a database.
    Temporary,
    /// `REFERENCES` on a table a foreign key points to.
    References,
    /// `SELECT` on a table.
    Select,
    /// `INSERT` on a table.
    Insert,
    /// `UPDATE` on a table.
    Update,
    /// `DELETE` on a table.
    Delete,
}

impl Privilege {
    /// The keyword of `GRANT` (`ownership` for [`Privilege::Ownership`], which is not granted but
    /// transferred with `ALTER ... OWNER TO`).
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Ownership => "ownership",
            Privilege::Create => "CREATE",
            Privilege::Usage => "USAGE",
            Privilege::Temporary => "TEMPORARY",
            Privilege::References => "REFERENCES",
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of object a privilege is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A database.
    Database,
    /// A schema.
    Schema,
    /// A table.
    Table,
    /// A sequence.
    Sequence,
    /// A function.
    Function,
    /// A view.
    View,
    /// A type (an enum type of a `#[derive(EvolveEnum)]`).
    Type,
}

impl ObjectKind {
    /// The keyword of `GRANT ... ON <kind>` and `ALTER <kind>`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Database => "DATABASE",
            ObjectKind::Schema => "SCHEMA",
            ObjectKind::Table => "TABLE",
            ObjectKind::Sequence => "SEQUENCE",
            ObjectKind::Function => "FUNCTION",
            ObjectKind::View => "VIEW",
            ObjectKind::Type => "TYPE",
        }
    }
}

/// One privilege the role lacks: on what, what for, and the statement that grants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingPrivilege {
    /// The privilege.
    pub privilege: Privilege,
    /// The kind of object.
    pub kind: ObjectKind,
    /// The object, quoted as in SQL (`"public"."users"`, `"pgevolve"`, a function with its
    /// parentheses).
    pub object: String,
    /// What pgevolve does with it.
    pub needed_for: String,
    /// The statement that gives it, to run as the object's owner or a superuser: a `GRANT`, an
    /// `ALTER ... OWNER TO`, or `CREATE SCHEMA ... AUTHORIZATION` for a schema the role may
    /// not create.
    pub grant: String,
}

impl fmt::Display for MissingPrivilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The statement first, the reason as an SQL comment: a list of these can be pasted
        // into psql as it is.
        write!(
            f,
            "{}  -- {} on {} {}: {}",
            self.grant,
            self.privilege,
            self.kind.as_str().to_lowercase(),
            self.object,
            self.needed_for
        )
    }
}

/// Who the session is.
struct Session {
    role: String,
    database: String,
    create_on_database: bool,
    temporary_on_database: bool,
}

impl Session {
    async fn read(conn: &mut PgConnection) -> sqlx::Result<Session> {
        let row = sqlx::query(
            "SELECT current_user::text AS role, current_database()::text AS database, \
                    has_database_privilege(current_database(), 'CREATE') AS create_on_database, \
                    has_database_privilege(current_database(), 'TEMPORARY') AS temporary_on_database",
        )
        .fetch_one(conn)
        .await?;
        Ok(Session {
            role: row.try_get("role")?,
            database: row.try_get("database")?,
            create_on_database: row.try_get("create_on_database")?,
            temporary_on_database: row.try_get("temporary_on_database")?,
        })
    }

    fn role(&self) -> Ident<'_> {
        Ident(&self.role)
    }

    fn temporary(&self) -> Option<MissingPrivilege> {
        (!self.temporary_on_database).then(|| MissingPrivilege {
            privilege: Privilege::Temporary,
            kind: ObjectKind::Database,
            object: Ident(&self.database).to_string(),
            needed_for:
                "the checks at boot compare index and constraint definitions on empty temporary tables"
                    .into(),
            grant: format!(
                "GRANT TEMPORARY ON DATABASE {} TO {};",
                Ident(&self.database),
                self.role()
            ),
        })
    }

    /// A schema the role needs and may not create: the narrowest fix is an administrator
    /// creating it for the role.
    fn schema_to_create(&self, schema: &str, needed_for: String) -> MissingPrivilege {
        MissingPrivilege {
            privilege: Privilege::Create,
            kind: ObjectKind::Database,
            object: Ident(&self.database).to_string(),
            needed_for: format!(
                "{needed_for}: schema {} does not exist and this role may not create schemas; \
                 create it for the role, or let the role create it: GRANT CREATE ON DATABASE {} TO {}",
                Ident(schema),
                Ident(&self.database),
                self.role()
            ),
            grant: format!(
                "CREATE SCHEMA {} AUTHORIZATION {};",
                Ident(schema),
                self.role()
            ),
        }
    }
}

/// Where one step stands, as far as the check is concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepWork<'a> {
    pub step: &'a PlannedStep,
    /// The last phase it completed.
    pub done: Phase,
    /// Helpers to add again, or an interrupted abort to finish.
    pub repair: bool,
}

impl<'a> From<&'a Resolved> for StepWork<'a> {
    fn from(r: &'a Resolved) -> StepWork<'a> {
        StepWork {
            step: &r.step,
            done: r.done,
            repair: r.expand_incomplete || r.abort_leftovers,
        }
    }
}

/// What the check looks at: every step of the plan with where it stands, and the state
/// store's shape.
pub(crate) struct Needs<'a> {
    /// The state schema.
    pub state_schema: &'a str,
    /// Whether the state tables are of this version (no bootstrap to run).
    pub state_current: bool,
    /// Every step of every model.
    pub steps: Vec<StepWork<'a>>,
}

/// Every privilege the plan needs, checked before the models are resolved against the catalog
/// (resolving reads the state store and probes the tables, which needs some of them): where
/// each step stands is taken from the state store when the role may read it, and is otherwise
/// assumed to be the start. The role's name and what it lacks.
pub(crate) async fn check_before_resolve(
    conn: &mut PgConnection,
    state_schema: &str,
    plans: &[PlannedStep],
) -> sqlx::Result<(String, Vec<MissingPrivilege>)> {
    let (readable, state_current): (bool, bool) = sqlx::query_as(
        "SELECT coalesce(has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'), false), \
                coalesce(obj_description(c.oid, 'pg_class') = $2, false) \
           FROM (SELECT 1) AS one \
           LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $1 \
           LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = 'steps'",
    )
    .bind(state_schema)
    .bind(crate::state::VERSION)
    .fetch_one(&mut *conn)
    .await?;
    let recorded = if readable {
        crate::state::StateStore::new(state_schema)
            .steps()
            .rows(conn)
            .await?
    } else {
        Default::default()
    };
    let needs = Needs {
        state_schema,
        state_current,
        steps: plans
            .iter()
            .map(|step| StepWork {
                step,
                done: recorded.get(&step.id).map_or(Phase::Pending, |r| r.phase),
                repair: false,
            })
            .collect(),
    };
    check(conn, &needs).await
}

/// Every privilege the plan needs that the session's role lacks, with the role's name; empty
/// when it has them all. Reads the catalog only.
pub(crate) async fn check(
    conn: &mut PgConnection,
    needs: &Needs<'_>,
) -> sqlx::Result<(String, Vec<MissingPrivilege>)> {
    let session = Session::read(conn).await?;
    let mut missing: Vec<MissingPrivilege> = session.temporary().into_iter().collect();
    state_store(conn, &session, needs, &mut missing).await?;
    tables(conn, &session, needs, &mut missing).await?;
    enum_types(conn, &session, needs, &mut missing).await?;
    Ok((session.role, missing))
}

/// The state schema and its tables.
async fn state_store(
    conn: &mut PgConnection,
    session: &Session,
    needs: &Needs<'_>,
    missing: &mut Vec<MissingPrivilege>,
) -> sqlx::Result<()> {
    let schema = needs.state_schema;
    let found = sqlx::query(
        "SELECT has_schema_privilege(oid, 'USAGE') AS usage, has_schema_privilege(oid, 'CREATE') AS create \
         FROM pg_catalog.pg_namespace WHERE nspname = $1",
    )
    .bind(schema)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(found) = found else {
        if !session.create_on_database {
            missing.push(session.schema_to_create(
                schema,
                "pgevolve records every step's phase in its state schema".into(),
            ));
        }
        return Ok(());
    };
    let (usage, create): (bool, bool) = (found.try_get("usage")?, found.try_get("create")?);
    let mut on_schema = Vec::new();
    if !usage {
        on_schema.push(Privilege::Usage);
    }
    if !create && !needs.state_current {
        on_schema.push(Privilege::Create);
    }
    if !on_schema.is_empty() {
        missing.push(grant_on_schema(
            session,
            schema,
            &on_schema,
            if needs.state_current {
                "pgevolve reads and writes its state tables there".into()
            } else {
                "pgevolve creates or upgrades its state tables there".into()
            },
        ));
    }
    let relations = sqlx::query(
        "SELECT c.relname::text AS name, c.relkind::text AS kind, pg_has_role(c.relowner, 'USAGE') AS owned, \
                pg_get_userbyid(c.relowner)::text AS owner, \
                CASE WHEN c.relkind = 'S' THEN ARRAY[has_sequence_privilege(c.oid, 'USAGE')] \
                     ELSE ARRAY[has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'INSERT'), \
                                has_table_privilege(c.oid, 'UPDATE'), has_table_privilege(c.oid, 'DELETE')] END AS rights \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'S') ORDER BY c.relkind DESC, c.relname",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    for row in relations {
        let (name, kind, owned, owner, rights): (String, String, bool, String, Vec<bool>) = (
            row.try_get("name")?,
            row.try_get("kind")?,
            row.try_get("owned")?,
            row.try_get("owner")?,
            row.try_get("rights")?,
        );
        let object = Qualified(schema, &name).to_string();
        if kind == "S" {
            // Owned with its table when bootstrap needs ownership (ALTER TABLE ... OWNER TO
            // moves the sequences the table owns).
            if needs.state_current && !owned && rights.first() == Some(&false) {
                missing.push(MissingPrivilege {
                    privilege: Privilege::Usage,
                    kind: ObjectKind::Sequence,
                    needed_for: "pgevolve appends to its journal, whose ids come from it".into(),
                    grant: format!("GRANT USAGE ON SEQUENCE {object} TO {};", session.role()),
                    object,
                });
            }
            continue;
        }
        if owned {
            continue;
        }
        if !needs.state_current {
            missing.push(MissingPrivilege {
                privilege: Privilege::Ownership,
                kind: ObjectKind::Table,
                needed_for: format!(
                    "pgevolve upgrades its state tables to this version (owner now: {})",
                    Ident(&owner)
                ),
                grant: format!("ALTER TABLE {object} OWNER TO {};", session.role()),
                object,
            });
            continue;
        }
        let lacking: Vec<&str> = ["SELECT", "INSERT", "UPDATE", "DELETE"]
            .into_iter()
            .zip(&rights)
            .filter(|(_, has)| !**has)
            .map(|(p, _)| p)
            .collect();
        if let Some(first) = lacking.first() {
            missing.push(MissingPrivilege {
                privilege: match *first {
                    "SELECT" => Privilege::Select,
                    "INSERT" => Privilege::Insert,
                    "UPDATE" => Privilege::Update,
                    _ => Privilege::Delete,
                },
                kind: ObjectKind::Table,
                needed_for: format!(
                    "pgevolve reads and writes its state there (lacking: {})",
                    lacking.join(", ")
                ),
                grant: format!(
                    "GRANT {} ON TABLE {object} TO {};",
                    lacking.join(", "),
                    session.role()
                ),
                object,
            });
        }
    }
    Ok(())
}

/// `GRANT <privileges> ON SCHEMA`.
fn grant_on_schema(
    session: &Session,
    schema: &str,
    privileges: &[Privilege],
    needed_for: String,
) -> MissingPrivilege {
    let list: Vec<&str> = privileges.iter().map(|p| p.as_str()).collect();
    MissingPrivilege {
        privilege: privileges[0],
        kind: ObjectKind::Schema,
        object: Ident(schema).to_string(),
        needed_for,
        grant: format!(
            "GRANT {} ON SCHEMA {} TO {};",
            list.join(", "),
            Ident(schema),
            session.role()
        ),
    }
}

/// Whether a step has anything left to run: not at its last phase and not aborted, an
/// interrupted abort, or helpers to add.
/// Creating a table that exists is no work: the step is judged on the catalog.
/// An enum type's steps alter the type, not the table: see [`enum_types`].
fn has_work(w: &StepWork<'_>) -> bool {
    !w.step.kind.creates_table()
        && enum_of(&w.step.kind).is_none()
        && (w.repair || !(w.done == Phase::Aborted || w.done == w.step.kind.last_phase()))
}

/// Whether a phase still to run creates a function or a view in the table's schema.
fn creates_in_schema(w: &StepWork<'_>) -> bool {
    w.step
        .phases
        .iter()
        .filter(|p| p.phase > w.done || w.repair)
        .flat_map(|p| &p.statements)
        .any(|s| {
            s.sql.starts_with("CREATE OR REPLACE FUNCTION")
                || s.sql.starts_with("CREATE OR REPLACE VIEW")
                // A table rename's view, created in a block (its options depend on the server).
                || s.sql.contains("EXECUTE 'CREATE VIEW ")
        })
}

/// What the check found about one model's table and its schema.
struct LiveTable {
    exists: bool,
    select: bool,
    owned: bool,
    owner: String,
    schema_exists: bool,
    schema_usage: bool,
    schema_create: bool,
}

async fn read_table(conn: &mut PgConnection, schema: &str, table: &str) -> sqlx::Result<LiveTable> {
    let row = sqlx::query(
        "SELECT c.oid IS NOT NULL AS exists, coalesce(has_table_privilege(c.oid, 'SELECT'), false) AS select, \
                coalesce(pg_has_role(c.relowner, 'USAGE'), false) AS owned, \
                coalesce(pg_get_userbyid(c.relowner)::text, '') AS owner, \
                n.oid IS NOT NULL AS schema_exists, \
                coalesce(has_schema_privilege(n.oid, 'USAGE'), false) AS schema_usage, \
                coalesce(has_schema_privilege(n.oid, 'CREATE'), false) AS schema_create \
           FROM (SELECT 1) AS one \
           LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $1 \
           LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = $2 \
                                           AND c.relkind IN ('r', 'p')",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(conn)
    .await?;
    Ok(LiveTable {
        exists: row.try_get("exists")?,
        select: row.try_get("select")?,
        owned: row.try_get("owned")?,
        owner: row.try_get("owner")?,
        schema_exists: row.try_get("schema_exists")?,
        schema_usage: row.try_get("schema_usage")?,
        schema_create: row.try_get("schema_create")?,
    })
}

/// Every model's table, the schemas pgevolve creates in, and the tables its foreign keys
/// reference.
async fn tables(
    conn: &mut PgConnection,
    session: &Session,
    needs: &Needs<'_>,
    missing: &mut Vec<MissingPrivilege>,
) -> sqlx::Result<()> {
    let mut models: Vec<&ModelSpec> = Vec::new();
    for w in &needs.steps {
        if !models
            .iter()
            .any(|m| m.schema == w.step.model.schema && m.table == w.step.model.table)
        {
            models.push(&w.step.model);
        }
    }
    // Schemas already reported, so one grant covers every table in them.
    let mut schemas_reported: Vec<&str> = Vec::new();
    let mut references: Vec<(&str, &str, String)> = Vec::new();
    for model in models {
        let steps: Vec<&StepWork<'_>> = needs
            .steps
            .iter()
            .filter(|w| w.step.model.schema == model.schema && w.step.model.table == model.table)
            .collect();
        let mut table = Qualified(model.schema, model.table).to_string();
        let mut live = read_table(conn, model.schema, model.table).await?;
        // A table still under its old name: the rename alters that one.
        if let Some(from) = model.renamed_from
            && !live.exists
        {
            let old = read_table(conn, model.schema, from).await?;
            if old.exists {
                (table, live) = (Qualified(model.schema, from).to_string(), old);
            }
        }
        if !live.exists {
            let needed_for = format!("pgevolve creates table {table} there");
            if !live.schema_exists {
                if !session.create_on_database && !schemas_reported.contains(&model.schema) {
                    schemas_reported.push(model.schema);
                    missing.push(session.schema_to_create(model.schema, needed_for));
                }
            } else if (!live.schema_usage || !live.schema_create)
                && !schemas_reported.contains(&model.schema)
            {
                schemas_reported.push(model.schema);
                let mut privileges = Vec::new();
                if !live.schema_usage {
                    privileges.push(Privilege::Usage);
                }
                if !live.schema_create {
                    privileges.push(Privilege::Create);
                }
                missing.push(grant_on_schema(
                    session,
                    model.schema,
                    &privileges,
                    needed_for,
                ));
            }
            for column in model.columns {
                if let Some(fk) = &column.references {
                    references.push((
                        fk.schema.unwrap_or(model.schema),
                        fk.table,
                        format!(
                            "the foreign key of {table}.{} points to it",
                            Ident(column.name)
                        ),
                    ));
                }
            }
            continue;
        }
        let working: Vec<&&StepWork<'_>> = steps.iter().filter(|w| has_work(w)).collect();
        if working.is_empty() {
            // Resolving it still reads it (the checks compare definitions on a temporary copy).
            if !live.select {
                missing.push(MissingPrivilege {
                    privilege: Privilege::Select,
                    kind: ObjectKind::Table,
                    needed_for: "the checks at boot read its definition into a temporary copy"
                        .into(),
                    grant: format!("GRANT SELECT ON TABLE {table} TO {};", session.role()),
                    object: table.clone(),
                });
            }
            continue;
        }
        if !live.owned {
            missing.push(MissingPrivilege {
                privilege: Privilege::Ownership,
                kind: ObjectKind::Table,
                needed_for: format!(
                    "pgevolve alters it ({}; owner now: {})",
                    working
                        .iter()
                        .map(|w| w.step.describe())
                        .collect::<Vec<_>>()
                        .join("; "),
                    Ident(&live.owner)
                ),
                grant: format!("ALTER TABLE {table} OWNER TO {};", session.role()),
                object: table.clone(),
            });
        }
        let creates = working.iter().any(|w| creates_in_schema(w));
        if (!live.schema_usage || (creates && !live.schema_create))
            && !schemas_reported.contains(&model.schema)
        {
            schemas_reported.push(model.schema);
            let mut privileges = Vec::new();
            if !live.schema_usage {
                privileges.push(Privilege::Usage);
            }
            if creates && !live.schema_create {
                privileges.push(Privilege::Create);
            }
            missing.push(grant_on_schema(
                session,
                model.schema,
                &privileges,
                if creates {
                    format!("pgevolve creates helper functions and views for {table} there")
                } else {
                    format!("pgevolve alters {table}, which is there")
                },
            ));
        }
        for w in &working {
            if w.done < Phase::Expand
                && let Some((schema, referenced)) = w.step.kind.referenced_table(model)
            {
                references.push((
                    schema,
                    referenced,
                    format!("needed to {}", w.step.describe()),
                ));
            }
        }
        helpers(conn, session, model, missing).await?;
    }
    for (schema, table, needed_for) in references {
        let found: Option<bool> = sqlx::query_scalar(
            "SELECT has_table_privilege(c.oid, 'REFERENCES') FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(schema)
        .bind(table)
        .fetch_optional(&mut *conn)
        .await?;
        // A table that does not exist yet is created by an earlier model, owned by this role.
        if found == Some(false) {
            let object = Qualified(schema, table).to_string();
            if missing
                .iter()
                .any(|m| m.privilege == Privilege::References && m.object == object)
            {
                continue;
            }
            missing.push(MissingPrivilege {
                privilege: Privilege::References,
                kind: ObjectKind::Table,
                needed_for,
                grant: format!("GRANT REFERENCES ON TABLE {object} TO {};", session.role()),
                object,
            });
        }
    }
    Ok(())
}

/// pgevolve's helper functions (of the triggers on the table) and compatibility views (over
/// the table) that another role owns: a later phase replaces or drops them.
async fn helpers(
    conn: &mut PgConnection,
    session: &Session,
    model: &ModelSpec,
    missing: &mut Vec<MissingPrivilege>,
) -> sqlx::Result<()> {
    let rows = sqlx::query(
        "SELECT 'FUNCTION' AS kind, n.nspname::text AS schema, p.proname::text AS name, \
                pg_get_userbyid(p.proowner)::text AS owner \
           FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
          WHERE t.tgrelid = to_regclass($1) AND p.proname LIKE 'pgevolve\\_%' \
            AND NOT pg_has_role(p.proowner, 'USAGE') \
         UNION \
         SELECT 'VIEW', n.nspname::text, v.relname::text, pg_get_userbyid(v.relowner)::text \
           FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid \
           JOIN pg_catalog.pg_class v ON v.oid = w.ev_class \
           JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace \
          WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refobjid = to_regclass($1) \
            AND v.relkind = 'v' AND v.relname LIKE 'pgevolve\\_view\\_%' \
            AND NOT pg_has_role(v.relowner, 'USAGE') \
          ORDER BY 1, 2, 3",
    )
    .bind(Qualified(model.schema, model.table).to_string())
    .fetch_all(conn)
    .await?;
    for row in rows {
        let (kind, schema, name, owner): (String, String, String, String) = (
            row.try_get("kind")?,
            row.try_get("schema")?,
            row.try_get("name")?,
            row.try_get("owner")?,
        );
        let (kind, object, what) = if kind == "FUNCTION" {
            (
                ObjectKind::Function,
                format!("{}()", Qualified(&schema, &name)),
                "helper function",
            )
        } else {
            (
                ObjectKind::View,
                Qualified(&schema, &name).to_string(),
                "compatibility view",
            )
        };
        missing.push(MissingPrivilege {
            privilege: Privilege::Ownership,
            kind,
            needed_for: format!(
                "pgevolve's {what} for {}, created by {}, is replaced or dropped by a later phase",
                Qualified(model.schema, model.table),
                Ident(&owner)
            ),
            grant: format!(
                "ALTER {} {object} OWNER TO {};",
                kind.as_str(),
                session.role()
            ),
            object,
        });
    }
    Ok(())
}

/// The enum type a step creates or changes.
fn enum_of(kind: &StepKind) -> Option<&'static EnumSpec> {
    match kind {
        StepKind::CreateEnum(e)
        | StepKind::AddEnumValue(e, _)
        | StepKind::RenameEnumValue(e, ..) => Some(e),
        _ => None,
    }
}

/// The enum types the models use: `CREATE` where one is missing, ownership where a label is
/// to be added or renamed (`ALTER TYPE` needs it), judged on the catalog.
async fn enum_types(
    conn: &mut PgConnection,
    session: &Session,
    needs: &Needs<'_>,
    missing: &mut Vec<MissingPrivilege>,
) -> sqlx::Result<()> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for spec in needs.steps.iter().filter_map(|w| enum_of(&w.step.kind)) {
        if seen.contains(&(spec.schema, spec.name)) {
            continue;
        }
        seen.push((spec.schema, spec.name));
        let object = spec.qualified_name();
        let row = sqlx::query(
            "SELECT t.oid IS NOT NULL AS exists, coalesce(pg_has_role(t.typowner, 'USAGE'), false) AS owned, \
                    coalesce(pg_get_userbyid(t.typowner)::text, '') AS owner, \
                    ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid) AS labels, \
                    n.oid IS NOT NULL AS schema_exists, \
                    coalesce(has_schema_privilege(n.oid, 'USAGE'), false) AS schema_usage, \
                    coalesce(has_schema_privilege(n.oid, 'CREATE'), false) AS schema_create \
               FROM (SELECT 1) AS one \
               LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $1 \
               LEFT JOIN pg_catalog.pg_type t ON t.typnamespace = n.oid AND t.typname = $2",
        )
        .bind(spec.schema)
        .bind(spec.name)
        .fetch_one(&mut *conn)
        .await?;
        let (exists, owned, owner, labels): (bool, bool, String, Vec<String>) = (
            row.try_get("exists")?,
            row.try_get("owned")?,
            row.try_get("owner")?,
            row.try_get("labels")?,
        );
        if !exists {
            let needed_for = format!("pgevolve creates enum type {object} there");
            let wanted = if !row.try_get::<bool, _>("schema_exists")? {
                (!session.create_on_database)
                    .then(|| session.schema_to_create(spec.schema, needed_for))
            } else {
                let mut privileges = Vec::new();
                if !row.try_get::<bool, _>("schema_usage")? {
                    privileges.push(Privilege::Usage);
                }
                if !row.try_get::<bool, _>("schema_create")? {
                    privileges.push(Privilege::Create);
                }
                (!privileges.is_empty())
                    .then(|| grant_on_schema(session, spec.schema, &privileges, needed_for))
            };
            // A table created in the same schema asked for the same grant already.
            if let Some(wanted) = wanted
                && !missing.iter().any(|m| m.grant == wanted.grant)
            {
                missing.push(wanted);
            }
            continue;
        }
        if owned {
            continue;
        }
        let has = |label: &str| labels.iter().any(|l| l == label);
        let mut changes: Vec<String> = Vec::new();
        for label in spec.labels {
            match spec.renamed_from(label) {
                Some(old) => {
                    let aborted = needs.steps.iter().any(|w| {
                        w.done == Phase::Aborted
                            && matches!(w.step.kind, StepKind::RenameEnumValue(e, new, _)
                                if e.schema == spec.schema && e.name == spec.name && new == *label)
                    });
                    if has(old) && !has(label) && !aborted {
                        changes.push(format!(
                            "renames value {} to {} at contract",
                            Literal(old),
                            Literal(label)
                        ));
                    }
                }
                None if !has(label) => {
                    changes.push(format!("adds value {}", Literal(label)));
                }
                None => {}
            }
        }
        if !changes.is_empty() {
            missing.push(MissingPrivilege {
                privilege: Privilege::Ownership,
                kind: ObjectKind::Type,
                needed_for: format!(
                    "pgevolve alters it ({}; owner now: {})",
                    changes.join("; "),
                    Ident(&owner)
                ),
                grant: format!("ALTER TYPE {object} OWNER TO {};", session.role()),
                object,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_privilege_reads_as_its_statement_then_the_reason_as_a_comment() {
        let missing = MissingPrivilege {
            privilege: Privilege::Ownership,
            kind: ObjectKind::Table,
            object: Qualified("public", "my \"users\"").to_string(),
            needed_for: "pgevolve alters it".into(),
            grant: format!(
                "ALTER TABLE {} OWNER TO {};",
                Qualified("public", "my \"users\""),
                Ident("app")
            ),
        };
        assert_eq!(
            missing.to_string(),
            "ALTER TABLE \"public\".\"my \"\"users\"\"\" OWNER TO \"app\";  \
             -- ownership on table \"public\".\"my \"\"users\"\"\": pgevolve alters it"
        );
    }
}
