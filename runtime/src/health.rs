//! The database's health as the backfill sees it, against [`HealthBounds`]: one query per
//! check (`sql::health::sample`), at most once per interval, judged into a [`Verdict`]: go on,
//! slow down, or pause because of a [`Breach`]. The backfill (`backfill.rs`) acts on it; this
//! file only measures and judges, and logs what it cannot see.

use std::fmt;
use std::time::{Duration, Instant};

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tracing::warn;

use crate::options::HealthBounds;
use crate::sql;
use crate::telemetry;

/// One reading of the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sample {
    /// `pg_current_wal_lsn()` as bytes since `0/0`.
    pub wal_bytes: i64,
    /// Replicas streaming or catching up (`pg_stat_replication`).
    pub replicas: i64,
    /// Of those, the ones whose positions this role may not see.
    pub hidden_replicas: i64,
    /// The most WAL any visible replica has left to replay.
    pub replay_lag_bytes: Option<i64>,
    /// The largest `replay_lag`.
    pub replay_lag: Option<f64>,
    /// The `application_name` of the replica furthest behind.
    pub lagging: Option<String>,
    /// The xmin horizon's age in transactions, and what holds it.
    pub xmin_age: Option<i64>,
    pub xmin_holder: Option<String>,
    /// The oldest transaction holding a snapshot or id: seconds open, and whose.
    pub transaction_seconds: Option<f64>,
    pub transaction_holder: Option<String>,
    /// This role has `pg_read_all_stats` (or is a superuser): it sees every session.
    pub sees_all: bool,
}

impl Sample {
    async fn read(pool: &PgPool) -> sqlx::Result<Sample> {
        let row = sqlx::query(sql::health::sample()).fetch_one(pool).await?;
        Sample::from_row(&row)
    }

    fn from_row(r: &PgRow) -> sqlx::Result<Sample> {
        Ok(Sample {
            wal_bytes: r.try_get("wal_bytes")?,
            replicas: r.try_get("replicas")?,
            hidden_replicas: r.try_get("hidden")?,
            replay_lag_bytes: r.try_get("lag_bytes")?,
            replay_lag: r.try_get("lag_seconds")?,
            lagging: r.try_get("lagging")?,
            xmin_age: r.try_get("xmin_age")?,
            xmin_holder: r.try_get("xmin_holder")?,
            transaction_seconds: r.try_get("xact_seconds")?,
            transaction_holder: r.try_get("xact_holder")?,
            sees_all: r.try_get("sees_all")?,
        })
    }
}

/// What a bound is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    ReplayLagBytes,
    ReplayLag,
    XminAge,
    OldestTransaction,
    WalRate,
}

impl Signal {
    /// The reason a pause shows under: the state store's `health_pauses.reason`, the journal,
    /// the `reason` label of [`telemetry::PAUSED`].
    pub fn reason(self) -> &'static str {
        match self {
            Signal::ReplayLagBytes | Signal::ReplayLag => "replica_lag",
            Signal::XminAge | Signal::OldestTransaction => "xmin_horizon",
            Signal::WalRate => "wal_rate",
        }
    }
}

/// A bound passed: which, what was measured, against what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Breach {
    pub signal: Signal,
    /// Measured over bound (at least 1 for a breach).
    pub ratio: f64,
    /// Who: the replica, the session or slot.
    pub who: Option<String>,
    pub value: f64,
    pub bound: f64,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = |default: &str| self.who.clone().unwrap_or_else(|| default.to_string());
        match self.signal {
            Signal::ReplayLagBytes => write!(
                f,
                "replica {} has {} of WAL left to replay (bound {})",
                who("?"),
                bytes(self.value),
                bytes(self.bound)
            ),
            Signal::ReplayLag => write!(
                f,
                "a replica replays {:.1} s behind (bound {:.1} s)",
                self.value, self.bound
            ),
            Signal::XminAge => write!(
                f,
                "{} holds the xmin horizon {} transactions back (bound {})",
                who("a session"),
                self.value as i64,
                self.bound as i64
            ),
            Signal::OldestTransaction => write!(
                f,
                "{} has had a transaction open for {:.0} s (bound {:.0} s): vacuum cannot clean \
                 what the backfill dirties",
                who("a session"),
                self.value,
                self.bound
            ),
            Signal::WalRate => write!(
                f,
                "the server writes {}/s of WAL (budget {}/s)",
                bytes(self.value),
                bytes(self.bound)
            ),
        }
    }
}

/// `12.3 MiB`.
fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut n = n.max(0.0);
    let mut unit = 0;
    while n >= 1024.0 && unit < UNITS.len() - 1 {
        n /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n:.0} B")
    } else {
        format!("{n:.1} {}", UNITS[unit])
    }
}

/// What the backfill should do before its next batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Every signal below half its bound (or unknown).
    Healthy,
    /// The closest signal is past half its bound: stretch the pause after each batch by this
    /// factor (1 at half the bound, 5 at the bound).
    Slow(f64),
    /// A bound is passed: no batch until it is met again.
    Pause(Breach),
}

impl Verdict {
    /// The factor on the pause after a batch.
    pub fn slowdown(&self) -> f64 {
        match self {
            Verdict::Slow(f) => *f,
            _ => 1.0,
        }
    }
}

/// Judges a sample (and the WAL rate since the one before, when known) against the bounds.
/// The signal closest to (or furthest past) its bound decides.
pub(crate) fn judge(bounds: &HealthBounds, sample: &Sample, wal_rate: Option<f64>) -> Verdict {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let candidates = [
        (
            Signal::ReplayLagBytes,
            sample.replay_lag_bytes.map(|b| b as f64),
            bounds.replay_lag_bytes.map(|b| b as f64),
            sample.lagging.clone(),
        ),
        (
            Signal::ReplayLag,
            sample.replay_lag,
            secs(bounds.replay_lag),
            None,
        ),
        (
            Signal::XminAge,
            sample.xmin_age.map(|a| a as f64),
            bounds.xmin_age.map(f64::from),
            sample.xmin_holder.clone(),
        ),
        (
            Signal::OldestTransaction,
            sample.transaction_seconds,
            secs(bounds.oldest_transaction),
            sample.transaction_holder.clone(),
        ),
        (
            Signal::WalRate,
            wal_rate,
            bounds.wal_rate.map(|b| b as f64),
            None,
        ),
    ];
    let worst = candidates
        .into_iter()
        .filter_map(|(signal, value, bound, who)| {
            let (value, bound) = (value?, bound?);
            let ratio = if bound > 0.0 {
                value / bound
            } else if value > 0.0 {
                f64::INFINITY
            } else {
                0.0
            };
            Some(Breach {
                signal,
                ratio,
                who,
                value,
                bound,
            })
        })
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio));
    match worst {
        Some(b) if b.ratio >= 1.0 => Verdict::Pause(b),
        Some(b) if b.ratio >= 0.5 => Verdict::Slow(1.0 + 8.0 * (b.ratio - 0.5)),
        _ => Verdict::Healthy,
    }
}

/// The health checks of one backfill pass: when it last looked, the WAL position then, the
/// verdict it reached, and what it already warned about.
#[derive(Debug)]
pub(crate) struct Health {
    bounds: HealthBounds,
    /// When the last check ran, and the WAL position it read.
    last: Option<(Instant, i64)>,
    checked_at: Option<Instant>,
    verdict: Verdict,
    warned_hidden: bool,
    /// The last failure's text, so a lasting failure is logged once.
    last_error: Option<String>,
}

impl Health {
    pub fn new(bounds: HealthBounds) -> Health {
        Health {
            bounds,
            last: None,
            checked_at: None,
            verdict: Verdict::Healthy,
            warned_hidden: false,
            last_error: None,
        }
    }

    /// The verdict, checking the server first when the last check is older than the interval
    /// (never with every bound off). A failed check is logged (once per distinct error) and
    /// judged healthy: the duty cycle still holds, and the batch itself will fail if the
    /// server is gone.
    pub async fn verdict(&mut self, pool: &PgPool) -> &Verdict {
        if !self.bounds.any() {
            return &self.verdict;
        }
        let due = self
            .checked_at
            .is_none_or(|at| at.elapsed() >= self.bounds.interval);
        if !due {
            return &self.verdict;
        }
        self.checked_at = Some(Instant::now());
        match Sample::read(pool).await {
            Ok(sample) => {
                self.last_error = None;
                let now = Instant::now();
                let rate = self.last.map(|(at, wal)| {
                    (sample.wal_bytes - wal).max(0) as f64
                        / now.duration_since(at).as_secs_f64().max(1e-3)
                });
                self.last = Some((now, sample.wal_bytes));
                self.warn_hidden(&sample);
                record(&sample, rate);
                self.verdict = judge(&self.bounds, &sample, rate);
            }
            Err(e) => {
                let text = e.to_string();
                if self.last_error.as_ref() != Some(&text) {
                    warn!(error = %text, "backfill health check failed; going on without it until it works again");
                    self.last_error = Some(text);
                }
                self.verdict = Verdict::Healthy;
            }
        }
        &self.verdict
    }

    /// Logs once what this role cannot see.
    fn warn_hidden(&mut self, sample: &Sample) {
        if self.warned_hidden {
            return;
        }
        let b = &self.bounds;
        let replicas_hidden =
            sample.hidden_replicas > 0 && (b.replay_lag_bytes.is_some() || b.replay_lag.is_some());
        let sessions_hidden =
            !sample.sees_all && (b.xmin_age.is_some() || b.oldest_transaction.is_some());
        if replicas_hidden || sessions_hidden {
            self.warned_hidden = true;
            warn!(
                hidden_replicas = sample.hidden_replicas,
                other_roles_sessions_hidden = sessions_hidden,
                "backfill health checks: this role lacks pg_read_all_stats (GRANT pg_monitor TO it), so \
                 PostgreSQL hides replicas' replay positions and other roles' snapshots; the backfill \
                 checks what it can see (its own role's sessions, replication slots, prepared \
                 transactions, the WAL rate)"
            );
        }
    }
}

/// The sample's values as the health gauges.
fn record(sample: &Sample, wal_rate: Option<f64>) {
    telemetry::health(
        telemetry::REPLAY_LAG_BYTES,
        sample.replay_lag_bytes.map(|b| b as f64),
    );
    telemetry::health(telemetry::REPLAY_LAG_SECONDS, sample.replay_lag);
    telemetry::health(telemetry::XMIN_AGE, sample.xmin_age.map(|a| a as f64));
    telemetry::health(
        telemetry::OLDEST_TRANSACTION_SECONDS,
        sample.transaction_seconds,
    );
    telemetry::health(telemetry::WAL_BYTES_PER_SECOND, wal_rate);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> HealthBounds {
        HealthBounds::default()
    }

    #[test]
    fn a_quiet_server_is_healthy() {
        let sample = Sample {
            xmin_age: Some(10),
            transaction_seconds: Some(0.5),
            sees_all: true,
            ..Sample::default()
        };
        assert_eq!(judge(&bounds(), &sample, Some(1e6)), Verdict::Healthy);
    }

    #[test]
    fn replay_lag_past_its_bound_pauses_and_names_the_replica() {
        let sample = Sample {
            replicas: 1,
            replay_lag_bytes: Some(3 << 20),
            lagging: Some("standby1".into()),
            ..Sample::default()
        };
        let bounds = bounds().replay_lag_bytes(1u64 << 20);
        let Verdict::Pause(breach) = judge(&bounds, &sample, None) else {
            panic!("not paused");
        };
        assert_eq!(breach.signal.reason(), "replica_lag");
        assert_eq!(
            breach.to_string(),
            "replica standby1 has 3.0 MiB of WAL left to replay (bound 1.0 MiB)"
        );
    }

    #[test]
    fn past_half_a_bound_it_slows_down_up_to_five_times() {
        let bounds = bounds().wal_rate(100u64);
        let sample = Sample::default();
        assert_eq!(judge(&bounds, &sample, Some(40.0)), Verdict::Healthy);
        assert_eq!(judge(&bounds, &sample, Some(50.0)).slowdown(), 1.0);
        assert_eq!(judge(&bounds, &sample, Some(75.0)).slowdown(), 3.0);
        assert!(matches!(
            judge(&bounds, &sample, Some(100.0)),
            Verdict::Pause(Breach {
                signal: Signal::WalRate,
                ..
            })
        ));
    }

    #[test]
    fn the_signal_furthest_past_its_bound_decides() {
        let sample = Sample {
            xmin_age: Some(30),
            xmin_holder: Some("replication slot s".into()),
            transaction_seconds: Some(12.0),
            ..Sample::default()
        };
        let bounds = bounds()
            .xmin_age(10u32)
            .oldest_transaction(Duration::from_secs(10));
        let Verdict::Pause(breach) = judge(&bounds, &sample, None) else {
            panic!("not paused");
        };
        assert_eq!(breach.signal, Signal::XminAge);
        assert_eq!(
            breach.to_string(),
            "replication slot s holds the xmin horizon 30 transactions back (bound 10)"
        );
    }

    #[test]
    fn unknown_values_and_unset_bounds_never_pause() {
        let sample = Sample {
            replay_lag_bytes: None,
            xmin_age: Some(i64::MAX),
            ..Sample::default()
        };
        assert_eq!(
            judge(&HealthBounds::off(), &sample, Some(1e12)),
            Verdict::Healthy
        );
    }
}
