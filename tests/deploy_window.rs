//! The deploy window through the public API, as an application configures it: days, hours and
//! an offset, an injected clock, the message an operator reads when contract is refused, and the
//! emergency override. Also the calendar guard: this suite reads the window on a pinned clock
//! (a Saturday unless `PGEVOLVE_NOW` says otherwise), so a test that contracts without choosing
//! its window fails every day, not only at weekends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgevolve::{Clock, DeployWindow, SystemClock, Weekday};

/// 2024-06-03 00:00:00 UTC, a Monday.
const MONDAY: u64 = 1_717_372_800;
const HOUR: u64 = 3_600;
const DAY: u64 = 24 * HOUR;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[derive(Debug)]
struct FixedClock(SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

#[test]
fn the_default_window_is_monday_to_thursday_in_utc() {
    let window = DeployWindow::default();
    assert_eq!(window.to_string(), "Monday to Thursday, all day, UTC");
    for day in 0..4 {
        assert!(
            window.is_open(at(MONDAY + day * DAY + 12 * HOUR)),
            "day {day}"
        );
    }
    for day in 4..7 {
        let closed = window
            .check_now(&FixedClock(at(MONDAY + day * DAY + 12 * HOUR)))
            .unwrap_err();
        assert_eq!(closed.next_open, at(MONDAY + 7 * DAY));
        assert_eq!(closed.opens, "opens Monday 00:00 (UTC)");
    }
}

#[test]
fn office_hours_in_new_york_winter_time() {
    let window = DeployWindow::default()
        .days(&[Weekday::Tuesday, Weekday::Wednesday])
        .hours(10, 16)
        .utc_offset_minutes(-5 * 60);
    // Tuesday 14:59 UTC is 09:59 in UTC-05:00.
    let closed = window
        .check(at(MONDAY + DAY + 14 * HOUR + 59 * 60))
        .unwrap_err();
    assert_eq!(closed.now, "Tuesday 09:59 (UTC-05:00)");
    assert_eq!(closed.next_open, at(MONDAY + DAY + 15 * HOUR));
    assert_eq!(closed.wait, Duration::from_secs(60));
    assert!(window.is_open(at(MONDAY + DAY + 15 * HOUR)));
    assert!(window.is_open(at(MONDAY + DAY + 20 * HOUR + 59 * 60)));
    // Wednesday 21:00 UTC is 16:00 locally: closed until next Tuesday 10:00 local.
    let closed = window.check(at(MONDAY + 2 * DAY + 21 * HOUR)).unwrap_err();
    assert_eq!(closed.next_open, at(MONDAY + 8 * DAY + 15 * HOUR));
    assert_eq!(
        closed.to_string(),
        "outside the deploy window (Tuesday, Wednesday, 10:00-16:00, UTC-05:00): it is \
         Wednesday 16:00 (UTC-05:00); opens Tuesday 10:00 (UTC-05:00), in 5 d 18 h. Wait for it, \
         or override the window for an emergency"
    );
    let as_error: &dyn std::error::Error = &closed;
    assert!(
        as_error
            .to_string()
            .starts_with("outside the deploy window")
    );
}

#[test]
fn an_emergency_override_expires_by_itself() {
    let saturday = at(MONDAY + 5 * DAY + 3 * HOUR);
    let window = DeployWindow::default().override_until(
        saturday + Duration::from_secs(HOUR),
        "INC-1234: table bloat",
    );
    assert!(window.is_open(saturday));
    assert!(window.to_string().contains("INC-1234"));
    assert!(!window.is_open(saturday + Duration::from_secs(HOUR)));
    assert!(DeployWindow::always().is_open(saturday));
}

#[test]
fn weekdays_parse_from_configuration_and_the_system_clock_reads_a_window() {
    let days: Vec<Weekday> = "mon,Tue,wednesday"
        .split(',')
        .map(|d| d.parse().unwrap())
        .collect();
    assert_eq!(
        days,
        [Weekday::Monday, Weekday::Tuesday, Weekday::Wednesday]
    );
    let error = "someday".parse::<Weekday>().unwrap_err();
    assert!(error.to_string().contains("Monday .. Sunday"), "{error}");
    // The system clock works with any window: `always` is open on it, and the default window
    // (Monday to Thursday, UTC) is either open or closed on a Friday, Saturday or Sunday.
    assert!(DeployWindow::always().check_now(&SystemClock).is_ok());
    if let Err(closed) = DeployWindow::default().check_now(&SystemClock) {
        assert!(
            ["Friday ", "Saturday ", "Sunday "]
                .iter()
                .any(|day| closed.now.starts_with(day)),
            "closed on the system clock at {}",
            closed.now
        );
    }
}

/// The guard that keeps the suite calendar-free: with the `test-util` feature (on for the whole
/// test build), an `Evolver`'s default clock is pinned, to a Saturday noon UTC unless
/// `PGEVOLVE_NOW` names another instant, so the default window is closed every day the suite
/// runs, whatever the real date.
#[test]
fn the_suite_reads_the_window_on_a_clock_pinned_to_saturday_unless_pgevolve_now_is_set() {
    let clock = pgevolve::default_clock();
    match std::env::var(pgevolve::NOW_ENV) {
        Err(_) => {
            let closed = DeployWindow::default().check_now(&*clock).unwrap_err();
            assert!(closed.now.starts_with("Saturday 12:00"), "{}", closed.now);
        }
        Ok(value) if value.eq_ignore_ascii_case("system") => {}
        Ok(value) => {
            let pinned: pgevolve::PinnedClock = value.parse().unwrap();
            let drift = clock
                .now()
                .duration_since(pinned.now())
                .unwrap_or_else(|e| e.duration());
            assert!(drift < Duration::from_secs(5), "{value}: {drift:?}");
        }
    }
}

use pgevolve_test_support as support;

mod contract_in_the_window {
    use std::sync::Arc;

    use pgevolve::{Clock, DeployWindow, ErrorKind, Evolve, Evolver, PinnedClock, Weekday};
    use sqlx::PgPool;

    use super::support::database;
    use super::{DAY, FixedClock, HOUR, MONDAY, at};

    #[derive(Evolve)]
    #[evolve(table = "items")]
    #[allow(dead_code)]
    struct Item {
        #[evolve(primary_key)]
        id: i64,
        title: String,
        #[evolve(backfill = "upper(title)")]
        title_upper: String,
    }

    async fn not_null(pool: &PgPool) -> bool {
        sqlx::query_scalar("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'title_upper'")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    async fn evolver_at(pool: &PgPool, secs: u64) -> pgevolve::Evolution {
        evolver_with(pool, Arc::new(FixedClock(at(secs)))).await
    }

    async fn evolver_with(pool: &PgPool, clock: Arc<dyn Clock>) -> pgevolve::Evolution {
        let evolution = Evolver::new(pool.clone())
            .deploy_window(DeployWindow::default())
            .clock(clock)
            .model::<Item>()
            .boot()
            .await
            .unwrap();
        evolution.wait().await.unwrap();
        evolution
    }

    async fn seeded() -> (pgevolve_testkit::TestDatabase, PgPool) {
        let (db, pool) = database(5).await;
        sqlx::raw_sql(
            "CREATE TABLE items (id bigint PRIMARY KEY, title text NOT NULL);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
        )
        .execute(&pool)
        .await
        .unwrap();
        (db, pool)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contract_refuses_on_friday_and_sunday_and_runs_with_the_override() {
        let (_db, pool) = seeded().await;
        for day in [4, 6] {
            let err = evolver_at(&pool, MONDAY + day * DAY + 15 * HOUR)
                .await
                .contract()
                .await
                .unwrap_err();
            let ErrorKind::OutsideDeployWindow { closed, phase, .. } = err.kind() else {
                panic!("expected the window to refuse, got {err}");
            };
            assert_eq!(phase, "contract");
            assert_eq!(closed.next_open, at(MONDAY + 7 * DAY));
            assert!(
                err.to_string().contains("opens Monday 00:00 (UTC)"),
                "{err}"
            );
            assert!(!not_null(&pool).await, "nothing was changed on day {day}");
        }
        let friday = evolver_at(&pool, MONDAY + 4 * DAY + 15 * HOUR).await;
        friday
            .contract_overriding_window("incident 4242: disk almost full")
            .await
            .unwrap();
        assert!(not_null(&pool).await);
        let detail: String = sqlx::query_scalar(
            "SELECT detail FROM pgevolve.journal WHERE event = 'deploy window overridden'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            detail.contains("incident 4242") && detail.contains("Friday 15:00"),
            "{detail}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contract_runs_on_tuesday() {
        let (_db, pool) = seeded().await;
        evolver_at(&pool, MONDAY + DAY + 10 * HOUR)
            .await
            .contract()
            .await
            .unwrap();
        assert!(not_null(&pool).await);
        let overridden: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgevolve.journal WHERE event = 'deploy window overridden'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(overridden, 0);
    }

    /// The guard run over the week: contract under the default window, at 15:00 UTC on each
    /// day, refuses and changes nothing from Friday to Sunday and runs from Monday to Thursday.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contract_under_the_default_window_runs_monday_to_thursday_and_refuses_friday_to_sunday()
     {
        for day in Weekday::ALL {
            let (_db, pool) = seeded().await;
            let result = evolver_with(&pool, Arc::new(PinnedClock::on(day, 15, 0)))
                .await
                .contract()
                .await;
            let open = !matches!(day, Weekday::Friday | Weekday::Saturday | Weekday::Sunday);
            match result {
                Ok(()) => assert!(open, "contract ran on {day}"),
                Err(err) => {
                    assert!(!open, "contract refused on {day}: {err}");
                    assert!(
                        matches!(err.kind(), ErrorKind::OutsideDeployWindow { .. }),
                        "{err}"
                    );
                    assert!(
                        err.to_string()
                            .contains(&format!("closed now ({day} 15:00 (UTC))")),
                        "{err}"
                    );
                }
            }
            assert_eq!(not_null(&pool).await, open, "{day}");
        }
    }

    /// An evolver that chooses neither window nor clock follows the suite's pinned clock: on the
    /// default (Saturday) it refuses, whatever the real date.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contract_without_a_chosen_clock_follows_the_pinned_default_clock() {
        let (_db, pool) = seeded().await;
        let open = DeployWindow::default().is_open(pgevolve::default_clock().now());
        let evolution = Evolver::new(pool.clone())
            .model::<Item>()
            .boot()
            .await
            .unwrap();
        evolution.wait().await.unwrap();
        let result = evolution.contract().await;
        assert_eq!(result.is_ok(), open, "{result:?}");
        assert_eq!(not_null(&pool).await, open);
    }
}
