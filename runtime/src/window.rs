//! The deploy window: when destructive phases (contract) may run. See [`DeployWindow`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::clock::Clock;

const SECS_PER_HOUR: i64 = 3_600;
const SECS_PER_DAY: i64 = 86_400;
/// 1970-01-01 was a Thursday: index 3 with Monday as 0.
const EPOCH_WEEKDAY: i64 = 3;
/// The longest offset accepted, in minutes (real offsets are within -12:00 .. +14:00).
const MAX_OFFSET_MINUTES: i32 = 18 * 60;

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    /// Every day, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// The English name (`"Monday"`).
    pub fn name(self) -> &'static str {
        match self {
            Weekday::Monday => "Monday",
            Weekday::Tuesday => "Tuesday",
            Weekday::Wednesday => "Wednesday",
            Weekday::Thursday => "Thursday",
            Weekday::Friday => "Friday",
            Weekday::Saturday => "Saturday",
            Weekday::Sunday => "Sunday",
        }
    }

    /// Monday is 0, Sunday 6.
    fn index(self) -> u8 {
        self as u8
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of [`Weekday::from_str`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWeekdayError(String);

impl fmt::Display for ParseWeekdayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown weekday {:?}: expected Monday .. Sunday or Mon .. Sun",
            self.0
        )
    }
}

impl std::error::Error for ParseWeekdayError {}

impl FromStr for Weekday {
    type Err = ParseWeekdayError;

    /// Full English names or their first three letters, in any case (`"monday"`, `"Tue"`).
    fn from_str(s: &str) -> Result<Weekday, ParseWeekdayError> {
        let lower = s.trim().to_ascii_lowercase();
        Weekday::ALL
            .into_iter()
            .find(|d| {
                let name = d.name().to_ascii_lowercase();
                lower == name || lower == name[..3]
            })
            .ok_or_else(|| ParseWeekdayError(s.to_string()))
    }
}

/// How a window decides.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// By weekday and hour.
    Scheduled,
    /// Always open.
    Always,
    /// Open until the instant (exclusive), then back to the schedule.
    OverrideUntil { until: SystemTime, reason: String },
}

/// When destructive phases may run: a set of local weekdays and a range of local hours, in a
/// fixed offset from UTC. The default is Monday to Thursday, all day, in UTC. A local instant is
/// inside when its weekday is one of [`DeployWindow::days`] and its hour is within
/// [`DeployWindow::hours`].
///
/// Contract drops what old binaries may still use, so it should run when people are around to
/// watch it and fix what goes wrong, not on a Friday evening. A [`DeployWindow`] says on which
/// local weekdays and hours it may run; [`DeployWindow::check`] tells whether an instant is
/// inside, and if not, when the window opens next.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use pgevolve_runtime::{DeployWindow, Weekday};
///
/// // Monday to Thursday, 09:00 to 17:00 in UTC+01:00.
/// let window = DeployWindow::default()
///     .days(&[Weekday::Monday, Weekday::Tuesday, Weekday::Wednesday, Weekday::Thursday])
///     .hours(9, 17)
///     .utc_offset_minutes(60);
/// // 2024-06-07 12:00 UTC is a Friday.
/// let friday = UNIX_EPOCH + Duration::from_secs(1_717_761_600);
/// let closed = window.check(friday).unwrap_err();
/// assert_eq!(closed.opens, "opens Monday 09:00 (UTC+01:00)");
/// ```
///
/// # Time zones
///
/// The window uses a fixed offset from UTC, without a time zone database: pgevolve stays free of
/// date-time dependencies, and the rules are the same on every host whatever its `TZ`. Where
/// daylight saving time applies, the offset has to be changed when the clocks change (e.g.
/// `60` in winter and `120` in summer for Central Europe), or the hours chosen with an hour of
/// margin on each side. Crates such as `jiff` carry the zone rules if that is ever worth a
/// dependency.
///
/// # Emergencies
///
/// [`DeployWindow::override_until`] opens the window until an instant, with a reason that is
/// logged on every check it lets through; it closes by itself afterwards, so an emergency
/// setting cannot stay behind by accident. [`DeployWindow::always`] removes the restriction
/// (tests, development databases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployWindow {
    /// Bit `i` set: weekday `i` (Monday = 0) is allowed.
    days: u8,
    /// First allowed local hour, 0 ..= 23.
    start_hour: u8,
    /// First local hour no longer allowed, 1 ..= 24; below `start_hour` the range wraps midnight.
    end_hour: u8,
    utc_offset_minutes: i32,
    mode: Mode,
}

impl Default for DeployWindow {
    /// Monday to Thursday, all day, in UTC.
    fn default() -> Self {
        DeployWindow {
            days: Weekday::Monday.bit()
                | Weekday::Tuesday.bit()
                | Weekday::Wednesday.bit()
                | Weekday::Thursday.bit(),
            start_hour: 0,
            end_hour: 24,
            utc_offset_minutes: 0,
            mode: Mode::Scheduled,
        }
    }
}

impl DeployWindow {
    /// No restriction: every instant is inside (tests, development databases).
    pub fn always() -> Self {
        DeployWindow {
            mode: Mode::Always,
            ..DeployWindow::default()
        }
    }

    /// The local weekdays on which the window is open (replacing the default Monday to Thursday).
    ///
    /// # Panics
    ///
    /// When `days` is empty: a window that never opens would block contract forever; leave
    /// contract to an operator instead (no `auto_contract`).
    pub fn days(mut self, days: &[Weekday]) -> Self {
        assert!(
            !days.is_empty(),
            "DeployWindow::days: at least one weekday is needed"
        );
        self.days = days.iter().fold(0, |bits, d| bits | d.bit());
        self
    }

    /// The local hours during which the window is open on its days: from `start` (inclusive,
    /// 0 ..= 23) to `end` (exclusive, 1 ..= 24). `hours(9, 17)` is 09:00 to 16:59:59;
    /// `hours(0, 24)` is all day (the default). With `start > end` the range wraps midnight:
    /// `hours(22, 6)` is 22:00 to 05:59:59 (each hour counted on the local day it falls on, so
    /// the early hours belong to the next day, which must be allowed too).
    ///
    /// # Panics
    ///
    /// When `start > 23`, `end > 24`, or `start == end`.
    pub fn hours(mut self, start: u8, end: u8) -> Self {
        assert!(
            start <= 23 && end <= 24 && start != end,
            "DeployWindow::hours({start}, {end}): start must be 0..=23, end 0..=24, and they must differ"
        );
        self.start_hour = start;
        self.end_hour = end;
        self
    }

    /// The offset of local time from UTC, in minutes (`60` for UTC+01:00, `-300` for
    /// UTC-05:00). Fixed: see [`DeployWindow`] about daylight saving time.
    ///
    /// # Panics
    ///
    /// When the offset exceeds 18 hours either way.
    pub fn utc_offset_minutes(mut self, minutes: i32) -> Self {
        assert!(
            minutes.abs() <= MAX_OFFSET_MINUTES,
            "DeployWindow::utc_offset_minutes({minutes}): an offset is at most 18 hours"
        );
        self.utc_offset_minutes = minutes;
        self
    }

    /// Opens the window until `until` (exclusive) whatever the day and hour, for an emergency.
    /// Every check it lets through outside the schedule logs a warning with `reason`. Once
    /// `until` has passed, the schedule applies again.
    pub fn override_until(mut self, until: SystemTime, reason: &str) -> Self {
        self.mode = Mode::OverrideUntil {
            until,
            reason: reason.to_string(),
        };
        self
    }

    /// Whether `now` is inside the window.
    pub fn is_open(&self, now: SystemTime) -> bool {
        self.check(now).is_ok()
    }

    /// `Ok` when `now` is inside the window; otherwise [`Closed`], which says when it opens next.
    pub fn check(&self, now: SystemTime) -> Result<(), Closed> {
        let secs = unix_seconds(now);
        match &self.mode {
            Mode::Always => return Ok(()),
            Mode::OverrideUntil { until, reason } if now < *until => {
                if !self.scheduled_open(secs) {
                    warn!(
                        reason = %reason,
                        "deploy window overridden: running outside {}",
                        self
                    );
                }
                return Ok(());
            }
            _ => {}
        }
        if self.scheduled_open(secs) {
            return Ok(());
        }
        let next = self.next_open_after(secs);
        let (day, hour, minute) = self.local(secs);
        let (next_day, next_hour, _) = self.local(next);
        let offset = format_offset(self.utc_offset_minutes);
        Err(Closed {
            next_open: from_unix_seconds(next),
            now: format!("{day} {hour:02}:{minute:02} ({offset})"),
            opens: format!("opens {next_day} {next_hour:02}:00 ({offset})"),
            window: self.to_string(),
            wait: Duration::from_secs(u64::try_from(next - secs).unwrap_or(0)),
        })
    }

    /// [`DeployWindow::check`] at the clock's current instant.
    pub fn check_now(&self, clock: &dyn Clock) -> Result<(), Closed> {
        self.check(clock.now())
    }

    /// Weekday, hour and minute of a Unix instant in local time.
    fn local(&self, secs: i64) -> (Weekday, u8, u8) {
        let local = secs + i64::from(self.utc_offset_minutes) * 60;
        let day = local.div_euclid(SECS_PER_DAY);
        let weekday = Weekday::ALL[(day + EPOCH_WEEKDAY).rem_euclid(7) as usize];
        let in_day = local.rem_euclid(SECS_PER_DAY);
        (
            weekday,
            (in_day / SECS_PER_HOUR) as u8,
            ((in_day % SECS_PER_HOUR) / 60) as u8,
        )
    }

    /// Whether the schedule (days and hours, no override) allows a Unix instant.
    fn scheduled_open(&self, secs: i64) -> bool {
        let (day, hour, _) = self.local(secs);
        let hour_ok = if self.start_hour < self.end_hour {
            (self.start_hour..self.end_hour).contains(&hour)
        } else {
            hour >= self.start_hour || hour < self.end_hour
        };
        self.days & day.bit() != 0 && hour_ok
    }

    /// The first local hour boundary after `secs` at which the schedule is open. The schedule
    /// depends on the local weekday and hour only, so one week of hours holds the answer.
    fn next_open_after(&self, secs: i64) -> i64 {
        let offset = i64::from(self.utc_offset_minutes) * 60;
        let local = secs + offset;
        let first = (local.div_euclid(SECS_PER_HOUR) + 1) * SECS_PER_HOUR - offset;
        (0..=7 * 24)
            .map(|k| first + k * SECS_PER_HOUR)
            .find(|t| self.scheduled_open(*t))
            // Unreachable: `days` and `hours` are never empty.
            .unwrap_or(first)
    }
}

impl fmt::Display for DeployWindow {
    /// `Monday to Thursday, all day, UTC` or `Monday, Wednesday, 09:00-17:00, UTC+05:30`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mode == Mode::Always {
            return f.write_str("always open");
        }
        let days: Vec<Weekday> = Weekday::ALL
            .into_iter()
            .filter(|d| self.days & d.bit() != 0)
            .collect();
        let contiguous = days.windows(2).all(|w| w[1].index() == w[0].index() + 1);
        match days.as_slice() {
            [] => f.write_str("no day")?,
            [one] => write!(f, "{one}")?,
            all if all.len() == 7 => f.write_str("every day")?,
            [first, _, .., last] if contiguous => write!(f, "{first} to {last}")?,
            _ => {
                let names: Vec<&str> = days.iter().map(|d| d.name()).collect();
                f.write_str(&names.join(", "))?
            }
        }
        if (self.start_hour, self.end_hour) == (0, 24) {
            f.write_str(", all day")?;
        } else {
            write!(f, ", {:02}:00-{:02}:00", self.start_hour, self.end_hour)?;
        }
        write!(f, ", {}", format_offset(self.utc_offset_minutes))?;
        if let Mode::OverrideUntil { reason, .. } = &self.mode {
            write!(f, " (overridden for a while: {reason})")?;
        }
        Ok(())
    }
}

/// Outside the deploy window: what time it is locally, and when the window opens next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Closed {
    /// The next instant at which the window is open.
    pub next_open: SystemTime,
    /// How long until then (whole seconds).
    pub wait: Duration,
    /// The local time checked, like `Friday 14:05 (UTC+01:00)`.
    pub now: String,
    /// When the window opens, like `opens Monday 00:00 (UTC+01:00)`.
    pub opens: String,
    /// The window, like `Monday to Thursday, all day, UTC+01:00`.
    pub window: String,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "outside the deploy window ({}): it is {}; {}, in {}. \
             Wait for it, or override the window for an emergency",
            self.window,
            self.now,
            self.opens,
            format_wait(self.wait)
        )
    }
}

impl std::error::Error for Closed {}

/// `UTC`, `UTC+01:00`, `UTC-05:30`.
fn format_offset(minutes: i32) -> String {
    if minutes == 0 {
        return "UTC".into();
    }
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
}

/// `2 d 9 h 55 min`, `40 min`, `under a minute`.
fn format_wait(wait: Duration) -> String {
    let total = wait.as_secs() / 60;
    let (d, h, m) = (total / 1_440, (total / 60) % 24, total % 60);
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d} d"));
    }
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if parts.is_empty() {
        "under a minute".into()
    } else {
        parts.join(" ")
    }
}

/// Whole seconds since the Unix epoch, rounded down (negative before it).
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 {
                -whole - 1
            } else {
                -whole
            }
        }
    }
}

fn from_unix_seconds(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UTC instant from a civil date and time (days-from-civil, proleptic Gregorian).
    fn utc(y: i64, m: i64, d: i64, h: i64, min: i64, s: i64) -> SystemTime {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        from_unix_seconds(days * SECS_PER_DAY + h * 3_600 + min * 60 + s)
    }

    fn secs(t: SystemTime) -> i64 {
        unix_seconds(t)
    }

    #[test]
    fn civil_helper_matches_known_instants() {
        assert_eq!(secs(utc(1970, 1, 1, 0, 0, 0)), 0);
        assert_eq!(secs(utc(2000, 1, 1, 0, 0, 0)), 946_684_800);
        assert_eq!(secs(utc(2024, 6, 7, 12, 0, 0)), 1_717_761_600);
    }

    #[test]
    fn weekdays_from_unix_time() {
        let w = DeployWindow::default();
        assert_eq!(w.local(0).0, Weekday::Thursday);
        // 2024-06-03 is a Monday; 2024-06-09 a Sunday.
        assert_eq!(w.local(secs(utc(2024, 6, 3, 0, 0, 0))).0, Weekday::Monday);
        assert_eq!(
            w.local(secs(utc(2024, 6, 9, 23, 59, 59))).0,
            Weekday::Sunday
        );
        // Before the epoch: 1969-12-31 23:59:59 was a Wednesday.
        assert_eq!(w.local(-1), (Weekday::Wednesday, 23, 59));
        assert_eq!(
            unix_seconds(UNIX_EPOCH - Duration::from_millis(1)),
            -1,
            "rounds down before the epoch"
        );
    }

    #[test]
    fn default_refuses_friday_and_sunday_and_allows_tuesday() {
        let w = DeployWindow::default();
        assert!(w.check(utc(2024, 6, 4, 15, 30, 0)).is_ok(), "Tuesday");
        assert!(w.check(utc(2024, 6, 3, 0, 0, 0)).is_ok(), "Monday 00:00");
        assert!(
            w.check(utc(2024, 6, 6, 23, 59, 59)).is_ok(),
            "Thursday 23:59:59"
        );

        let friday = w.check(utc(2024, 6, 7, 0, 0, 0)).unwrap_err();
        assert_eq!(friday.next_open, utc(2024, 6, 10, 0, 0, 0));
        assert_eq!(friday.opens, "opens Monday 00:00 (UTC)");
        assert_eq!(friday.now, "Friday 00:00 (UTC)");
        assert_eq!(friday.wait, Duration::from_secs(3 * 86_400));

        let sunday = w.check(utc(2024, 6, 9, 18, 45, 10)).unwrap_err();
        assert_eq!(sunday.next_open, utc(2024, 6, 10, 0, 0, 0));
        assert_eq!(sunday.now, "Sunday 18:45 (UTC)");
        assert_eq!(sunday.wait, Duration::from_secs(5 * 3_600 + 14 * 60 + 50));
    }

    #[test]
    fn hour_boundaries() {
        let w = DeployWindow::default().hours(9, 17);
        // Tuesday 2024-06-04.
        let early = w.check(utc(2024, 6, 4, 8, 59, 59)).unwrap_err();
        assert_eq!(early.next_open, utc(2024, 6, 4, 9, 0, 0));
        assert_eq!(early.wait, Duration::from_secs(1));
        assert!(w.check(utc(2024, 6, 4, 9, 0, 0)).is_ok());
        assert!(w.check(utc(2024, 6, 4, 16, 59, 59)).is_ok());
        let late = w.check(utc(2024, 6, 4, 17, 0, 0)).unwrap_err();
        assert_eq!(late.next_open, utc(2024, 6, 5, 9, 0, 0));
        assert_eq!(late.opens, "opens Wednesday 09:00 (UTC)");
        // Thursday evening: next is Monday morning.
        let thursday = w.check(utc(2024, 6, 6, 17, 0, 0)).unwrap_err();
        assert_eq!(thursday.next_open, utc(2024, 6, 10, 9, 0, 0));
    }

    #[test]
    fn hours_that_wrap_midnight() {
        let w = DeployWindow::default().days(&Weekday::ALL).hours(22, 6);
        assert!(w.check(utc(2024, 6, 7, 22, 0, 0)).is_ok());
        assert!(w.check(utc(2024, 6, 8, 5, 59, 59)).is_ok());
        let noon = w.check(utc(2024, 6, 8, 12, 0, 0)).unwrap_err();
        assert_eq!(noon.next_open, utc(2024, 6, 8, 22, 0, 0));
        let six = w.check(utc(2024, 6, 8, 6, 0, 0)).unwrap_err();
        assert_eq!(six.next_open, utc(2024, 6, 8, 22, 0, 0));
    }

    #[test]
    fn a_positive_offset_moves_the_local_day_forward() {
        let w = DeployWindow::default().utc_offset_minutes(60);
        // Thursday 23:30 UTC is Friday 00:30 in UTC+01:00.
        let closed = w.check(utc(2024, 6, 6, 23, 30, 0)).unwrap_err();
        assert_eq!(closed.now, "Friday 00:30 (UTC+01:00)");
        assert_eq!(closed.opens, "opens Monday 00:00 (UTC+01:00)");
        // Monday 00:00 local is Sunday 23:00 UTC.
        assert_eq!(closed.next_open, utc(2024, 6, 9, 23, 0, 0));
        assert!(w.check(utc(2024, 6, 9, 23, 0, 0)).is_ok());
        assert!(w.check(utc(2024, 6, 9, 22, 59, 59)).is_err());
        // Thursday 22:59 UTC is still Thursday locally.
        assert!(w.check(utc(2024, 6, 6, 22, 59, 0)).is_ok());
    }

    #[test]
    fn a_negative_offset_moves_the_local_day_back() {
        let w = DeployWindow::default().utc_offset_minutes(-300);
        // Friday 03:00 UTC is Thursday 22:00 in UTC-05:00.
        assert!(w.check(utc(2024, 6, 7, 3, 0, 0)).is_ok());
        assert!(w.check(utc(2024, 6, 7, 4, 59, 59)).is_ok());
        assert!(w.check(utc(2024, 6, 7, 5, 0, 0)).is_err());
        // Monday 02:00 UTC is Sunday 21:00 locally; it opens at Monday 05:00 UTC.
        let closed = w.check(utc(2024, 6, 10, 2, 0, 0)).unwrap_err();
        assert_eq!(closed.now, "Sunday 21:00 (UTC-05:00)");
        assert_eq!(closed.next_open, utc(2024, 6, 10, 5, 0, 0));
        assert_eq!(closed.opens, "opens Monday 00:00 (UTC-05:00)");
    }

    #[test]
    fn half_hour_offsets_move_the_hour_boundaries() {
        let w = DeployWindow::default().hours(9, 17).utc_offset_minutes(330);
        // 09:00 in UTC+05:30 is 03:30 UTC.
        let closed = w.check(utc(2024, 6, 4, 3, 29, 0)).unwrap_err();
        assert_eq!(closed.next_open, utc(2024, 6, 4, 3, 30, 0));
        assert!(w.check(utc(2024, 6, 4, 3, 30, 0)).is_ok());
        assert!(w.check(utc(2024, 6, 4, 11, 29, 59)).is_ok());
        assert!(w.check(utc(2024, 6, 4, 11, 30, 0)).is_err());
        assert_eq!(closed.opens, "opens Tuesday 09:00 (UTC+05:30)");
    }

    #[test]
    fn configured_days() {
        let w = DeployWindow::default().days(&[Weekday::Saturday, Weekday::Tuesday]);
        assert!(w.check(utc(2024, 6, 8, 10, 0, 0)).is_ok(), "Saturday");
        let wednesday = w.check(utc(2024, 6, 5, 10, 0, 0)).unwrap_err();
        assert_eq!(wednesday.next_open, utc(2024, 6, 8, 0, 0, 0));
        let sunday = w.check(utc(2024, 6, 9, 10, 0, 0)).unwrap_err();
        assert_eq!(sunday.next_open, utc(2024, 6, 11, 0, 0, 0));
        assert_eq!(w.to_string(), "Tuesday, Saturday, all day, UTC");
    }

    #[test]
    fn always_and_overrides() {
        let friday = utc(2024, 6, 7, 12, 0, 0);
        assert!(DeployWindow::always().check(friday).is_ok());
        let w =
            DeployWindow::default().override_until(utc(2024, 6, 7, 13, 0, 0), "INC-42: disk full");
        assert!(w.check(friday).is_ok());
        assert!(w.check(utc(2024, 6, 7, 12, 59, 59)).is_ok());
        let after = w.check(utc(2024, 6, 7, 13, 0, 0)).unwrap_err();
        assert_eq!(after.next_open, utc(2024, 6, 10, 0, 0, 0));
    }

    #[test]
    fn messages() {
        let w = DeployWindow::default().utc_offset_minutes(60);
        assert_eq!(w.to_string(), "Monday to Thursday, all day, UTC+01:00");
        let closed = w.check(utc(2024, 6, 7, 13, 5, 0)).unwrap_err();
        assert_eq!(
            closed.to_string(),
            "outside the deploy window (Monday to Thursday, all day, UTC+01:00): it is Friday 14:05 \
             (UTC+01:00); opens Monday 00:00 (UTC+01:00), in 2 d 9 h 55 min. Wait for it, or \
             override the window for an emergency"
        );
        assert_eq!(
            DeployWindow::default()
                .days(&Weekday::ALL)
                .hours(9, 17)
                .to_string(),
            "every day, 09:00-17:00, UTC"
        );
        assert_eq!("tue".parse::<Weekday>(), Ok(Weekday::Tuesday));
        assert_eq!("Sunday".parse::<Weekday>(), Ok(Weekday::Sunday));
        assert!("Funday".parse::<Weekday>().is_err());
    }

    #[test]
    fn a_clock_can_be_injected() {
        use crate::clock::SystemClock;
        #[derive(Debug)]
        struct Fixed(SystemTime);
        impl Clock for Fixed {
            fn now(&self) -> SystemTime {
                self.0
            }
        }
        let w = DeployWindow::default();
        assert!(w.check_now(&Fixed(utc(2024, 6, 4, 1, 0, 0))).is_ok());
        assert!(w.check_now(&Fixed(utc(2024, 6, 8, 1, 0, 0))).is_err());
        let _ = w.check_now(&SystemClock);
    }

    #[test]
    #[should_panic(expected = "at least one weekday")]
    fn no_days_is_refused() {
        let _ = DeployWindow::default().days(&[]);
    }

    #[test]
    #[should_panic(expected = "must differ")]
    fn empty_hours_are_refused() {
        let _ = DeployWindow::default().hours(5, 5);
    }
}
