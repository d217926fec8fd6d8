//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade: pgevolve records them, the
//! application chooses where they go by installing a recorder (for Prometheus,
//! `metrics-exporter-prometheus`; see `examples/metrics`). Without a recorder they cost next to
//! nothing. Every name starts with `pgevolve_`; each is a constant below.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | [`ROWS_FILLED`] | counter | `step`, `table` | rows this process's backfill batches filled |
//! | [`BATCH_DURATION`] | histogram (seconds) | `table` | how long each backfill batch took |
//! | [`BATCH_SIZE`] | gauge (rows) | `table` | the adaptive batch size of the next batch |
//! | [`BATCH_WAL`] | counter (bytes) | `table` | WAL this process's backfill batches wrote (SQL passes, computed walks, referencing fills) |
//! | [`WAL_PACED`] | counter | `table` | pauses after a batch that the WAL budget made longer than the duty cycle's |
//! | [`ROWS_REMAINING`] | gauge (rows) | `step`, `table` | rows the backfill estimates are left (0 once done) |
//! | [`PHASE`] | gauge ([`phase_code`]) | `step`, `table` | the last phase the step completed, as this process sees it |
//! | [`PAUSED`] | gauge (0/1) | `table`, `reason` | whether the backfill of the table waits, and why |
//! | [`REPLAY_LAG_BYTES`] | gauge (bytes) | | WAL the replica furthest behind has left to replay |
//! | [`REPLAY_LAG_SECONDS`] | gauge (seconds) | | the largest `replay_lag` of any replica |
//! | [`XMIN_AGE`] | gauge (transactions) | | how far back the xmin horizon is held |
//! | [`OLDEST_TRANSACTION_SECONDS`] | gauge (seconds) | | how long the oldest transaction holding a snapshot has been open |
//! | [`WAL_BYTES_PER_SECOND`] | gauge (bytes/s) | | the server's WAL rate between two health checks |
//!
//! `reason` of [`PAUSED`] is one of [`PAUSE_REASONS`]: `operator` (`pgevolve pause`),
//! `replica_lag`, `xmin_horizon`, `wal_rate` (the [`HealthBounds`](crate::HealthBounds)); while
//! a backfill runs every reason has its series, 1 for the one that holds it, 0 for the others.
//! The health gauges are set by each check of a running backfill (about once a second) and
//! only for what the role can see: a value PostgreSQL hides (or without a replica) is not set.

use std::time::Duration;

use crate::step::Phase;

/// Counter: rows filled by this process's backfill batches (`step`, `table`). A pass that fills
/// several columns of one table counts its rows for each of their steps.
pub const ROWS_FILLED: &str = "pgevolve_backfill_rows_filled_total";
/// Histogram: seconds each backfill batch took (`table`).
pub const BATCH_DURATION: &str = "pgevolve_backfill_batch_duration_seconds";
/// Gauge: rows in the next backfill batch, as the batch size adapts (`table`).
pub const BATCH_SIZE: &str = "pgevolve_backfill_batch_size";
/// Counter: bytes of WAL this process's backfill batches wrote (`table`): a SQL pass's, a
/// computed walk's, a widened key's referencing fill's. Measured per batch from
/// `pg_current_wal_insert_lsn()`, less what the rest of the server wrote meanwhile (its rate
/// measured between batches).
pub const BATCH_WAL: &str = "pgevolve_backfill_batch_wal_bytes_total";
/// Counter: pauses after a backfill batch that the WAL budget
/// ([`BackfillOptions::wal_budget`](crate::BackfillOptions::wal_budget)) made longer than the
/// duty cycle's (`table`).
pub const WAL_PACED: &str = "pgevolve_backfill_wal_paced_total";
/// Gauge: rows the backfill still has to fill, from the table's estimate (`step`, `table`).
pub const ROWS_REMAINING: &str = "pgevolve_backfill_rows_remaining";
/// Gauge: the step's last completed phase, as [`phase_code`] numbers it (`step`, `table`).
pub const PHASE: &str = "pgevolve_step_phase";
/// Gauge: 1 while the backfill of `table` waits for `reason`, else 0.
pub const PAUSED: &str = "pgevolve_backfill_paused";
/// Gauge: bytes of WAL the replica furthest behind has left to replay.
pub const REPLAY_LAG_BYTES: &str = "pgevolve_health_replay_lag_bytes";
/// Gauge: the largest `replay_lag` of any replica, in seconds.
pub const REPLAY_LAG_SECONDS: &str = "pgevolve_health_replay_lag_seconds";
/// Gauge: the age of the xmin horizon, in transactions.
pub const XMIN_AGE: &str = "pgevolve_health_xmin_age";
/// Gauge: how long the oldest transaction holding a snapshot has been open, in seconds.
pub const OLDEST_TRANSACTION_SECONDS: &str = "pgevolve_health_oldest_transaction_seconds";
/// Gauge: the server's WAL rate between the last two health checks, in bytes per second.
pub const WAL_BYTES_PER_SECOND: &str = "pgevolve_health_wal_bytes_per_second";

/// The values of [`PAUSED`]'s `reason` label.
pub const PAUSE_REASONS: [&str; 4] = ["operator", "replica_lag", "xmin_horizon", "wal_rate"];

/// Registers the description and unit of every metric above with the recorder installed now,
/// so an exporter can show them (Prometheus's `# HELP` lines). Optional: call it once, after
/// installing the recorder.
pub fn describe() {
    use metrics::Unit;
    metrics::describe_counter!(
        ROWS_FILLED,
        Unit::Count,
        "Rows filled by this process's backfill batches"
    );
    metrics::describe_histogram!(
        BATCH_DURATION,
        Unit::Seconds,
        "How long each backfill batch took"
    );
    metrics::describe_gauge!(
        BATCH_SIZE,
        Unit::Count,
        "Rows in the next backfill batch (adaptive)"
    );
    metrics::describe_counter!(
        BATCH_WAL,
        Unit::Bytes,
        "WAL this process's backfill batches wrote themselves (the rest of the server's, measured between batches, taken off)"
    );
    metrics::describe_counter!(
        WAL_PACED,
        Unit::Count,
        "Pauses after a backfill batch lengthened by the WAL budget"
    );
    metrics::describe_gauge!(
        ROWS_REMAINING,
        Unit::Count,
        "Rows the backfill estimates are left"
    );
    metrics::describe_gauge!(
        PHASE,
        "Last completed phase: pending 0, expand 1, backfill 2, validate 3, switch 4, retire 5, contract 6, aborted -1"
    );
    metrics::describe_gauge!(
        PAUSED,
        "1 while the backfill of the table waits for the reason (operator, replica_lag, xmin_horizon, wal_rate)"
    );
    metrics::describe_gauge!(
        REPLAY_LAG_BYTES,
        Unit::Bytes,
        "WAL the replica furthest behind has left to replay"
    );
    metrics::describe_gauge!(
        REPLAY_LAG_SECONDS,
        Unit::Seconds,
        "Largest replay_lag of any replica"
    );
    metrics::describe_gauge!(
        XMIN_AGE,
        Unit::Count,
        "Age of the xmin horizon in transactions"
    );
    metrics::describe_gauge!(
        OLDEST_TRANSACTION_SECONDS,
        Unit::Seconds,
        "How long the oldest transaction holding a snapshot has been open"
    );
    metrics::describe_gauge!(
        WAL_BYTES_PER_SECOND,
        "The server's WAL rate, in bytes per second, between two health checks"
    );
}

/// The number [`PHASE`] reports: `pending` 0, `expand` 1, `backfill` 2, `validate` 3,
/// `switch` 4, `retire` 5, `contract` 6, `aborted` -1. Growing with the walk, so a dashboard can
/// tell "at least validated" by `>= 3`.
pub fn phase_code(phase: Phase) -> f64 {
    match phase {
        Phase::Pending => 0.0,
        Phase::Expand => 1.0,
        Phase::Backfill => 2.0,
        Phase::Validate => 3.0,
        Phase::Switch => 4.0,
        Phase::Retire => 5.0,
        Phase::Contract => 6.0,
        Phase::Aborted => -1.0,
    }
}

pub(crate) fn phase(step: &str, table: &str, phase: Phase) {
    metrics::gauge!(PHASE, "step" => step.to_owned(), "table" => table.to_owned())
        .set(phase_code(phase));
}

pub(crate) fn rows_filled(step: &str, table: &str, rows: u64) {
    metrics::counter!(ROWS_FILLED, "step" => step.to_owned(), "table" => table.to_owned())
        .increment(rows);
}

pub(crate) fn rows_remaining(step: &str, table: &str, rows: i64) {
    metrics::gauge!(ROWS_REMAINING, "step" => step.to_owned(), "table" => table.to_owned())
        .set(rows.max(0) as f64);
}

pub(crate) fn batch(table: &str, took: Duration) {
    metrics::histogram!(BATCH_DURATION, "table" => table.to_owned()).record(took.as_secs_f64());
}

pub(crate) fn batch_size(table: &str, rows: u32) {
    metrics::gauge!(BATCH_SIZE, "table" => table.to_owned()).set(rows as f64);
}

pub(crate) fn batch_wal(table: &str, bytes: u64, paced: bool) {
    metrics::counter!(BATCH_WAL, "table" => table.to_owned()).increment(bytes);
    if paced {
        metrics::counter!(WAL_PACED, "table" => table.to_owned()).increment(1);
    }
}

/// Sets [`PAUSED`] for every reason: 1 for `reason`, 0 for the others (all 0 with `None`).
pub(crate) fn paused(table: &str, reason: Option<&str>) {
    for r in PAUSE_REASONS {
        let value = if Some(r) == reason { 1.0 } else { 0.0 };
        metrics::gauge!(PAUSED, "table" => table.to_owned(), "reason" => r).set(value);
    }
}

/// A health gauge, when the value is known.
pub(crate) fn health(name: &'static str, value: Option<f64>) {
    if let Some(value) = value {
        metrics::gauge!(name).set(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_codes_grow_with_the_walk() {
        let walk = [
            Phase::Pending,
            Phase::Expand,
            Phase::Backfill,
            Phase::Validate,
            Phase::Switch,
            Phase::Retire,
            Phase::Contract,
        ];
        assert!(walk.windows(2).all(|w| phase_code(w[0]) < phase_code(w[1])));
        assert!(phase_code(Phase::Aborted) < 0.0);
    }

    #[test]
    fn every_name_is_prefixed() {
        let names = [
            ROWS_FILLED,
            BATCH_DURATION,
            BATCH_SIZE,
            BATCH_WAL,
            WAL_PACED,
            ROWS_REMAINING,
            PHASE,
            PAUSED,
            REPLAY_LAG_BYTES,
            REPLAY_LAG_SECONDS,
            XMIN_AGE,
            OLDEST_TRANSACTION_SECONDS,
            WAL_BYTES_PER_SECOND,
        ];
        assert!(names.iter().all(|n| n.starts_with("pgevolve_")));
    }
}
