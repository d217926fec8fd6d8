//! pgevolve's metrics show up in the Prometheus export with the right values: after an
//! evolution whose backfill fills a seeded table, the rows filled equal the table's rows, none
//! remain, the step is at validate, every batch was timed, and nothing is paused.

use std::collections::BTreeMap;

use metrics_exporter_prometheus::PrometheusBuilder;
use pgevolve::telemetry;
use pgevolve_testkit::TestDatabase;

const ROWS: i64 = 30_000;

/// One sample of the scrape text: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect(line);
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect(kv);
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().expect(line),
            }
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {with:?}: {found:?}");
    found[0].value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_shows_in_the_prometheus_export_with_every_row_counted() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    telemetry::describe();
    let db = TestDatabase::new().await.unwrap();
    let pool = db.pool(10).await.unwrap();
    metrics_example::seed(&pool, ROWS).await.unwrap();
    let evolution = metrics_example::evolve(&pool).await.unwrap();
    let step = evolution
        .progress()
        .into_iter()
        .find(|p| p.description.contains("email_normalized"))
        .expect("the backfilled column's step")
        .step;
    let step = step.as_str();
    let table = "public.users";

    let text = handle.render();
    let samples = parse(&text);
    let of_step = [("step", step), ("table", table)];
    assert_eq!(
        value(&samples, telemetry::ROWS_FILLED, &of_step),
        ROWS as f64,
        "{text}"
    );
    assert_eq!(value(&samples, telemetry::ROWS_REMAINING, &of_step), 0.0);
    assert_eq!(
        value(&samples, telemetry::PHASE, &of_step),
        telemetry::phase_code(pgevolve::Phase::Validate)
    );
    let batches = value(
        &samples,
        &format!("{}_count", telemetry::BATCH_DURATION),
        &[("table", table)],
    );
    assert!(batches >= 2.0, "{batches} batches timed");
    let seconds = value(
        &samples,
        &format!("{}_sum", telemetry::BATCH_DURATION),
        &[("table", table)],
    );
    assert!(seconds > 0.0, "{seconds}");
    assert!(value(&samples, telemetry::BATCH_SIZE, &[("table", table)]) >= 100.0);
    for reason in telemetry::PAUSE_REASONS {
        assert_eq!(
            value(
                &samples,
                telemetry::PAUSED,
                &[("table", table), ("reason", reason)]
            ),
            0.0,
            "{reason}"
        );
    }
    assert!(
        text.contains(&format!("# HELP {} ", telemetry::ROWS_FILLED)),
        "described: {text}"
    );
    drop(evolution);
}
