//! Tunables of the runtime, with production defaults.

use std::time::Duration;

/// How DDL statements wait for locks.
#[derive(Debug, Clone)]
pub struct DdlOptions {
    /// `lock_timeout` of every statement that takes a lock application queries need. A statement
    /// waiting for its lock blocks the queries queued behind it, so this bounds how long the
    /// application can be held up by one attempt. Default 100 ms: short enough that an unlucky
    /// attempt is lost in the workload's own noise, with many jittered retries after it.
    ///
    /// Before each attempt the executor looks at who holds a lock on the table (`pg_locks`,
    /// `pg_stat_activity`): while a transaction that has been open for longer than this holds
    /// one, or a `VACUUM` (autovacuum included) works on the table, or another session already
    /// waits in the table's lock queue, it does not ask for its lock at all, since it would
    /// only queue every application query behind it; it waits (logging who and why) and tries
    /// once they are gone, up to [`DdlOptions::deadline`].
    ///
    /// Not applied to `CREATE INDEX CONCURRENTLY` and `DROP INDEX CONCURRENTLY`, which run with
    /// `lock_timeout = 0` and `statement_timeout = 0`: their only table lock, SHARE UPDATE
    /// EXCLUSIVE, blocks neither reads nor writes, and a concurrent build waits for older
    /// transactions through lock waits by design, so a timeout would only abort a healthy build
    /// and leave an INVALID index. `max_attempts` and the backoff still apply to them after a
    /// deadlock.
    pub lock_timeout: Duration,
    /// Lock requests per statement group that may time out before it gives up with an error
    /// naming the blocker. Time spent waiting for long holders (see `lock_timeout`) costs no
    /// attempt. Default 50.
    pub max_attempts: u32,
    /// First wait between attempts; doubles each time, with jitter. Default 50 ms.
    pub initial_backoff: Duration,
    /// Longest wait between attempts. Default 2 s.
    pub max_backoff: Duration,
    /// The longest a statement group may wait for its lock in all (long holders and attempts
    /// together) before it gives up with [`ErrorKind::LockTimeout`], naming who held the lock
    /// and for how long. Default 10 minutes.
    ///
    /// [`ErrorKind::LockTimeout`]: crate::ErrorKind::LockTimeout
    pub deadline: Duration,
}

impl Default for DdlOptions {
    fn default() -> Self {
        DdlOptions {
            lock_timeout: Duration::from_millis(100),
            max_attempts: 50,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            deadline: Duration::from_secs(600),
        }
    }
}

/// How the backfill pages through a table.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Rows in the first batch. Default 1,000.
    pub initial_batch_size: u32,
    /// Bounds for the adaptive batch size. Default 100 ..= 20,000.
    pub min_batch_size: u32,
    /// Upper bound for the adaptive batch size.
    pub max_batch_size: u32,
    /// The batch size adapts so that one batch (one transaction holding its rows' locks) takes
    /// about this long. Default 30 ms: a writer that needs a row of the batch waits at most
    /// about that.
    pub target_batch_duration: Duration,
    /// The longest a batch may run (its `statement_timeout`). A batch that takes longer (a cold
    /// cache, a burst of load) is cancelled, which releases its row locks at once, and is
    /// retried at half the size; so no row stays locked by the backfill for longer than this,
    /// whatever the adaptive size did. Default 80 ms.
    pub batch_timeout: Duration,
    /// Shortest pause after every batch, leaving room for application writes. Default 20 ms.
    pub pause: Duration,
    /// The share of the time the backfill may be busy: after a batch of duration `d` it pauses
    /// `d × (1 − duty_cycle) / duty_cycle` (at least `pause`). Default 1/3: a batch of 30 ms is
    /// followed by 60 ms for the application, so the backfill takes at most a third of one core
    /// (on the 2-core benchmark machine 0.5 cost the workload a third of its throughput, 1/3
    /// about a quarter; see BENCHMARKS.md). 1.0 with a zero `pause` runs it unthrottled
    /// ([`BackfillOptions::unthrottled`]).
    pub duty_cycle: f64,
    /// Run every batch with `SET LOCAL session_replication_role = replica`, so that it fires
    /// none of the table's own triggers (an `updated_at` trigger, an audit trigger). Default
    /// `false`: a batch is an `UPDATE` of a key range and fires every `UPDATE` trigger of the
    /// table once per row it fills (see [`Evolver::plans_for_database`], which names them).
    ///
    /// Only the batch's own transaction is in `replica` mode: the application's writes during
    /// the pass still fire every trigger, pgevolve's fill, mark and sync triggers included. The
    /// batch does not need those: it writes every column they maintain itself (the filled
    /// value, the marker, a rename's new column). In `replica` mode triggers declared
    /// `ENABLE ALWAYS` still fire, and `ENABLE REPLICA` ones fire *only* then. Foreign-key
    /// checks are triggers too and are skipped: the batch writes only new columns, and a
    /// foreign key on one of them is added `NOT VALID` and proved by its `VALIDATE`, which
    /// does not depend on the batches.
    ///
    /// Setting the parameter needs a superuser, or on PostgreSQL 15 and later a role granted
    /// `SET ON PARAMETER session_replication_role`; a boot with a backfill to run checks this
    /// before any DDL and fails with [`ErrorKind::TriggerSkipDenied`], changing nothing.
    ///
    /// [`Evolver::plans_for_database`]: crate::Evolver::plans_for_database
    /// [`ErrorKind::TriggerSkipDenied`]: crate::ErrorKind::TriggerSkipDenied
    pub skip_user_triggers: bool,
}

impl BackfillOptions {
    /// No pause between batches: the fastest backfill, for a maintenance window or an idle
    /// table. Batches still aim at `target_batch_duration`, so rows stay locked as briefly.
    pub fn unthrottled() -> BackfillOptions {
        BackfillOptions {
            pause: Duration::ZERO,
            duty_cycle: 1.0,
            ..BackfillOptions::default()
        }
    }

    /// The pause after a batch that took `batch`.
    pub fn pause_after(&self, batch: Duration) -> Duration {
        let duty = self.duty_cycle.clamp(0.01, 1.0);
        let share = batch.mul_f64((1.0 - duty) / duty);
        share.max(self.pause)
    }
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            initial_batch_size: 1_000,
            min_batch_size: 100,
            max_batch_size: 20_000,
            target_batch_duration: Duration::from_millis(30),
            batch_timeout: Duration::from_millis(80),
            pause: Duration::from_millis(20),
            duty_cycle: 1.0 / 3.0,
            skip_user_triggers: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_keeps_the_duty_cycle() {
        let default = BackfillOptions::default();
        let ms = Duration::from_millis;
        assert_eq!(default.pause_after(ms(30)).as_millis(), 60);
        assert_eq!(default.pause_after(ms(5)), ms(20));
        let quarter = BackfillOptions {
            duty_cycle: 0.25,
            ..default
        };
        assert_eq!(quarter.pause_after(ms(40)), ms(120));
        assert_eq!(
            BackfillOptions::unthrottled().pause_after(ms(50)),
            Duration::ZERO
        );
    }
}
