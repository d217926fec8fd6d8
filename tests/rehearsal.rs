//! The rehearsal API (`pgevolve_testkit::rehearsal`) on a model it was not written for: a
//! concurrent index plus `set_not_null` with a backfill on an existing nullable column. The
//! rehearsal of the right expectation is clean through every phase, an abort and a restart; the
//! same migration rehearsed against an expectation the backfill does not meet reports the rows
//! that differ, so a clean report means something.

use pgevolve_testkit::rehearsal::Rehearsal;

/// The build in production: `label` may be NULL.
mod v1 {
    #[derive(pgevolve::Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "parcels")]
    pub struct Parcel {
        #[evolve(primary_key)]
        pub id: i64,
        pub city: String,
        pub label: Option<String>,
        pub weight: i32,
    }
}

/// The next build: `city` indexed, `label` NOT NULL, NULLs filled with `'L' || id`.
mod v2 {
    #[derive(pgevolve::Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "parcels")]
    pub struct Parcel {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(index)]
        pub city: String,
        #[evolve(set_not_null, backfill = "'L' || id")]
        pub label: String,
        pub weight: i32,
    }
}

pgevolve_testkit::rehearsable!(v1::Parcel, key = id: i64);
pgevolve_testkit::rehearsable!(v2::Parcel, key = id: i64);

/// The old build leaves `label` NULL on every other write (and on every seeded row).
fn old(n: i64, version: u64) -> v1::Parcel {
    v1::Parcel {
        id: n,
        city: format!("city {}", version % 50),
        label: (!version.is_multiple_of(2)).then(|| format!("old {version}")),
        weight: (version % 1000) as i32,
    }
}

fn new(n: i64, version: u64) -> v2::Parcel {
    v2::Parcel {
        id: n,
        city: format!("town {}", version % 50),
        label: format!("new {version}"),
        weight: -((version % 1000) as i32),
    }
}

/// What the backfill and the fill trigger make of an old build's row: an old build's NULL is
/// filled even where the new build wrote a label before (`set_not_null` fills what is NULL).
fn filled(old: &v1::Parcel, _before: Option<&v2::Parcel>) -> v2::Parcel {
    v2::Parcel {
        id: old.id,
        city: old.city.clone(),
        label: old.label.clone().unwrap_or_else(|| format!("L{}", old.id)),
        weight: old.weight,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehearsal_of_an_index_and_set_not_null_is_clean_through_every_phase_an_abort_and_a_restart()
 {
    let report = Rehearsal::new(old, new, filled)
        .rows(5_000)
        .writers(2)
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    report.assert_clean();
    assert!(report.writes_old > 20, "{report}");
    assert!(report.writes_new > 20, "{report}");
    assert!(report.rows_checked as i64 > 5_000, "{report}");
    // Every phase was walked: the NOT NULL step through contract.
    let not_null = report
        .steps
        .iter()
        .find(|s| s.events.iter().any(|e| e == "contract done"))
        .unwrap_or_else(|| panic!("no step reached contract:\n{report}"));
    assert_eq!(not_null.phase, pgevolve::Phase::Contract, "{report}");
    for phase in [
        "expand done",
        "backfill done",
        "validate done",
        "contract done",
    ] {
        assert!(
            not_null.events.iter().any(|e| e == phase),
            "{phase} missing:\n{report}"
        );
    }
    let restart = report.restart.as_deref().unwrap_or_default();
    assert!(restart.starts_with("stopped at"), "{report}");
    // The second boot went on from the first one's checkpoint, not from the first row.
    assert!(report.resumed_from.is_some_and(|rows| rows > 0), "{report}");
    let abort = report.abort.as_ref().expect("the abort round ran");
    assert!(
        abort.hit.is_some(),
        "the abort hit a backfill under way:\n{report}"
    );
    assert!(!abort.aborted.is_empty(), "{report}");
    assert!(abort.catalog_diff.is_empty(), "{report}");
    assert!(report.longest_wait() > std::time::Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehearsal_whose_expectation_the_backfill_does_not_meet_reports_the_mismatched_rows() {
    // The backfill writes `'L' || id`; this expectation says `'l' || id`.
    let wrong = |old: &v1::Parcel, before: Option<&v2::Parcel>| v2::Parcel {
        label: old.label.clone().unwrap_or_else(|| format!("l{}", old.id)),
        ..filled(old, before)
    };
    let report = Rehearsal::new(old, new, wrong)
        .rows(2_000)
        .abort_round(false)
        .restart(false)
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert!(!report.is_clean(), "{report}");
    let mismatched: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.found.is_some())
        .collect();
    assert!(!mismatched.is_empty(), "{report}");
    assert!(
        report.problems.iter().all(|p| p.found.is_some()),
        "no row is lost, they differ:\n{report}"
    );
    // Every mismatch is a row whose label the old build left NULL: found `L<id>`, expected `l<id>`.
    for p in &mismatched {
        let found = p.found.as_deref().unwrap();
        assert!(found.contains(&format!("label: \"L{}\"", p.key)), "{found}");
        assert!(
            p.expected.contains(&format!("label: \"l{}\"", p.key)),
            "{}",
            p.expected
        );
    }
    let text = report.to_string();
    assert!(text.contains("PROBLEMS"), "{text}");
    assert!(text.contains("mismatched rows"), "{text}");
    let panic = std::panic::catch_unwind(|| report.assert_clean()).unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("the rehearsal found problems"),
        "{message}"
    );
}
