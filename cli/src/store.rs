//! Reading the state store (and the server's views of sessions and locks) with the CLI's own
//! SQL: the application's models are never needed. The tables are those the runtime's
//! bootstrap creates (`runtime/src/state/`); every identifier is quoted, since the state
//! schema's name comes from the user.

use std::collections::HashMap;
use std::time::Duration;

use pgevolve_runtime::__private::{RequestRow, Requests};
use pgevolve_runtime::Phase;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::error::{CliError, Reading};

/// `"name"`, with inner quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connection and the state schema it reads.
pub struct Store {
    pub conn: PgConnection,
    pub schema: String,
}

/// One recorded step.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub model: String,
    pub table: String,
    pub kind: String,
    pub description: String,
    /// The last phase it completed, as recorded.
    pub phase: String,
    pub rows_done: i64,
    pub rows_estimated: Option<i64>,
    /// A backfill started (an upper bound was recorded).
    pub backfill_started: bool,
    pub updated_at: String,
    /// The step's phases in order, from the recorded plan (empty when none was recorded).
    pub phases: Vec<String>,
}

impl Step {
    /// The phase after the recorded one, from the recorded plan; `None` when there is none
    /// (finished, aborted, or no plan recorded).
    pub fn next_phase(&self) -> Option<&str> {
        if self.phase == "aborted" {
            return None;
        }
        match self.phases.iter().position(|p| *p == self.phase) {
            Some(i) => self.phases.get(i + 1).map(String::as_str),
            // Pending: the first phase.
            None if self.phase == "pending" => self.phases.first().map(String::as_str),
            None => None,
        }
    }

    /// A backfill runs now: its bounds are recorded and the backfill phase is next.
    pub fn backfilling(&self) -> bool {
        self.backfill_started && self.next_phase() == Some("backfill")
    }

    /// The next phase waits for an operator (`pgevolve switch` / `contract`) or for
    /// `auto_contract`, not for the background work.
    pub fn waits_for_operator(&self) -> bool {
        matches!(self.next_phase(), Some("switch" | "retire" | "contract"))
    }

    /// Nothing is left for the background work: finished, aborted, or waiting for an operator.
    /// Without a recorded plan, a step counts as settled from validate on.
    pub fn settled(&self) -> bool {
        if self.phases.is_empty() {
            return self.phase == "aborted"
                || Phase::parse(&self.phase).is_some_and(|p| p >= Phase::Validate);
        }
        self.next_phase().is_none() || self.waits_for_operator()
    }
}

/// A recorded statement of the plan.
#[derive(Debug, Clone)]
pub struct PlanRow {
    pub step: String,
    pub phase: String,
    pub sql: Option<String>,
    pub concurrently: bool,
    pub note: String,
}

/// One journal entry.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub step: Option<String>,
    pub event: String,
    pub detail: Option<String>,
    pub instance: String,
}

/// A registered instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub started_at: String,
    pub heartbeat_age: f64,
    /// The steps its build knows.
    pub steps: Vec<String>,
    /// Per step, the phases it acknowledged.
    pub acks: HashMap<String, Vec<String>>,
}

/// The session holding the leader lock.
#[derive(Debug, Clone)]
pub struct Leader {
    pub pid: i32,
    pub application: String,
    pub client: Option<String>,
    pub since: Option<String>,
    /// The instance it leads for, when the store records it.
    pub instance: Option<String>,
}

/// A session waiting for a lock on an evolved table, and who holds it up.
#[derive(Debug, Clone)]
pub struct LockWait {
    pub table: String,
    pub waiting_pid: i32,
    pub waiting_application: String,
    pub waiting_query: String,
    pub waiting_secs: f64,
    pub blocker_pid: i32,
    pub blocker_application: String,
    pub blocker_state: String,
    pub blocker_xact_secs: Option<f64>,
    pub blocker_query: String,
}

pub use pgevolve_runtime::__private::PauseRow as Pause;

/// A backfill that waits for the database's health (the runtime's `health_pauses` table).
#[derive(Debug, Clone)]
pub struct HealthPause {
    pub step: String,
    /// `replica_lag`, `xmin_horizon` or `wal_rate`.
    pub reason: String,
    /// What was measured, against which bound.
    pub detail: String,
    pub since: String,
    pub secs: f64,
}

/// A request, with the seconds since it finished.
pub type Request = (RequestRow, Option<f64>);

impl Store {
    /// `<schema>.<name>`, quoted.
    pub fn table(&self, name: &str) -> String {
        format!("{}.{}", ident(&self.schema), ident(name))
    }

    /// Fails with [`CliError::NoStateStore`] when there are no state tables.
    pub async fn require(&mut self) -> Result<(), CliError> {
        if !self.has_table("steps").await? {
            return Err(CliError::NoStateStore {
                schema: self.schema.clone(),
            });
        }
        Ok(())
    }

    /// Fails with [`CliError::OldStateStore`] when the state store has no `table`.
    pub async fn require_table(&mut self, table: &'static str) -> Result<(), CliError> {
        self.require().await?;
        if !self.has_table(table).await? {
            return Err(CliError::OldStateStore {
                schema: self.schema.clone(),
                table,
            });
        }
        Ok(())
    }

    pub async fn has_table(&mut self, table: &str) -> Result<bool, CliError> {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(self.table(table))
            .fetch_one(&mut self.conn)
            .await
            .reading("the catalog")
    }

    /// Every recorded step, in the order they were first recorded, with its planned phases.
    pub async fn steps(&mut self) -> Result<Vec<Step>, CliError> {
        let has_plan = self.has_table("plan").await?;
        let phases = if has_plan {
            format!(
                "coalesce((SELECT array_agg(p.phase ORDER BY p.phase_position) FROM \
                 (SELECT DISTINCT phase, phase_position FROM {} WHERE step_id = s.id AND phase <> 'abort') p), \
                 '{{}}')",
                self.table("plan")
            )
        } else {
            "'{}'::text[]".into()
        };
        let position = if has_plan {
            format!(
                "(SELECT min(position) FROM {} WHERE step_id = s.id)",
                self.table("plan")
            )
        } else {
            "NULL::int".into()
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, model, table_schema || '.' || table_name AS qualified, kind, description, phase, \
             rows_done, rows_estimated, upper_bound IS NOT NULL AS started, updated_at::text AS updated_at, \
             {phases} AS phases FROM {} s ORDER BY created_at, {position} NULLS LAST, id",
            self.table("steps")
        )))
        .fetch_all(&mut self.conn)
        .await
        .reading("the steps")?;
        rows.iter()
            .map(|r| {
                Ok(Step {
                    id: r.try_get("id")?,
                    model: r.try_get("model")?,
                    table: r.try_get("qualified")?,
                    kind: r.try_get("kind")?,
                    description: r.try_get("description")?,
                    phase: r.try_get("phase")?,
                    rows_done: r.try_get("rows_done")?,
                    rows_estimated: r.try_get("rows_estimated")?,
                    backfill_started: r.try_get("started")?,
                    updated_at: r.try_get("updated_at")?,
                    phases: r.try_get("phases")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .reading("the steps")
    }

    /// The full id of the step `given` names (its id, or a prefix of exactly one id).
    pub async fn resolve_step(&mut self, given: &str) -> Result<String, CliError> {
        let ids: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT id FROM {} WHERE starts_with(id, $1) ORDER BY id",
            self.table("steps")
        )))
        .bind(given)
        .fetch_all(&mut self.conn)
        .await
        .reading("the steps")?;
        if ids.iter().any(|id| id == given) {
            return Ok(given.to_string());
        }
        match ids.as_slice() {
            [] => Err(CliError::UnknownStep {
                given: given.to_string(),
            }),
            [one] => Ok(one.clone()),
            many => Err(CliError::AmbiguousStep {
                given: given.to_string(),
                matches: many.join(", "),
            }),
        }
    }

    /// The recorded plan's statements, in plan order.
    pub async fn plan(&mut self) -> Result<Vec<PlanRow>, CliError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT step_id, phase, sql, run, note FROM {} ORDER BY position, phase_position, ordinal",
            self.table("plan")
        )))
        .fetch_all(&mut self.conn)
        .await
        .reading("the recorded plan")?;
        rows.iter()
            .map(|r| {
                Ok(PlanRow {
                    step: r.try_get("step_id")?,
                    phase: r.try_get("phase")?,
                    sql: r.try_get("sql")?,
                    concurrently: r.try_get::<String, _>("run")? == "concurrently",
                    note: r.try_get("note")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .reading("the recorded plan")
    }

    /// The journal, oldest first: the last `limit` entries, of one step when given.
    pub async fn journal(
        &mut self,
        step: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Event>, CliError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT * FROM (SELECT id, at::text AS at, step_id, event, detail, instance FROM {} \
             WHERE $1::text IS NULL OR step_id = $1 ORDER BY id DESC LIMIT $2) j ORDER BY id",
            self.table("journal")
        )))
        .bind(step)
        .bind(limit)
        .fetch_all(&mut self.conn)
        .await
        .reading("the journal")?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    step: r.try_get("step_id")?,
                    event: r.try_get("event")?,
                    detail: r.try_get("detail")?,
                    instance: r.try_get("instance")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .reading("the journal")
    }

    /// Instances whose heartbeat is younger than `fresh_secs`, with their acknowledgements.
    pub async fn instances(&mut self, fresh_secs: f64) -> Result<Vec<Instance>, CliError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT i.id, i.started_at::text AS started_at, \
             extract(epoch FROM now() - i.heartbeat_at)::float8 AS age, i.steps, \
             coalesce((SELECT array_agg(a.step_id || ' ' || a.phase) FROM {acks} a WHERE a.instance_id = i.id), '{{}}') AS acks \
             FROM {instances} i WHERE i.heartbeat_at > now() - make_interval(secs => $1) ORDER BY i.started_at, i.id",
            acks = self.table("acks"),
            instances = self.table("instances"),
        )))
        .bind(fresh_secs)
        .fetch_all(&mut self.conn)
        .await
        .reading("the instances")?;
        rows.iter()
            .map(|r| {
                let mut acks: HashMap<String, Vec<String>> = HashMap::new();
                for pair in r.try_get::<Vec<String>, _>("acks")? {
                    if let Some((step, phase)) = pair.split_once(' ') {
                        acks.entry(step.into()).or_default().push(phase.into());
                    }
                }
                Ok(Instance {
                    id: r.try_get("id")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_age: r.try_get("age")?,
                    steps: r.try_get("steps")?,
                    acks,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .reading("the instances")
    }

    /// The session holding the leader lock, if any.
    pub async fn leader(&mut self) -> Result<Option<Leader>, CliError> {
        let key = pgevolve_runtime::__private::leader_lock_key(&self.schema);
        // `leader_pid` read through to_jsonb, so a store without the column reads NULL.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT a.pid, coalesce(a.application_name, '') AS app, a.client_addr::text AS client, \
             a.backend_start::text AS since, \
             (SELECT i.id FROM {} i WHERE (to_jsonb(i) ->> 'leader_pid')::int = a.pid LIMIT 1) AS instance \
             FROM pg_catalog.pg_locks l \
             JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
             AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
             AND ((l.classid::int8 << 32) | l.objid::int8) = $1",
            self.table("instances")
        )))
        .bind(key)
        .fetch_optional(&mut self.conn)
        .await
        .reading("the leader lock")?;
        row.map(|r| {
            Ok(Leader {
                pid: r.try_get("pid")?,
                application: r.try_get("app")?,
                client: r.try_get("client")?,
                since: r.try_get("since")?,
                instance: r.try_get("instance")?,
            })
        })
        .transpose()
        .reading("the leader lock")
    }

    /// Sessions waiting for a lock on one of `tables` (`schema.table`), with the sessions
    /// holding them up.
    pub async fn lock_waits(&mut self, tables: &[String]) -> Result<Vec<LockWait>, CliError> {
        let rows = sqlx::query(
            "SELECT w.relation::regclass::text AS tbl, wa.pid AS wpid, coalesce(wa.application_name, '') AS wapp, \
             left(coalesce(wa.query, ''), 200) AS wquery, \
             extract(epoch FROM now() - coalesce(wa.state_change, now()))::float8 AS wsecs, \
             b.pid AS bpid, coalesce(b.application_name, '') AS bapp, coalesce(b.state, '') AS bstate, \
             extract(epoch FROM now() - b.xact_start)::float8 AS bxact, left(coalesce(b.query, ''), 200) AS bquery \
             FROM pg_catalog.pg_locks w \
             JOIN pg_catalog.pg_stat_activity wa ON wa.pid = w.pid \
             JOIN pg_catalog.pg_stat_activity b ON b.pid = ANY (pg_catalog.pg_blocking_pids(w.pid)) \
             WHERE NOT w.granted AND w.locktype = 'relation' \
             AND w.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) t) \
             ORDER BY wsecs DESC",
        )
        .bind(tables)
        .fetch_all(&mut self.conn)
        .await
        .reading("the lock waits")?;
        rows.iter()
            .map(|r| {
                Ok(LockWait {
                    table: r.try_get("tbl")?,
                    waiting_pid: r.try_get("wpid")?,
                    waiting_application: r.try_get("wapp")?,
                    waiting_query: r.try_get("wquery")?,
                    waiting_secs: r.try_get("wsecs")?,
                    blocker_pid: r.try_get("bpid")?,
                    blocker_application: r.try_get("bapp")?,
                    blocker_state: r.try_get("bstate")?,
                    blocker_xact_secs: r.try_get("bxact")?,
                    blocker_query: r.try_get("bquery")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .reading("the lock waits")
    }

    /// The pauses in force (none in a store without the table).
    pub async fn pauses(&mut self) -> Result<Vec<Pause>, CliError> {
        if !self.has_table("pauses").await? {
            return Ok(Vec::new());
        }
        Requests::new(&self.schema)
            .pauses(&mut self.conn)
            .await
            .reading("the pauses")
    }

    /// Backfills waiting for the database's health (none in a store without the table).
    pub async fn health_pauses(&mut self) -> Result<Vec<HealthPause>, CliError> {
        if !self.has_table("health_pauses").await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT step_id, reason, detail, since::text AS since, \
             extract(epoch FROM now() - since)::float8 AS secs FROM {} ORDER BY since, step_id",
            self.table("health_pauses")
        )))
        .fetch_all(&mut self.conn)
        .await
        .reading("the health pauses")?;
        rows.iter()
            .map(|r| {
                Ok(HealthPause {
                    step: r.try_get("step_id")?,
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                    since: r.try_get("since")?,
                    secs: r.try_get("secs")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .reading("the health pauses")
    }

    /// Requests not done, and those that failed in the last `recent_secs` seconds.
    pub async fn requests(&mut self, recent_secs: f64) -> Result<Vec<Request>, CliError> {
        if !self.has_table("requests").await? {
            return Ok(Vec::new());
        }
        Requests::new(&self.schema)
            .unfinished_or_failed(&mut self.conn, Duration::from_secs_f64(recent_secs))
            .await
            .reading("the requests")
    }
}
