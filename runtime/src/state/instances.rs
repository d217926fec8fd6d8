//! Live instances and what each has acknowledged: the tables `instances` and `acks` of the state
//! schema, and every statement the coordinator and the leader run on them.
//!
//! ```text
//! instances(id text PRIMARY KEY, started_at, heartbeat_at timestamptz, steps text[])
//! acks(instance_id, step_id, phase text, at timestamptz, PRIMARY KEY (instance_id, step_id, phase))
//! ```
//!
//! `instances.steps` lists the step ids the instance's build knows, so a leader waiting for
//! acknowledgements can tell an instance that is slow from one running a build that will never
//! acknowledge the step. `acks` keeps one row per phase an instance acknowledged (a short
//! history: steps × phases per instance); rows go with their instance when it stops or is
//! pruned. Every time is PostgreSQL's (`now()`), so instances with skewed clocks still agree.

use std::time::Duration;

use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::ident::Qualified;
use crate::sql::lit;
use crate::step::{Phase, StepId, advisory_key};

/// SQLSTATE `undefined_table` and `invalid_schema_name`: the state tables are not created yet.
const MISSING: [&str; 2] = ["42P01", "3F000"];

/// Whether an error says that a state table (or the state schema) does not exist yet.
pub(crate) fn is_missing_table(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| MISSING.contains(&&*c))
}

/// The `LISTEN`/`NOTIFY` channel of a state schema: `pgevolve_<schema>`, or `pgevolve_` and a
/// hash of the schema when that would exceed PostgreSQL's 63-byte identifier limit (which
/// `pg_notify` enforces).
pub(crate) fn channel(schema: &str) -> String {
    let plain = format!("pgevolve_{schema}");
    if plain.len() <= pgevolve_naming::MAX_IDENTIFIER_BYTES {
        plain
    } else {
        format!("pgevolve_{:016x}", advisory_key(schema) as u64)
    }
}

/// One instance as a leader waiting for acknowledgements sees it.
#[derive(Debug, Clone)]
pub(crate) struct InstanceRow {
    pub id: String,
    /// Heartbeat within the timeout.
    pub fresh: bool,
    /// Time since the last heartbeat, by the database's clock.
    pub heartbeat_age: Duration,
    /// The instance's build knows the step.
    pub knows_step: bool,
    /// The phases of the step it acknowledged.
    pub acked: Vec<Phase>,
}

/// The statements on `instances` and `acks` of one state schema.
#[derive(Debug, Clone)]
pub(crate) struct Instances {
    schema: String,
}

impl Instances {
    pub fn new(schema: &str) -> Instances {
        Instances {
            schema: schema.to_string(),
        }
    }

    fn table(&self, name: &str) -> String {
        Qualified(&self.schema, name).to_string()
    }

    /// `CREATE ... IF NOT EXISTS` of the schema, `instances` and `acks`. Run them under the
    /// leader lock (concurrent `CREATE TABLE IF NOT EXISTS` can fail with a unique violation).
    pub fn bootstrap_sql(&self) -> Vec<String> {
        vec![
            super::create_schema_if_missing_sql(&self.schema),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    id text PRIMARY KEY,
                    started_at timestamptz NOT NULL DEFAULT now(),
                    heartbeat_at timestamptz NOT NULL DEFAULT now(),
                    steps text[] NOT NULL DEFAULT '{{}}'
                )",
                self.table("instances")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    instance_id text NOT NULL,
                    step_id text NOT NULL,
                    phase text NOT NULL,
                    at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (instance_id, step_id, phase)
                )",
                self.table("acks")
            ),
        ]
    }

    /// Registers the instance or refreshes its heartbeat. Returns whether the row was created
    /// (first registration, or the row was pruned or deleted meanwhile: acknowledgements must
    /// then be recorded again).
    pub async fn heartbeat(
        &self,
        conn: &mut PgConnection,
        id: &str,
        steps: &[String],
    ) -> sqlx::Result<bool> {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {} AS i (id, steps) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), steps = EXCLUDED.steps \
             RETURNING (xmax = 0)",
            self.table("instances")
        )))
        .bind(id)
        .bind(steps)
        .fetch_one(conn)
        .await
    }

    /// The upsert of [`Instances::heartbeat`] as one statement with its values written as
    /// literals, for a message sent with the simple protocol (the boot fast path, which must
    /// register the instance in the same round trip as it checks the catalog).
    pub fn register_sql(&self, id: &str, steps: &[StepId]) -> String {
        let steps: Vec<String> = steps.iter().map(|s| lit(s.as_str())).collect();
        format!(
            "INSERT INTO {} (id, steps) VALUES ({}, ARRAY[{}]::text[]) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), steps = EXCLUDED.steps",
            self.table("instances"),
            lit(id),
            steps.join(", ")
        )
    }

    /// A `DO` block that runs `sql` and does nothing when a state table (or the state schema)
    /// does not exist, instead of failing.
    pub fn unless_missing(sql: &str) -> String {
        format!(
            "DO $pgevolve$ BEGIN {sql}; \
             EXCEPTION WHEN undefined_table OR invalid_schema_name THEN NULL; END $pgevolve$"
        )
    }

    /// [`Instances::deregister`] as one statement with literals, which does nothing when the
    /// state tables do not exist.
    pub fn deregister_sql(&self, id: &str) -> String {
        Instances::unless_missing(&format!(
            "DELETE FROM {} WHERE instance_id = {id}; DELETE FROM {} WHERE id = {id}",
            self.table("acks"),
            self.table("instances"),
            id = lit(id),
        ))
    }

    /// Removes the instance and its acknowledgements (a clean stop).
    pub async fn deregister(&self, conn: &mut PgConnection, id: &str) -> sqlx::Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "WITH acks AS (DELETE FROM {} WHERE instance_id = $1) DELETE FROM {} WHERE id = $1",
            self.table("acks"),
            self.table("instances")
        )))
        .bind(id)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Deletes instances whose last heartbeat is older than `older_than`, with their
    /// acknowledgements and any acknowledgement left without an instance. Returns the instances
    /// deleted.
    pub async fn prune(&self, conn: &mut PgConnection, older_than: Duration) -> sqlx::Result<u64> {
        let gone: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "WITH gone AS (
                 DELETE FROM {instances} WHERE heartbeat_at < now() - make_interval(secs => $1) RETURNING id
             ), acks AS (
                 DELETE FROM {acks} a WHERE a.instance_id IN (SELECT id FROM gone)
                    OR NOT EXISTS (SELECT FROM {instances} i WHERE i.id = a.instance_id)
             )
             SELECT count(*) FROM gone",
            instances = self.table("instances"),
            acks = self.table("acks"),
        )))
        .bind(older_than.as_secs_f64())
        .fetch_one(conn)
        .await?;
        Ok(gone as u64)
    }

    /// The recorded phase of each of these steps that has a row in `steps`.
    pub async fn phases(
        &self,
        conn: &mut PgConnection,
        steps: &[String],
    ) -> sqlx::Result<Vec<(String, String)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, phase FROM {} WHERE id = ANY($1)",
            self.table("steps")
        )))
        .bind(steps)
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("phase")?)))
            .collect()
    }

    /// Records that the instance holds these phases (idempotent).
    pub async fn ack(
        &self,
        conn: &mut PgConnection,
        id: &str,
        acks: &[(StepId, Phase)],
    ) -> sqlx::Result<()> {
        let steps: Vec<&str> = acks.iter().map(|(s, _)| s.as_str()).collect();
        let phases: Vec<&str> = acks.iter().map(|(_, p)| p.as_str()).collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (instance_id, step_id, phase) \
             SELECT $1, u.step, u.phase FROM unnest($2::text[], $3::text[]) AS u(step, phase) \
             ON CONFLICT DO NOTHING",
            self.table("acks")
        )))
        .bind(id)
        .bind(steps)
        .bind(phases)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Every registered instance with its freshness and what it acknowledged for `step`.
    pub async fn ack_states(
        &self,
        conn: &mut PgConnection,
        step: &StepId,
        heartbeat_timeout: Duration,
    ) -> sqlx::Result<Vec<InstanceRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT i.id,
                    i.heartbeat_at > now() - make_interval(secs => $2) AS fresh,
                    greatest(extract(epoch FROM now() - i.heartbeat_at), 0)::float8 AS heartbeat_age,
                    $1 = ANY(i.steps) AS knows_step,
                    ARRAY(SELECT a.phase FROM {acks} a WHERE a.instance_id = i.id AND a.step_id = $1) AS acked
             FROM {instances} i
             ORDER BY i.id",
            instances = self.table("instances"),
            acks = self.table("acks"),
        )))
        .bind(step.as_str())
        .bind(heartbeat_timeout.as_secs_f64())
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(InstanceRow {
                    id: r.try_get("id")?,
                    fresh: r.try_get("fresh")?,
                    heartbeat_age: Duration::try_from_secs_f64(r.try_get("heartbeat_age")?)
                        .unwrap_or_default(),
                    knows_step: r.try_get("knows_step")?,
                    acked: r
                        .try_get::<Vec<String>, _>("acked")?
                        .iter()
                        .filter_map(|p| Phase::parse(p))
                        .collect(),
                })
            })
            .collect()
    }

    /// The step's recorded phase and `schema.table`, for messages (each `None` when unknown).
    /// Reads the row as JSON so that a reduced `steps` table (tests) works too.
    pub async fn step_context(
        &self,
        conn: &mut PgConnection,
        step: &StepId,
    ) -> sqlx::Result<(Option<String>, Option<String>)> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT to_jsonb(s) ->> 'phase' AS phase, \
                    (to_jsonb(s) ->> 'table_schema') || '.' || (to_jsonb(s) ->> 'table_name') AS qualified \
             FROM {} s WHERE s.id = $1",
            self.table("steps")
        )))
        .bind(step.as_str())
        .fetch_optional(conn)
        .await?;
        match row {
            Some(r) => Ok((r.try_get("phase")?, r.try_get("qualified")?)),
            None => Ok((None, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_fit_the_identifier_limit() {
        assert_eq!(channel("pgevolve"), "pgevolve_pgevolve");
        let long = channel(&"s".repeat(60));
        assert_eq!(long.len(), 9 + 16);
        assert_eq!(long, channel(&"s".repeat(60)), "stable");
        assert_ne!(long, channel(&"t".repeat(60)));
    }

    #[test]
    fn registration_is_the_heartbeat_upsert_with_literals() {
        let ids = [
            StepId::from_stored("00ff".into()),
            StepId::from_stored("it's".into()),
        ];
        let sql = Instances::new("pgevolve").register_sql("web'1", &ids);
        assert_eq!(
            sql,
            "INSERT INTO \"pgevolve\".\"instances\" (id, steps) VALUES ('web''1', ARRAY['00ff', 'it''s']::text[]) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), steps = EXCLUDED.steps"
        );
        assert!(
            Instances::new("s")
                .register_sql("i", &[])
                .contains("ARRAY[]::text[]")
        );
    }

    #[test]
    fn deregistration_tolerates_a_missing_store() {
        let sql = Instances::new("pgevolve").deregister_sql("web'1");
        assert!(sql.starts_with("DO $pgevolve$ BEGIN DELETE FROM \"pgevolve\".\"acks\" WHERE instance_id = 'web''1'; DELETE FROM \"pgevolve\".\"instances\" WHERE id = 'web''1';"), "{sql}");
        assert!(
            sql.ends_with(
                "EXCEPTION WHEN undefined_table OR invalid_schema_name THEN NULL; END $pgevolve$"
            ),
            "{sql}"
        );
    }

    #[test]
    fn bootstrap_quotes_the_schema() {
        let sql = Instances::new("my \"state\"").bootstrap_sql();
        assert!(
            sql[0].contains("nspname = 'my \"state\"'")
                && sql[0].contains("CREATE SCHEMA \"my \"\"state\"\"\";"),
            "{}",
            sql[0]
        );
        assert!(sql[1].contains("\"my \"\"state\"\"\".\"instances\""));
        assert!(sql[2].contains("\"my \"\"state\"\"\".\"acks\""));
    }
}
