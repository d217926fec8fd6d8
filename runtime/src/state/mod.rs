//! The state store: pgevolve's own schema, where every step's phase, checkpoint and counters live,
//! with a journal of events. Any instance and the operator read progress back from here.

mod event;
pub(crate) mod health_pauses;
pub(crate) mod instances;
mod journal;
pub(crate) mod plan_record;
pub(crate) mod requests;
mod steps;

pub(crate) use event::Event;
pub(crate) use health_pauses::HealthPauses;
pub(crate) use instances::Instances;
pub(crate) use journal::Journal;
pub use journal::JournalEntry;
pub(crate) use plan_record::PlanRecord;
pub use requests::{Action, PauseRow, RequestRow, Requests};
pub use steps::StepStatus;
pub(crate) use steps::{StepRow, Steps};

use sqlx::AssertSqlSafe;
use sqlx::PgConnection;

use crate::ident::Ident;

/// Marks state tables created by this version (a comment on the steps table). Part of the build
/// key of the boot fast path (`evolver::fast_boot`), so a store of another version never takes
/// a fast path recorded by this one.
pub(crate) const VERSION: &str = "pgevolve state 5";

/// Creates `schema` when there is none, as a `DO` block: `CREATE SCHEMA IF NOT EXISTS` checks
/// `CREATE` on the database before it looks for the schema, so it fails for a role that may not
/// create schemas even when an administrator has created the state schema for it.
pub(crate) fn create_schema_if_missing_sql(schema: &str) -> String {
    format!(
        "DO $pgevolve$ BEGIN \
         IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = {}) THEN \
         CREATE SCHEMA {}; \
         END IF; END $pgevolve$",
        crate::sql::lit(schema),
        Ident(schema)
    )
}

/// What [`StateStore::exists`] found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateShape {
    /// The steps table exists.
    pub exists: bool,
    /// Every table of this version exists: nothing to bootstrap.
    pub current: bool,
}

/// The state schema and the statements that create it.
#[derive(Debug, Clone)]
pub(crate) struct StateStore {
    pub schema: String,
}

impl StateStore {
    pub fn new(schema: &str) -> StateStore {
        StateStore {
            schema: schema.to_string(),
        }
    }

    pub fn steps(&self) -> Steps<'_> {
        Steps { store: self }
    }

    pub fn health_pauses(&self) -> HealthPauses<'_> {
        HealthPauses { store: self }
    }

    pub fn journal(&self) -> Journal<'_> {
        Journal { store: self }
    }

    pub fn table(&self, name: &str) -> String {
        format!("{}.{}", Ident(&self.schema), Ident(name))
    }

    /// Whether the state tables exist, and whether they are of this version (then boot skips
    /// [`StateStore::bootstrap`]). Read-only: used before anything is created.
    pub async fn exists(&self, conn: &mut PgConnection) -> sqlx::Result<StateShape> {
        let (exists, current): (bool, bool) = sqlx::query_as(
            "SELECT to_regclass($1) IS NOT NULL, \
             coalesce(obj_description(to_regclass($1), 'pg_class') = $2, false)",
        )
        .bind(self.table("steps"))
        .bind(VERSION)
        .fetch_one(conn)
        .await?;
        Ok(StateShape { exists, current })
    }

    /// Creates the schema and tables when missing. Runs only under the leader lock, so two
    /// instances never race on `CREATE ... IF NOT EXISTS`.
    pub async fn bootstrap(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        let statements = [
            create_schema_if_missing_sql(&self.schema),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    id text PRIMARY KEY,
                    model text NOT NULL,
                    table_schema text NOT NULL,
                    table_name text NOT NULL,
                    column_name text,
                    kind text NOT NULL,
                    description text NOT NULL,
                    phase text NOT NULL,
                    checkpoint text[],
                    upper_bound text[],
                    rows_done bigint NOT NULL DEFAULT 0,
                    rows_estimated bigint,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now()
                )",
                self.table("steps")
            ),
            // The index or constraint an index or constraint step creates. Added after the first
            // release, hence not in the CREATE TABLE above; checked first, so that a boot does
            // not take an ACCESS EXCLUSIVE lock on the steps table when there is nothing to add.
            format!(
                "DO $pgevolve$ BEGIN \
                 IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {}::regclass \
                 AND attname = 'object_name' AND NOT attisdropped) THEN \
                 ALTER TABLE {} ADD COLUMN object_name text; \
                 END IF; END $pgevolve$",
                crate::sql::lit(&self.table("steps")),
                self.table("steps")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    id bigserial PRIMARY KEY,
                    at timestamptz NOT NULL DEFAULT clock_timestamp(),
                    step_id text,
                    event text NOT NULL,
                    detail text,
                    instance text NOT NULL
                )",
                self.table("journal")
            ),
            // Builds whose every step was terminal, with a fingerprint of the catalog and the
            // recorded phases at that moment: the boot fast path (see `evolver::fast_boot`).
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    build text PRIMARY KEY,
                    fingerprint text NOT NULL,
                    verified_at timestamptz NOT NULL DEFAULT now(),
                    instance text NOT NULL
                )",
                self.table("verified_builds")
            ),
        ];
        let statements = statements
            .into_iter()
            .chain(Instances::new(&self.schema).bootstrap_sql())
            .chain(Requests::new(&self.schema).bootstrap_sql())
            .chain(PlanRecord { store: self }.bootstrap_sql())
            .chain(HealthPauses { store: self }.bootstrap_sql())
            .chain([format!(
                "COMMENT ON TABLE {} IS {}",
                self.table("steps"),
                crate::sql::lit(VERSION)
            )]);
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for sql in statements {
            sqlx::query(AssertSqlSafe(&*sql)).execute(&mut *tx).await?;
        }
        tx.commit().await
    }
}
