//! A plan made against the database says what each backfill will cost: the rows to fill from the
//! table's statistics, a duration at the default rate until a backfill was measured and at the
//! measured rate after, and the WAL it writes. No figure is checked against a clock.

use pgevolve_test_support as support;

use pgevolve::estimate::DEFAULT_BUSY_RATE;
use pgevolve::{BackfillOptions, Evolve, Evolver, FillRate, Phase};
use support::{database, seed_users};

#[derive(Evolve)]
#[evolve(table = "users")]
#[allow(dead_code)]
struct User {
    #[evolve(primary_key, generated)]
    id: i64,
    name: String,
    email: String,
    #[evolve(backfill = "lower(email)")]
    email_normalized: String,
}

const ROWS: i64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_shows_rows_to_fill_from_statistics_then_the_measured_rate_after_a_backfill() {
    let (_db, pool) = database(10).await;
    // No table yet: nothing to estimate.
    let plans = Evolver::new(pool.clone())
        .model::<User>()
        .plans_for_database()
        .await
        .unwrap();
    let step = plans[0]
        .steps
        .iter()
        .find(|s| s.kind.phases().contains(&Phase::Backfill))
        .expect("a backfill step");
    assert_eq!(step.estimate, None, "no table, no estimate");

    seed_users(&pool, ROWS).await;
    sqlx::query("ANALYZE users").execute(&pool).await.unwrap();
    let evolver = Evolver::new(pool.clone()).model::<User>();
    let plans = evolver.plans_for_database().await.unwrap();
    let step = plans[0]
        .steps
        .iter()
        .find(|s| s.kind.phases().contains(&Phase::Backfill))
        .unwrap();
    let estimate = step
        .estimate
        .clone()
        .expect("an estimate for an existing table");
    assert_eq!(
        estimate.rows,
        Some(ROWS as u64),
        "pg_class.reltuples after ANALYZE"
    );
    let duty = BackfillOptions::default().duty_cycle;
    assert_eq!(estimate.rate_from, FillRate::Default { duty_cycle: duty });
    assert_eq!(estimate.rate, DEFAULT_BUSY_RATE * duty);
    assert_eq!(
        estimate.seconds,
        Some(ROWS as f64 / (DEFAULT_BUSY_RATE * duty))
    );
    let pages: i64 =
        sqlx::query_scalar("SELECT relpages::int8 FROM pg_class WHERE oid = 'users'::regclass")
            .fetch_one(&pool)
            .await
            .unwrap();
    let wal = estimate.wal_bytes.expect("a WAL estimate");
    assert!(
        wal as f64 >= pages as f64 * 8192.0,
        "every row is written again, so at least the table's size: {wal} bytes for {pages} pages"
    );
    let text = plans[0].to_string();
    let line = text
        .lines()
        .find(|l| l.contains("-- cost:"))
        .unwrap_or_else(|| panic!("no cost line under the backfill in:\n{text}"));
    assert!(
        line.contains(&format!("about {ROWS} rows to fill (pg_class.reltuples)"))
            && line.contains("the default rate")
            && line.contains("MiB of WAL"),
        "{line}"
    );
    // A plan made without a database shows no cost.
    assert!(!User::plan().to_string().contains("-- cost:"));

    // After a backfill, the measured rate is used.
    let evolution = evolver.boot().await.unwrap();
    evolution.wait().await.unwrap();
    let plans = Evolver::new(pool.clone())
        .model::<User>()
        .plans_for_database()
        .await
        .unwrap();
    let estimate = plans[0]
        .steps
        .iter()
        .find_map(|s| s.estimate.clone())
        .unwrap();
    let FillRate::Measured { table, .. } = &estimate.rate_from else {
        panic!("expected the measured rate, got {:?}", estimate.rate_from);
    };
    assert_eq!(table, "public.users");
    assert!(
        estimate.rate > 0.0 && estimate.rate.is_finite(),
        "{estimate:?}"
    );
    assert!(
        plans[0]
            .to_string()
            .contains("measured on the backfill of public.users"),
        "{}",
        plans[0]
    );
}
