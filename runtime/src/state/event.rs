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
    /// Validation found rows that break the constraint; the constraint was dropped.
    ValidateFailed { step: &'a str },
    /// An index no longer declared was dropped at contract.
    RemovedIndexDropped { step: &'a str, declared_by: &'a str },
    /// The backfill's batches fire the application's own triggers.
    BackfillFiresTriggers { fired: &'a str, not_fired: &'a str },
    /// The backfill's batches skip the application's own triggers (`skip_user_triggers`).
    BackfillSkipsTriggers { fired: &'a str, not_fired: &'a str },
}

impl Event<'_> {
    /// The `event` column: what happened, short and stable (tests and operators match on it).
    pub fn name(&self) -> String {
        match self {
            Event::PhaseDone { phase, .. } => format!("{phase} done"),
            Event::TableCreated { .. } => "expand done".into(),
            Event::ExpandCompleted { .. } => "expand completed".into(),
            Event::AbortStarted { .. } => "abort started".into(),
            Event::AbortDone { .. } => "abort done".into(),
            Event::Acknowledged { phase, .. } => format!("{phase} acknowledged"),
            Event::WindowOverridden { .. } => "deploy window overridden".into(),
            Event::CarriedOver { .. } => "carried over".into(),
            Event::LeaderLockLost { .. } => "leader lock lost".into(),
            Event::ValidateFailed { .. } => "validate failed".into(),
            Event::RemovedIndexDropped { .. } => "contract done".into(),
            Event::BackfillFiresTriggers { .. } => "backfill fires user triggers".into(),
            Event::BackfillSkipsTriggers { .. } => "backfill skips user triggers".into(),
        }
    }
}

/// The `detail` column.
impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::PhaseDone { step, .. } | Event::AbortDone { step } => f.write_str(step),
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
    fn trigger_details_have_no_run_of_spaces() {
        let e = Event::BackfillSkipsTriggers {
            fired: "a",
            not_fired: "b",
        };
        assert!(!e.to_string().contains("  "), "{e}");
    }
}
