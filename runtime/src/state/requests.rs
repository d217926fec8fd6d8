//! Operator requests and pauses: the tables `requests` and `pauses` of the state schema, and
//! every statement the `pgevolve` CLI and the instances run on them.
//!
//! ```text
//! requests(id bigserial PRIMARY KEY, action text, step_id text, reason text, requested_by text,
//!          requested_at timestamptz, picked_by text, picked_at timestamptz,
//!          done_at timestamptz, outcome text ('done' | 'failed' | 'cancelled'), message text)
//! pauses(scope text PRIMARY KEY ('*': every step, else a step id), reason text,
//!        requested_by text, at timestamptz)
//! ```
//!
//! A request is one row, inserted with a `pg_notify` on the coordinator's channel in one
//! transaction ([`Requests::submit`]), so every instance's coordinator wakes at commit and its
//! request handler (`evolver/requests.rs`) reads it within about a second, polling being the
//! fallback. `pause` and `resume` change `pauses` in that same transaction: a pause holds from
//! the commit on, whether or not an instance runs, and the leader reads it before every
//! backfill batch and every phase (`lease.rs`, in the round trip that checks its lock). Any live
//! instance then marks them done. `switch`, `contract` and `abort` are claimed by one live
//! instance whose build knows the step, carried out as the matching [`Evolution`] call would,
//! and marked done or failed with the error's `Display` text; a claim whose instance stopped
//! heartbeating may be taken over.
//!
//! [`Evolution`]: crate::Evolution

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::{Event, StateStore, instances};

/// What an operator asks of the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop the background work before its next backfill batch or phase.
    Pause,
    /// Let paused background work go on.
    Resume,
    /// [`Evolution::switch`](crate::Evolution::switch).
    Switch,
    /// [`Evolution::contract`](crate::Evolution::contract), or with the deploy window overridden
    /// when the request has a reason.
    Contract,
    /// [`Evolution::abort`](crate::Evolution::abort) of one step.
    Abort,
}

impl Action {
    /// Every action, in the order the CLI documents them.
    pub const ALL: [Action; 5] = [
        Action::Pause,
        Action::Resume,
        Action::Switch,
        Action::Contract,
        Action::Abort,
    ];

    /// The `action` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Switch => "switch",
            Action::Contract => "contract",
            Action::Abort => "abort",
        }
    }

    /// The action of an `action` column.
    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// Whether any live instance carries it out at once (it changes only `pauses`, which
    /// [`Requests::submit`] already did): no claim, no step of the instance's build needed.
    pub fn is_pause(self) -> bool {
        matches!(self, Action::Pause | Action::Resume)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request as the state store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    /// The request's id.
    pub id: i64,
    /// What was asked (an unknown value, written by a newer pgevolve, is kept as text).
    pub action: String,
    /// The step it concerns; `None`: every step.
    pub step: Option<String>,
    /// Why (a contract's reason overrides the deploy window).
    pub reason: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// When, as PostgreSQL formats a `timestamptz`.
    pub requested_at: String,
    /// The instance carrying it out, once one took it.
    pub picked_by: Option<String>,
    /// `done`, `failed` or `cancelled`, once finished.
    pub outcome: Option<String>,
    /// What happened: the error's `Display` text when it failed.
    pub message: Option<String>,
}

/// A pause in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRow {
    /// `*`: every step; otherwise a step id.
    pub scope: String,
    /// Why, as the operator said.
    pub reason: Option<String>,
    /// Who paused.
    pub requested_by: String,
    /// Since when, as PostgreSQL formats a `timestamptz`.
    pub at: String,
}

/// The statements on `requests` and `pauses` of one state schema.
#[derive(Debug, Clone)]
pub struct Requests {
    store: StateStore,
}

/// The columns [`RequestRow::read`] reads.
const COLUMNS: &str = "id, action, step_id, reason, requested_by, requested_at::text AS requested_at, \
                       picked_by, outcome, message";

impl Requests {
    /// The requests of the state store in `schema`.
    pub fn new(schema: &str) -> Requests {
        Requests {
            store: StateStore::new(schema),
        }
    }

    /// `CREATE ... IF NOT EXISTS` of `requests` (with an index on what is not done) and
    /// `pauses`. Part of [`StateStore::bootstrap`].
    pub(crate) fn bootstrap_sql(&self) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    id bigserial PRIMARY KEY,
                    action text NOT NULL,
                    step_id text,
                    reason text,
                    requested_by text NOT NULL,
                    requested_at timestamptz NOT NULL DEFAULT now(),
                    picked_by text,
                    picked_at timestamptz,
                    done_at timestamptz,
                    outcome text,
                    message text
                )",
                self.store.table("requests")
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS requests_not_done ON {} (id) WHERE done_at IS NULL",
                self.store.table("requests")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    scope text PRIMARY KEY,
                    reason text,
                    requested_by text NOT NULL,
                    at timestamptz NOT NULL DEFAULT now()
                )",
                self.store.table("pauses")
            ),
        ]
    }

    /// Records a request, in one transaction: the row, the pause it sets or lifts (`pause`
    /// and `resume`: `step` `None` is every step; a resume without a step lifts every pause),
    /// and a notification on the coordinator's channel, delivered at commit. Returns its id.
    pub async fn submit(
        &self,
        conn: &mut PgConnection,
        action: Action,
        step: Option<&str>,
        reason: Option<&str>,
        requested_by: &str,
    ) -> sqlx::Result<i64> {
        let mut tx = conn.begin().await?;
        let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {} (action, step_id, reason, requested_by) VALUES ($1, $2, $3, $4) RETURNING id",
            self.store.table("requests")
        )))
        .bind(action.as_str())
        .bind(step)
        .bind(reason)
        .bind(requested_by)
        .fetch_one(&mut *tx)
        .await?;
        let pauses = self.store.table("pauses");
        match (action, step) {
            (Action::Pause, _) => {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {pauses} (scope, reason, requested_by) VALUES ($1, $2, $3) \
                     ON CONFLICT (scope) DO UPDATE SET reason = EXCLUDED.reason, \
                     requested_by = EXCLUDED.requested_by, at = now()"
                )))
                .bind(step.unwrap_or("*"))
                .bind(reason)
                .bind(requested_by)
                .execute(&mut *tx)
                .await?;
            }
            (Action::Resume, None) => {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {pauses}")))
                    .execute(&mut *tx)
                    .await?;
            }
            (Action::Resume, Some(step)) => {
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {pauses} WHERE scope = $1"
                )))
                .bind(step)
                .execute(&mut *tx)
                .await?;
            }
            _ => {}
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(instances::channel(&self.store.schema))
            .bind(format!("request {id} {action}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The request with this id.
    pub async fn get(&self, conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<RequestRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {} WHERE id = $1",
            self.store.table("requests")
        )))
        .bind(id)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(RequestRow::read).transpose()
    }

    /// Marks a request no instance took as cancelled, with `message`; `false` when an instance
    /// took it meanwhile (it then runs to its end).
    pub async fn cancel_unpicked(
        &self,
        conn: &mut PgConnection,
        id: i64,
        message: &str,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET done_at = now(), outcome = 'cancelled', message = $2 \
             WHERE id = $1 AND picked_by IS NULL AND done_at IS NULL",
            self.store.table("requests")
        )))
        .bind(id)
        .bind(message)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The pauses in force, oldest first.
    pub async fn pauses(&self, conn: &mut PgConnection) -> sqlx::Result<Vec<PauseRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT scope, reason, requested_by, at::text AS at FROM {} ORDER BY at, scope",
            self.store.table("pauses")
        )))
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PauseRow {
                    scope: r.try_get("scope")?,
                    reason: r.try_get("reason")?,
                    requested_by: r.try_get("requested_by")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Requests not finished, and those that failed within `within`, oldest first, each with
    /// the seconds since it finished (what `pgevolve status` shows as blocking).
    pub async fn unfinished_or_failed(
        &self,
        conn: &mut PgConnection,
        within: Duration,
    ) -> sqlx::Result<Vec<(RequestRow, Option<f64>)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS}, extract(epoch FROM now() - done_at)::float8 AS done_ago FROM {} \
             WHERE done_at IS NULL OR (outcome = 'failed' AND done_at > now() - make_interval(secs => $1)) \
             ORDER BY id",
            self.store.table("requests")
        )))
        .bind(within.as_secs_f64())
        .fetch_all(conn)
        .await?;
        rows.iter()
            .map(|r| Ok((RequestRow::read(r)?, r.try_get("done_ago")?)))
            .collect()
    }

    /// Requests not done that no live instance holds: never taken, or taken by an instance
    /// whose heartbeat is older than `heartbeat_timeout`.
    pub(crate) async fn open(
        &self,
        conn: &mut PgConnection,
        heartbeat_timeout: Duration,
    ) -> sqlx::Result<Vec<RequestRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM {requests} r WHERE done_at IS NULL AND (picked_by IS NULL \
             OR NOT EXISTS (SELECT FROM {instances} i WHERE i.id = r.picked_by \
             AND i.heartbeat_at > now() - make_interval(secs => $1))) ORDER BY id",
            requests = self.store.table("requests"),
            instances = self.store.table("instances"),
        )))
        .bind(heartbeat_timeout.as_secs_f64())
        .fetch_all(conn)
        .await?;
        rows.iter().map(RequestRow::read).collect()
    }

    /// Takes a request for `instance`, unless another live instance holds it or it is done.
    pub(crate) async fn claim(
        &self,
        conn: &mut PgConnection,
        id: i64,
        instance: &str,
        heartbeat_timeout: Duration,
    ) -> sqlx::Result<bool> {
        let taken = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {requests} r SET picked_by = $2, picked_at = now() WHERE id = $1 AND done_at IS NULL \
             AND (picked_by IS NULL OR NOT EXISTS (SELECT FROM {instances} i WHERE i.id = r.picked_by \
             AND i.heartbeat_at > now() - make_interval(secs => $3)))",
            requests = self.store.table("requests"),
            instances = self.store.table("instances"),
        )))
        .bind(id)
        .bind(instance)
        .bind(heartbeat_timeout.as_secs_f64())
        .execute(conn)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Records a request's outcome (`done` or `failed`) with its message, and journals it, in
    /// one transaction. Returns `false` when it was done already (by another instance).
    pub(crate) async fn finish(
        &self,
        conn: &mut PgConnection,
        request: &RequestRow,
        instance: &str,
        outcome: &str,
        message: &str,
    ) -> sqlx::Result<bool> {
        let mut tx = conn.begin().await?;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET picked_by = coalesce(picked_by, $2), picked_at = coalesce(picked_at, now()), \
             done_at = now(), outcome = $3, message = $4 WHERE id = $1 AND done_at IS NULL",
            self.store.table("requests")
        )))
        .bind(request.id)
        .bind(instance)
        .bind(outcome)
        .bind(message)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let event = Event::Request {
            id: request.id,
            action: &request.action,
            by: &request.requested_by,
            reason: request.reason.as_deref(),
            outcome,
            message,
        };
        sqlx::query(AssertSqlSafe(self.store.journal().insert_sql(
            request.step.as_deref(),
            &event,
            instance,
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl RequestRow {
    fn read(r: &sqlx::postgres::PgRow) -> sqlx::Result<RequestRow> {
        Ok(RequestRow {
            id: r.try_get("id")?,
            action: r.try_get("action")?,
            step: r.try_get("step_id")?,
            reason: r.try_get("reason")?,
            requested_by: r.try_get("requested_by")?,
            requested_at: r.try_get("requested_at")?,
            picked_by: r.try_get("picked_by")?,
            outcome: r.try_get("outcome")?,
            message: r.try_get("message")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_from_its_column_and_nothing_else_does() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
        assert_eq!(Action::parse("drop"), None);
        assert!(Action::Pause.is_pause() && Action::Resume.is_pause());
        assert!(!Action::Contract.is_pause());
    }

    #[test]
    fn the_statements_quote_the_state_schema() {
        let sql = Requests::new("Ops \"state\"").bootstrap_sql().join("\n");
        assert!(sql.contains("\"Ops \"\"state\"\"\".\"requests\""), "{sql}");
        assert!(sql.contains("\"Ops \"\"state\"\"\".\"pauses\""), "{sql}");
    }
}
