//! The event journal: who did what to which step, and when.

use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::{Event, StateStore};
use crate::sql::lit;

/// One event of the journal: who did what to which step, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// When, as PostgreSQL formats a `timestamptz`.
    pub at: String,
    /// The step, for step events.
    pub step: Option<String>,
    /// What happened (`expand done`, `abort started`, ...).
    pub event: String,
    /// Details (the step's description, the phase it was aborted from, ...).
    pub detail: Option<String>,
    /// The instance that did it (`<pid>-<random>`).
    pub instance: String,
}

pub(crate) struct Journal<'a> {
    pub store: &'a StateStore,
}

impl Journal<'_> {
    /// The INSERT for an event, as SQL text, so it can join the transaction of the DDL it records.
    pub fn insert_sql(&self, step: Option<&str>, event: &Event<'_>, instance: &str) -> String {
        format!(
            "INSERT INTO {} (step_id, event, detail, instance) VALUES ({}, {}, {}, {})",
            self.store.table("journal"),
            step.map(lit).unwrap_or_else(|| "NULL".into()),
            lit(&event.name()),
            lit(&event.to_string()),
            lit(instance)
        )
    }

    /// Every event, oldest first.
    pub async fn all(&self, conn: &mut PgConnection) -> sqlx::Result<Vec<JournalEntry>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT at::text AS at, step_id, event, detail, instance FROM {} ORDER BY id",
            self.store.table("journal")
        )))
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(JournalEntry {
                    at: r.try_get("at")?,
                    step: r.try_get("step_id")?,
                    event: r.try_get("event")?,
                    detail: r.try_get("detail")?,
                    instance: r.try_get("instance")?,
                })
            })
            .collect()
    }
}
