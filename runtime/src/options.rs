//! Tunables of the runtime, with production defaults.

use std::time::Duration;

/// How DDL statements wait for locks.
///
/// Two durations, two jobs. [`lock_timeout`](DdlOptions::lock_timeout) bounds one lock request:
/// while it waits, every application query that arrives queues behind it, so it is short (100 ms:
/// an unlucky attempt is lost in the workload's own noise) and retried many times, with jitter,
/// until [`deadline`](DdlOptions::deadline). [`long_holder`](DdlOptions::long_holder) is how old a
/// lock holder's transaction must be before the executor stops asking at all and waits for it to
/// end: a request made behind a transaction that has already been open for a second would most
/// likely time out anyway, after stalling the application for the whole `lock_timeout`.
///
/// ```
/// use std::time::Duration;
/// use pgevolve_runtime::DdlOptions;
///
/// let options = DdlOptions::default();
/// assert_eq!(options.lock_timeout, Duration::from_millis(100));
/// assert_eq!(options.long_holder, Duration::from_secs(1));
/// assert_eq!(options.deadline, Duration::from_secs(600));
/// ```
#[derive(Debug, Clone)]
pub struct DdlOptions {
    /// `lock_timeout` of every statement that takes a lock application queries need. A statement
    /// waiting for its lock blocks the queries queued behind it, so this bounds how long the
    /// application can be held up by one attempt. Default 100 ms: short enough that an attempt
    /// that meets a holder (an application transaction a little slower than usual) costs the
    /// application no more than its own noise, since the attempt is rolled back and retried
    /// after a jittered backoff, up to [`DdlOptions::deadline`].
    ///
    /// Not applied to `CREATE INDEX CONCURRENTLY` and `DROP INDEX CONCURRENTLY`, which run with
    /// `lock_timeout = 0` and `statement_timeout = 0`: their only table lock, SHARE UPDATE
    /// EXCLUSIVE, blocks neither reads nor writes, and a concurrent build waits for older
    /// transactions through lock waits by design, so a timeout would only abort a healthy build
    /// and leave an INVALID index. `max_attempts` and the backoff still apply to them after a
    /// deadlock.
    pub lock_timeout: Duration,
    /// How long a lock holder's transaction must have been open for the executor to treat it as
    /// a long holder and not ask for its lock while it is there. Default 1 s.
    ///
    /// Before each attempt the executor looks at who holds a lock on the table (`pg_locks`,
    /// `pg_stat_activity`, `pg_stat_progress_vacuum`): while a transaction that has been open for
    /// longer than this holds one, or a `VACUUM` (autovacuum included) works on the table, or
    /// another session already waits in the table's lock queue, it does not ask for its lock at
    /// all, since it would only queue every application query behind it; it waits (logging who
    /// and why) and tries once they are gone, up to [`DdlOptions::deadline`]. Time spent so
    /// costs no attempt.
    ///
    /// Separate from `lock_timeout`: a transaction open for 100 ms on a loaded server is not
    /// necessarily a long one, and waiting for every such transaction to end could wait
    /// forever on a busy table; a holder younger than this is met with `lock_timeout` attempts.
    pub long_holder: Duration,
    /// Lock requests per statement group that may time out before it gives up with an error
    /// naming the blocker. Time spent waiting for long holders (see `long_holder`) costs no
    /// attempt. Default 1,000: in practice the [`deadline`](DdlOptions::deadline) ends the
    /// retries first.
    pub max_attempts: u32,
    /// First wait between attempts; doubles each time, with jitter. Default 50 ms.
    pub initial_backoff: Duration,
    /// Longest wait between attempts. Default 1 s.
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
            long_holder: Duration::from_secs(1),
            max_attempts: 1_000,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
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
    /// The most WAL the pass's batches may write per second, in bytes. Default 4 MiB/s;
    /// `None` paces on time alone ([`BackfillOptions::unthrottled`] has none). Every walk in
    /// batches that writes keeps to it: the SQL backfill pass, the walks of a column computed
    /// in Rust (`backfill_with`), and the fill of the columns that reference a primary key
    /// widened to `bigint` (its batches are heap pages rather than rows; the key table's own
    /// fill is a SQL pass). The paced counts of validate phases write nothing and pace on time.
    ///
    /// Why: with durable settings an application's commit waits until its WAL reaches the disk,
    /// and that flush also carries every WAL record written before it, the batches' included
    /// (`synchronous_commit = off` on a batch skips the batch's own wait, not the write). On a
    /// disk-bound server the workload therefore feels the backfill's WAL bytes, not its CPU time,
    /// which is all the duty cycle measures (issue #13: the longest waits and the p99 of the
    /// throttled backfill came from the shared flush).
    ///
    /// How: every batch reads `pg_current_wal_insert_lsn()` before and after its writes (a SQL
    /// pass in the batch's own round trip; a computed walk's or a referencing fill's batch with
    /// its transaction's settings, then once more after its writes, before the commit). The
    /// difference is what the whole server wrote meanwhile; what the
    /// rest of the server writes per second is measured between batches (from one batch's end
    /// to the next one's start), and that rate times the batch's duration is taken off, so a
    /// batch is charged for its own WAL. (Charged with the server's, a pass on a table whose
    /// application alone writes more than the budget shrank to its smallest batch and crawled.)
    /// The pause after the batch is at least what brings the pass back to the budget (`wal /
    /// budget − batch duration`), and the batch size shrinks so that one batch writes no more
    /// than one cycle's share of the budget (`budget × target_batch_duration / duty_cycle`, about
    /// 370 KiB by default): a smaller batch is a smaller burst for the next application commit
    /// to flush. The first time the budget sets the pace of a pass (a walk, a fill), it journals
    /// `backfill paced on wal` and logs it; [`telemetry::WAL_PACED`] counts every such pause.
    ///
    /// 4 MiB/s is about a quarter of what a single commodity SSD sustains for small synchronous
    /// writes and about half of what the default duty cycle wrote on a quiet 2-core benchmark
    /// machine (BENCHMARKS.md): a table of 1,000,000 rows of 100 bytes writes about 370 MiB to
    /// fill a column, 90 s at this budget.
    ///
    /// [`telemetry::WAL_PACED`]: crate::telemetry::WAL_PACED
    pub wal_budget: Option<u64>,
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
    /// What the backfill watches on the server to slow down and pause by itself: replicas'
    /// replay lag, the xmin horizon, the WAL rate. On by default with conservative bounds (see
    /// [`HealthBounds`]); [`HealthBounds::off`] ignores them.
    pub health: HealthBounds,
}

impl BackfillOptions {
    /// No pause between batches and no WAL budget: the fastest backfill, for a maintenance
    /// window or an idle table. Batches aim at 100 ms (`target_batch_duration`, up to 50,000
    /// rows, cancelled past 250 ms): the throttled 30 ms target is there for the application's
    /// writers, which wait for a row the batch holds, and without a pause the cost per batch
    /// (a round trip, a commit, a checkpoint row) is what a larger batch saves. A writer of a
    /// row in the batch may then wait up to the batch's duration (200 ms batches were measured
    /// too: hardly faster than 100 ms under load, with waits of 300 ms; BENCHMARKS.md). The
    /// [`health`](BackfillOptions::health) bounds still hold (replicas do not care about the
    /// window); add `.health(HealthBounds::off())` to ignore them too.
    pub fn unthrottled() -> BackfillOptions {
        BackfillOptions {
            pause: Duration::ZERO,
            duty_cycle: 1.0,
            wal_budget: None,
            target_batch_duration: Duration::from_millis(100),
            batch_timeout: Duration::from_millis(250),
            max_batch_size: 50_000,
            ..BackfillOptions::default()
        }
    }

    /// These options with `budget` (bytes per second, `None`: none) as the pass's WAL budget.
    pub fn wal_budget(self, budget: impl Into<Option<u64>>) -> BackfillOptions {
        BackfillOptions {
            wal_budget: budget.into(),
            ..self
        }
    }

    /// These options with `health` as the bounds the backfill keeps to.
    pub fn health(self, health: HealthBounds) -> BackfillOptions {
        BackfillOptions { health, ..self }
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
            wal_budget: Some(4 << 20),
            skip_user_triggers: false,
            health: HealthBounds::default(),
        }
    }
}

/// The database's health as the backfill watches it: past any of these bounds it pauses
/// before its next batch (holding its checkpoint and the leader lock), logs why, shows why in
/// `pgevolve status` and in the journal, and goes on by itself once every bound is met again.
/// Past half of a bound it slows down: the pause after each batch grows linearly from the duty
/// cycle's (at half) to five times it (at the bound).
///
/// One query per check, at most once per [`interval`](HealthBounds::interval) (before a batch,
/// never per batch when batches are quicker), reading `pg_stat_replication`,
/// `pg_stat_activity`, `pg_replication_slots`, `pg_prepared_xacts` and `pg_current_wal_lsn()`.
/// No superuser is needed; without `pg_read_all_stats` (or `pg_monitor`, which includes it)
/// PostgreSQL hides the replicas' positions and other roles' sessions: the backfill logs so
/// once and checks what it can see (slots, prepared transactions, its own role's sessions, the
/// WAL rate).
///
/// Each bound is optional (`None` turns that signal off). The defaults, and why:
///
/// | bound | default | why |
/// |---|---|---|
/// | [`replay_lag_bytes`](HealthBounds::replay_lag_bytes) | 128 MiB | eight WAL segments; GitLab's earlier framework stopped at 100 MB of slot lag |
/// | [`replay_lag`](HealthBounds::replay_lag) | 5 s | a replica that serves reads should not fall further behind than a page load; gh-ost and pt-osc stop at 1–1.5 s of lag, this backfill at 5 s leaves room for the lag a busy primary has anyway |
/// | [`xmin_age`](HealthBounds::xmin_age) | 10,000,000 transactions | a snapshot, slot or prepared transaction that old means vacuum has not been able to clean anything newer for a long time; the backfill's dead row versions would only add to the bloat. 5 % of the default `autovacuum_freeze_max_age` |
/// | [`oldest_transaction`](HealthBounds::oldest_transaction) | 10 minutes | the same, in time, for a session (a report, an idle transaction); longer than the application's own transactions should ever be |
/// | [`wal_rate`](HealthBounds::wal_rate) | 64 MiB/s | all the server's WAL, the application's included: above this replicas, archiving and backups fall behind on ordinary hardware; the backfill alone under its default duty cycle writes far less |
/// | [`interval`](HealthBounds::interval) | 1 s | one cheap query per second |
///
/// ```
/// use std::time::Duration;
/// use pgevolve_runtime::{BackfillOptions, HealthBounds};
///
/// let options = BackfillOptions::default().health(
///     HealthBounds::default()
///         .replay_lag(Duration::from_secs(2))
///         .wal_rate(None), // no WAL budget
/// );
/// assert_eq!(options.health.replay_lag, Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HealthBounds {
    /// The most WAL any replica may have left to replay, in bytes
    /// (`pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)` of `pg_stat_replication`).
    pub replay_lag_bytes: Option<u64>,
    /// The longest replay lag of any replica (`replay_lag` of `pg_stat_replication`, which
    /// PostgreSQL measures when the replica reports a replayed position: a replica whose
    /// replay is stuck keeps its last value, so the bytes bound is the one that catches it).
    pub replay_lag: Option<Duration>,
    /// How many transactions old the xmin horizon may be: the oldest snapshot or transaction
    /// id of any session (`backend_xmin`, `backend_xid` of `pg_stat_activity`, autovacuum
    /// excluded: vacuum ignores its own kind), replication slot (`xmin`) or prepared
    /// transaction. A slot's `catalog_xmin` is left out: it holds back only the catalogs'
    /// vacuum, not the tables the backfill dirties.
    pub xmin_age: Option<u32>,
    /// How long the oldest transaction that holds a snapshot or a transaction id may have been
    /// open (`xact_start` of `pg_stat_activity`).
    pub oldest_transaction: Option<Duration>,
    /// The most WAL the whole server may write per second, measured between two checks from
    /// `pg_current_wal_lsn()`.
    pub wal_rate: Option<u64>,
    /// The shortest time between two checks. Default 1 s.
    pub interval: Duration,
}

impl HealthBounds {
    /// No bound: the backfill runs on its duty cycle alone, as before health checks existed.
    pub fn off() -> HealthBounds {
        HealthBounds {
            replay_lag_bytes: None,
            replay_lag: None,
            xmin_age: None,
            oldest_transaction: None,
            wal_rate: None,
            ..HealthBounds::default()
        }
    }

    /// Whether any bound is set.
    pub fn any(&self) -> bool {
        self.replay_lag_bytes.is_some()
            || self.replay_lag.is_some()
            || self.xmin_age.is_some()
            || self.oldest_transaction.is_some()
            || self.wal_rate.is_some()
    }

    /// Sets (or with `None` removes) the replay lag bound in bytes.
    pub fn replay_lag_bytes(self, bound: impl Into<Option<u64>>) -> HealthBounds {
        HealthBounds {
            replay_lag_bytes: bound.into(),
            ..self
        }
    }

    /// Sets (or with `None` removes) the replay lag bound in time.
    pub fn replay_lag(self, bound: impl Into<Option<Duration>>) -> HealthBounds {
        HealthBounds {
            replay_lag: bound.into(),
            ..self
        }
    }

    /// Sets (or with `None` removes) the xmin horizon's age bound, in transactions.
    pub fn xmin_age(self, bound: impl Into<Option<u32>>) -> HealthBounds {
        HealthBounds {
            xmin_age: bound.into(),
            ..self
        }
    }

    /// Sets (or with `None` removes) the bound on the oldest transaction's age.
    pub fn oldest_transaction(self, bound: impl Into<Option<Duration>>) -> HealthBounds {
        HealthBounds {
            oldest_transaction: bound.into(),
            ..self
        }
    }

    /// Sets (or with `None` removes) the WAL budget, in bytes per second.
    pub fn wal_rate(self, bound: impl Into<Option<u64>>) -> HealthBounds {
        HealthBounds {
            wal_rate: bound.into(),
            ..self
        }
    }

    /// Sets the shortest time between two checks.
    pub fn interval(self, interval: Duration) -> HealthBounds {
        HealthBounds { interval, ..self }
    }
}

impl Default for HealthBounds {
    fn default() -> Self {
        HealthBounds {
            replay_lag_bytes: Some(128 << 20),
            replay_lag: Some(Duration::from_secs(5)),
            xmin_age: Some(10_000_000),
            oldest_transaction: Some(Duration::from_secs(600)),
            wal_rate: Some(64 << 20),
            interval: Duration::from_secs(1),
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
