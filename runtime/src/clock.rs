//! Where the deploy window reads the time: [`Clock`], the system's clock, and [`PinnedClock`],
//! which starts at a chosen instant so that tests behave the same on every day of the week.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::window::Weekday;

/// The environment variable that sets the default clock when the `test-util` feature is on:
/// see [`default_clock`].
pub const NOW_ENV: &str = "PGEVOLVE_NOW";

/// Monday 2024-06-03 00:00 UTC: the week [`PinnedClock::on`] picks its days from.
const REFERENCE_MONDAY: u64 = 1_717_372_800;

/// A source of the current time, so that the window can be tested with fixed instants.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> SystemTime;
}

/// The system's clock ([`SystemTime::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that reads a chosen instant when it is made and then advances with real time, so
/// that a test's deploy window does not depend on the day it runs, while waits and timeouts
/// still see time pass.
///
/// ```
/// use pgevolve_runtime::{Clock, DeployWindow, PinnedClock, Weekday};
///
/// let saturday = PinnedClock::on(Weekday::Saturday, 12, 0);
/// let closed = DeployWindow::default().check_now(&saturday).unwrap_err();
/// assert!(closed.now.starts_with("Saturday 12:00"));
/// let parsed: PinnedClock = "friday 23:46".parse().unwrap();
/// assert!(DeployWindow::default().check_now(&parsed).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PinnedClock {
    start: SystemTime,
    origin: Instant,
}

impl PinnedClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: SystemTime) -> PinnedClock {
        PinnedClock {
            start,
            origin: Instant::now(),
        }
    }

    /// A clock that reads `day` at `hour:minute` UTC (of the week of Monday 2024-06-03) now.
    ///
    /// # Panics
    ///
    /// When `hour > 23` or `minute > 59`.
    pub fn on(day: Weekday, hour: u8, minute: u8) -> PinnedClock {
        assert!(
            hour <= 23 && minute <= 59,
            "PinnedClock::on({day}, {hour}, {minute}): the hour is 0..=23, the minute 0..=59"
        );
        let secs = REFERENCE_MONDAY
            + u64::from(day as u8) * 86_400
            + u64::from(hour) * 3_600
            + u64::from(minute) * 60;
        PinnedClock::starting_at(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

impl Clock for PinnedClock {
    fn now(&self) -> SystemTime {
        self.start + self.origin.elapsed()
    }
}

/// The error of [`PinnedClock::from_str`]: the text, and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseClockError(String);

impl fmt::Display for ParseClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read {:?} as an instant: expected a weekday with an optional UTC time \
             (`saturday`, `friday 23:46`) or Unix seconds after `@` (`@1764331200`)",
            self.0
        )
    }
}

impl std::error::Error for ParseClockError {}

impl FromStr for PinnedClock {
    type Err = ParseClockError;

    /// `saturday` (noon UTC), `fri 23:46` (UTC), or `@1764331200` (Unix seconds).
    fn from_str(s: &str) -> Result<PinnedClock, ParseClockError> {
        let error = || ParseClockError(s.to_string());
        let text = s.trim();
        if let Some(secs) = text.strip_prefix('@') {
            let secs: u64 = secs.trim().parse().map_err(|_| error())?;
            return Ok(PinnedClock::starting_at(
                UNIX_EPOCH + Duration::from_secs(secs),
            ));
        }
        let mut words = text.split_whitespace();
        let day: Weekday = words
            .next()
            .ok_or_else(error)?
            .parse()
            .map_err(|_| error())?;
        let (hour, minute) = match words.next() {
            None => (12, 0),
            Some(time) => {
                let (h, m) = time.split_once(':').ok_or_else(error)?;
                let hour: u8 = h.parse().map_err(|_| error())?;
                let minute: u8 = m.parse().map_err(|_| error())?;
                if hour > 23 || minute > 59 {
                    return Err(error());
                }
                (hour, minute)
            }
        };
        if words.next().is_some() {
            return Err(error());
        }
        Ok(PinnedClock::on(day, hour, minute))
    }
}

/// The clock an [`Evolver`](crate::Evolver) reads the deploy window with unless
/// [`Evolver::clock`](crate::Evolver::clock) sets one.
///
/// Normally the system's clock. With the `test-util` feature (for test builds only, like
/// tokio's), it is a [`PinnedClock`] so that a suite behaves the same on every day: the
/// environment variable `PGEVOLVE_NOW` chooses the instant (`monday`, `friday 23:46`,
/// `@1764331200`, or `system` for the real clock), and without it the clock starts on a
/// Saturday at 12:00 UTC, when the default window is closed. A test that contracts without
/// choosing its window or clock then fails every day, not only at weekends.
///
/// # Panics
///
/// With `test-util`, when `PGEVOLVE_NOW` is set to something that is not an instant.
pub fn default_clock() -> Arc<dyn Clock> {
    #[cfg(feature = "test-util")]
    {
        match std::env::var(NOW_ENV) {
            Ok(value) if value.trim().eq_ignore_ascii_case("system") => Arc::new(SystemClock),
            Ok(value) => match value.parse::<PinnedClock>() {
                Ok(clock) => Arc::new(clock),
                Err(e) => panic!("{NOW_ENV}: {e}"),
            },
            Err(_) => Arc::new(PinnedClock::on(Weekday::Saturday, 12, 0)),
        }
    }
    #[cfg(not(feature = "test-util"))]
    {
        Arc::new(SystemClock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeployWindow;

    #[test]
    fn a_pinned_clock_reads_its_weekday_and_advances() {
        let window = DeployWindow::default();
        for (day, open) in Weekday::ALL
            .into_iter()
            .zip([true, true, true, true, false, false, false])
        {
            let clock = PinnedClock::on(day, 9, 30);
            assert_eq!(window.check_now(&clock).is_ok(), open, "{day}");
            if let Err(closed) = window.check_now(&clock) {
                assert!(
                    closed.now.starts_with(&format!("{day} 09:30")),
                    "{}",
                    closed.now
                );
            }
        }
        let clock = PinnedClock::on(Weekday::Monday, 0, 0);
        let first = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(clock.now() > first);
    }

    #[test]
    fn pinned_clocks_parse_weekdays_times_and_unix_seconds() {
        let at = |s: &str| {
            s.parse::<PinnedClock>()
                .unwrap()
                .start
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(at("monday"), REFERENCE_MONDAY + 12 * 3_600);
        assert_eq!(
            at(" Fri 23:46 "),
            REFERENCE_MONDAY + 4 * 86_400 + 23 * 3_600 + 46 * 60
        );
        assert_eq!(at("@1764331200"), 1_764_331_200);
        for bad in [
            "",
            "someday",
            "friday 24:00",
            "friday 12",
            "friday 12:00 extra",
            "@-5",
        ] {
            let error = bad.parse::<PinnedClock>().unwrap_err();
            assert!(error.to_string().contains("`friday 23:46`"), "{error}");
        }
    }
}
