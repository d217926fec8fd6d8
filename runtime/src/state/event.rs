//! What the journal records, as typed events: each has one name (what `Evolution::status()`
//! and the journal table show in `event`) and one way to write its details, here and nowhere
//! else.

use std::fmt;
use std::time::Duration;

use crate::step::Phase;

/// One event of the journal, before it is written.
#[derive(Debug, Clone)]
pub(crate) enum Event<'a> {
    /// A phase ran and was recorded (`expand done`, `validate done`, ...).
    PhaseDone { phase: Phase, step: &'a str },
    /// A phase whose DDL committed without its record (its instance died or lost its
    /// connection in between), found done on the catalog at boot.
    PhaseFoundDone { phase: Phase, step: &'a str },
    /// A boot created a missing table with its steps complete.
    TableCreated { table: &'a str },
    /// An expanded step's idempotent expand ran again to add the helpers a newer version needs.
    ExpandCompleted { step: &'a str },
    /// An abort was recorded; `elsewhere` when another instance leads and drops what it added.
    AbortStarted {
        from: Phase,
        step: &'a str,
        elsewhere: bool,
    },
    /// An abort's DDL ran.
    AbortDone { step: &'a str },
    /// Every live instance acknowledged a phase that retires a shape.
    Acknowledged {
        phase: Phase,
        acknowledged: &'a [&'a str],
        expired: &'a [&'a str],
        waited: Duration,
    },
    /// A destructive phase ran outside the deploy window, on an operator's override.
    WindowOverridden {
        phase: Phase,
        now: &'a str,
        window: &'a str,
        reason: &'a str,
    },
    /// A rename carried what depended on the old column over to the new one.
    CarriedOver { lines: &'a [String] },
    /// This instance lost the leader lock.
    LeaderLockLost { error: &'a str },
    /// The background work met a transient error (a lost connection) and tries again later.
    BackgroundInterrupted { error: &'a str, retry_in_ms: u64 },
    /// Validation found rows that break the constraint; the constraint was dropped.
    ValidateFailed { step: &'a str },
    /// An index no longer declared was dropped at contract.
    RemovedIndexDropped { step: &'a str, declared_by: &'a str },
    /// The backfill's batches fire the application's own triggers.
    BackfillFiresTriggers { fired: &'a str, not_fired: &'a str },
    /// The backfill's batches skip the application's own triggers (`skip_user_triggers`).
    BackfillSkipsTriggers { fired: &'a str, not_fired: &'a str },
    /// The leader stopped at an operator's pause: before a backfill batch (`rows` filled so
    /// far) or before a phase.
    /// `before` says where it stopped (`backfill batch, 1200 of ~20000 rows filled`).
    Paused { before: &'a str },
    /// The pause was lifted and the leader went on.
    Resumed { before: &'a str },
    /// The backfill paused by itself: a health bound was passed (`reason` is the signal,
    /// `replica_lag`, `xmin_horizon` or `wal_rate`; `detail` what was measured).
    HealthPaused {
        reason: &'a str,
        detail: &'a str,
        rows: i64,
    },
    /// The pass's WAL budget (`BackfillOptions::wal_budget`) set its pace for the first time:
    /// a batch of `size` (in `unit`: rows, or a referencing fill's heap pages) wrote `wal`
    /// bytes, so the pause after it was longer than the duty cycle's or the next batch, of
    /// `next_size`, smaller. Journaled once per pass (a SQL pass, a computed walk, a
    /// referencing fill).
    WalPaced {
        budget: u64,
        size: i64,
        unit: &'a str,
        wal: u64,
        pause: Duration,
        next_size: u32,
    },
    /// Every health bound was met again and the backfill went on.
    HealthResumed {
        reason: &'a str,
        paused: Duration,
        rows: i64,
    },
    /// An operator's request (`pgevolve switch`, ...) was carried out, or failed.
    Request {
        id: i64,
        action: &'a str,
        by: &'a str,
        reason: Option<&'a str>,
        outcome: &'a str,
        message: &'a str,
    },
}

impl Event<'_> {
    /// The `event` column: what happened, short and stable (tests and operators match on it).
    pub fn name(&self) -> String {
        match self {
            Event::PhaseDone { phase, .. } | Event::PhaseFoundDone { phase, .. } => {
                format!("{phase} done")
            }
            Event::TableCreated { .. } => "expand done".into(),
            Event::ExpandCompleted { .. } => "expand completed".into(),
            Event::AbortStarted { .. } => "abort started".into(),
            Event::AbortDone { .. } => "abort done".into(),
            Event::Acknowledged { phase, .. } => format!("{phase} acknowledged"),
            Event::WindowOverridden { .. } => "deploy window overridden".into(),
            Event::CarriedOver { .. } => "carried over".into(),
            Event::LeaderLockLost { .. } => "leader lock lost".into(),
            Event::BackgroundInterrupted { .. } => "background work interrupted".into(),
            Event::ValidateFailed { .. } => "validate failed".into(),
            Event::RemovedIndexDropped { .. } => "contract done".into(),
            Event::BackfillFiresTriggers { .. } => "backfill fires user triggers".into(),
            Event::BackfillSkipsTriggers { .. } => "backfill skips user triggers".into(),
            Event::Paused { .. } => "paused".into(),
            Event::Resumed { .. } => "resumed".into(),
            Event::HealthPaused { .. } => "health paused".into(),
            Event::HealthResumed { .. } => "health resumed".into(),
            Event::WalPaced { .. } => "backfill paced on wal".into(),
            Event::Request {
                action, outcome, ..
            } => format!("request {action} {outcome}"),
        }
    }
}

/// The `detail` column.
impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::PhaseDone { step, .. } | Event::AbortDone { step } => f.write_str(step),
            Event::PhaseFoundDone { step, .. } => write!(
                f,
                "found done on the catalog at boot, not recorded by the instance that ran it: {step}"
            ),
            Event::TableCreated { table } => write!(f, "created table {table}"),
            Event::ExpandCompleted { step } => write!(f, "helpers added: {step}"),
            Event::AbortStarted {
                from,
                step,
                elsewhere: false,
            } => write!(f, "from phase {from}: {step}"),
            Event::AbortStarted {
                from,
                step,
                elsewhere: true,
            } => write!(f, "from phase {from}, while another instance leads: {step}"),
            Event::Acknowledged {
                acknowledged,
                expired,
                waited,
                ..
            } => write!(
                f,
                "acknowledged by [{}]; not waited for, heartbeat expired: [{}]; waited {waited:?}",
                acknowledged.join(", "),
                expired.join(", ")
            ),
            Event::WindowOverridden {
                phase,
                now,
                window,
                reason,
            } => write!(f, "{phase} at {now} ({window}): {reason}"),
            Event::CarriedOver { lines } => f.write_str(&lines.join("; ")),
            Event::LeaderLockLost { error } => f.write_str(error),
            Event::BackgroundInterrupted { error, retry_in_ms } => {
                write!(f, "{error}; trying again in {retry_in_ms} ms")
            }
            Event::ValidateFailed { step } => {
                write!(f, "{step}: existing rows violate it; constraint dropped")
            }
            Event::RemovedIndexDropped { step, declared_by } => {
                write!(f, "{step} (declared by step {declared_by})")
            }
            Event::BackfillFiresTriggers { fired, not_fired } => write!(
                f,
                "every batch fires: {fired}; not fired: {not_fired}; \
                 BackfillOptions::skip_user_triggers skips them"
            ),
            Event::BackfillSkipsTriggers { fired, not_fired } => write!(
                f,
                "batches run with session_replication_role = replica (skip_user_triggers); \
                 not fired: {not_fired}; still fired (ENABLE ALWAYS or REPLICA): {fired}"
            ),
            Event::Paused { before } | Event::Resumed { before } => write!(f, "before {before}"),
            Event::HealthPaused {
                reason,
                detail,
                rows,
            } => write!(f, "{reason}: {detail}; {rows} rows filled so far"),
            Event::HealthResumed {
                reason,
                paused,
                rows,
            } => write!(
                f,
                "{reason} back within its bound after {:.1} s; {rows} rows filled so far",
                paused.as_secs_f64()
            ),
            Event::WalPaced {
                budget,
                size,
                unit,
                wal,
                pause,
                next_size,
            } => write!(
                f,
                "a batch of {size} {unit} wrote {wal} bytes of WAL against a budget of {budget} bytes/s: \
                 paused {:.0} ms, next batch {next_size} {unit}",
                pause.as_secs_f64() * 1000.0
            ),
            Event::Request {
                id,
                by,
                reason,
                message,
                ..
            } => {
                write!(f, "#{id} by {by}")?;
                if let Some(reason) = reason {
                    write!(f, " ({reason})")?;
                }
                write!(f, ": {message}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_event_is_named_after_its_phase_and_details_the_step() {
        let e = Event::PhaseDone {
            phase: Phase::Validate,
            step: "add column users.email",
        };
        assert_eq!(e.name(), "validate done");
        assert_eq!(e.to_string(), "add column users.email");
    }

    #[test]
    fn an_operator_request_is_named_after_its_action_and_outcome() {
        let e = Event::Request {
            id: 7,
            action: "contract",
            by: "alice via role app",
            reason: Some("incident 42"),
            outcome: "failed",
            message: "outside the deploy window",
        };
        assert_eq!(e.name(), "request contract failed");
        assert_eq!(
            e.to_string(),
            "#7 by alice via role app (incident 42): outside the deploy window"
        );
        let p = Event::Paused {
            before: "phase validate",
        };
        assert_eq!(
            (p.name(), p.to_string()),
            ("paused".into(), "before phase validate".into())
        );
    }

    #[test]
    fn trigger_details_have_no_run_of_spaces() {
        let e = Event::BackfillSkipsTriggers {
            fired: "a",
            not_fired: "b",
        };
        assert!(!e.to_string().contains("  "), "{e}");
    }
}
