//! The `health_pauses` table: a backfill paused by the database's health (see `crate::health`)
//! records why for every step of its pass, so `pgevolve status` can show it, and removes the
//! rows when it goes on. Added in state store 5; a store bootstrapped by an older build has no
//! such table, and the backfill then records nothing (see [`is_missing_table`]).
//!
//! [`is_missing_table`]: super::instances::is_missing_table

use super::StateStore;
use crate::sql::lit;

/// Statements on the `health_pauses` table.
pub(crate) struct HealthPauses<'a> {
    pub store: &'a StateStore,
}

impl HealthPauses<'_> {
    /// The table: one row per paused step, with the signal (`replica_lag`, `xmin_horizon`,
    /// `wal_rate`), what was measured against which bound, and since when.
    pub(crate) fn bootstrap_sql(&self) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (
                step_id text PRIMARY KEY,
                reason text NOT NULL,
                detail text NOT NULL,
                since timestamptz NOT NULL DEFAULT now()
            )",
            self.store.table("health_pauses")
        )]
    }

    /// Records (or replaces) the pause of every step in `steps`.
    pub(crate) fn record_sql(&self, steps: &[&str], reason: &str, detail: &str) -> String {
        let values = steps
            .iter()
            .map(|s| format!("({}, {}, {})", lit(s), lit(reason), lit(detail)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} AS p (step_id, reason, detail) VALUES {values} \
             ON CONFLICT (step_id) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, \
             since = CASE WHEN p.reason = EXCLUDED.reason THEN p.since ELSE now() END",
            self.store.table("health_pauses")
        )
    }

    /// Removes the pause of every step in `steps` (none left is no error).
    pub(crate) fn clear_sql(&self, steps: &[&str]) -> String {
        format!(
            "DELETE FROM {} WHERE step_id IN ({})",
            self.store.table("health_pauses"),
            steps.iter().map(|s| lit(s)).collect::<Vec<_>>().join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identifier_and_value_is_quoted() {
        let store = StateStore::new("my \"state\"");
        let pauses = HealthPauses { store: &store };
        assert_eq!(
            pauses.clear_sql(&["a'b", "c"]),
            r#"DELETE FROM "my ""state"""."health_pauses" WHERE step_id IN ('a''b', 'c')"#
        );
        let record = pauses.record_sql(&["s1"], "replica_lag", "it's behind");
        assert!(
            record.starts_with(
                r#"INSERT INTO "my ""state"""."health_pauses" AS p (step_id, reason, detail) VALUES ('s1', 'replica_lag', 'it''s behind')"#
            ),
            "{record}"
        );
    }
}
