//! The event journal: who did what to which step, and when.

use super::StateStore;
use crate::sql::lit;

pub(crate) struct Journal<'a> {
    pub store: &'a StateStore,
}

impl Journal<'_> {
    /// The INSERT for an event, as SQL text, so it can join the transaction of the DDL it records.
    pub fn insert_sql(
        &self,
        step: Option<&str>,
        event: &str,
        detail: &str,
        instance: &str,
    ) -> String {
        format!(
            "INSERT INTO {} (step_id, event, detail, instance) VALUES ({}, {}, {}, {})",
            self.store.table("journal"),
            step.map(lit).unwrap_or_else(|| "NULL".into()),
            lit(event),
            lit(detail),
            lit(instance)
        )
    }
}
