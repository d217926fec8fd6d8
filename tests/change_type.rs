//! Column type changes (`type_from`) through every phase while an "old build" (raw SQL on the
//! old types) and the "new build" (the generated accessors, new types) write the same rows,
//! interleaved, values the trigger would not compute: every row ends with the last value
//! written, the old column keeps exactly what old writers wrote (no round trip through `down`),
//! and the index, CHECK and default of the old column are carried to the new one. Aborts at every
//! phase before contract leave the catalog as it was and keep every write.

use pgevolve_test_support as support;

use std::time::Duration;

use pgevolve::{BackfillOptions, DdlOptions, DeployWindow, ErrorKind, Evolve, Evolver, Phase};
use sqlx::PgPool;
use support::items::*;
use support::{catalog_snapshot, database};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn type_change_with_old_and_new_writers_on_the_same_rows_keeps_every_value() {
    let (_db, pool) = database(20).await;
    seed(&pool).await;
    let log = log();
    let old: Vec<Writer> = (0..2)
        .map(|lane| old_writer(&pool, lane, log.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Item>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 300,
            max_batch_size: 1_000,
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    // What `pgevolve plan` and `status` show comes from the state store: both steps with their
    // kind and description, and every phase and the abort with their statements.
    let recorded: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT s.kind, s.description, string_agg(DISTINCT p.phase, ',' ORDER BY p.phase), \
                bool_or(p.phase = 'contract' AND p.sql LIKE '%RENAME COLUMN%') \
         FROM pgevolve.steps s JOIN pgevolve.plan p ON p.step_id = s.id \
         WHERE s.kind = 'change_type' GROUP BY 1, 2 ORDER BY 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let phases = "abort,backfill,contract,expand,retire,switch,validate";
    assert_eq!(
        recorded,
        [
            (
                "change_type".to_string(),
                "change type of column public.items.code from text to integer".to_string(),
                phases.to_string(),
                true
            ),
            (
                "change_type".to_string(),
                "change type of column public.items.qty from integer to bigint".to_string(),
                phases.to_string(),
                true
            ),
        ]
    );
    // Expand is done: the new build starts next to the old one, on the same rows.
    let new: Vec<Writer> = (2..4)
        .map(|lane| new_writer(&pool, lane, log.clone()))
        .collect();
    evolution.wait().await.unwrap();
    assert!(read_qty(&pool).contains("COALESCE"));
    evolution.switch().await.unwrap();
    assert_eq!(read_qty(&pool), format!("\"{}\"", shadow("qty")));
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Contract starts: the old build is gone by now (that is what contract is gated on). The
    // new build pauses so that both columns can be compared with the log before contract
    // (writes across the contract's commit: `new_build_writes_queued_behind_...`).
    let mut ok = stop(old).await;
    ok += stop(new).await;
    assert_both_columns_match(&pool, &log).await;
    evolution.contract().await.unwrap();
    let new: Vec<Writer> = (4..6)
        .map(|lane| new_writer(&pool, lane, log.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok += stop(new).await;
    assert!(ok > 300, "only {ok} writes");
    assert_new_columns_match(&pool, &log).await;

    let status = evolution.status().await.unwrap();
    for column in ["qty", "code"] {
        let step = status
            .iter()
            .find(|s| s.description.contains(&format!(".{column} from")))
            .unwrap();
        assert_eq!(step.phase, Phase::Contract);
        let events: Vec<&str> = step.history.iter().map(|e| e.event.as_str()).collect();
        assert!(events.contains(&"contract done"), "{events:?}");
    }
    // The old column's index, CHECK and default now belong to the new one, under their names.
    assert_contracted(&pool, "after contract").await;
    support::assert_reboot_changes_nothing::<Item>(&pool, "items").await;
}

/// The contract renames the new column the new build named until then. Statements of the new
/// build queued behind the contract's lock (a transaction holds the table until the contract
/// waits for it and writers wait behind the contract) run after its commit with the SQL of
/// retire, on the pool and inside transactions: none may fail, and every row keeps the last
/// value written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_build_writes_queued_behind_the_contract_commit_all_succeed() {
    let (_db, pool) = database(20).await;
    seed(&pool).await;
    let log = log();
    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .ddl_options(DdlOptions {
            lock_timeout: Duration::from_secs(10),
            ..DdlOptions::default()
        })
        .model::<Item>()
        .boot()
        .await
        .unwrap();
    evolution.wait().await.unwrap();
    evolution.switch().await.unwrap();
    let mut writers: Vec<Writer> = (0..3)
        .map(|lane| new_writer(&pool, lane, log.clone()))
        .collect();
    writers.extend(
        (3..6).map(|lane| new_writer_in_transactions(&pool, lane, log.clone(), &evolution)),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A transaction holds the table: the contract's ACCESS EXCLUSIVE waits for it, and the
    // writers' statements (the SQL of retire) queue behind the contract.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE items IN ROW EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let contract = tokio::spawn({
        let evolution = evolution.clone();
        async move { evolution.contract().await }
    });
    let waiting = |mode: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_locks WHERE relation = 'items'::regclass AND mode = $1 AND NOT granted",
            )
            .bind(mode)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while waiting("AccessExclusiveLock").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the contract never asked for its lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while waiting("RowExclusiveLock").await + waiting("AccessShareLock").await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no writer queued behind the contract"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holder.commit().await.unwrap();
    contract.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ok = stop(writers).await;
    assert!(ok > 100, "only {ok} writes");
    assert_new_columns_match(&pool, &log).await;
    assert_contracted(&pool, "after contract").await;
}

/// Where an abort lands.
#[derive(Debug, Clone, Copy)]
enum AbortAt {
    AfterExpand,
    MidBackfill,
    AfterValidate,
    AfterSwitch,
}

/// Abort at expand, mid-backfill, after validate and after switch while both builds write: the
/// catalog is what it was before boot, and every value written meanwhile (by either build) is
/// in the old columns, as written or as `down` gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_at_every_phase_before_contract_restores_the_catalog_and_keeps_every_write() {
    for at in [
        AbortAt::AfterExpand,
        AbortAt::MidBackfill,
        AbortAt::AfterValidate,
        AbortAt::AfterSwitch,
    ] {
        let (_db, pool) = database(10).await;
        seed(&pool).await;
        let before = catalog_snapshot(&pool, "items").await;
        let log = log();
        let slow = matches!(at, AbortAt::AfterExpand | AbortAt::MidBackfill);
        let evolution = Evolver::new(pool.clone())
            .model::<Item>()
            .backfill_options(BackfillOptions {
                initial_batch_size: if slow { 100 } else { 1_000 },
                max_batch_size: if slow { 100 } else { 5_000 },
                pause: Duration::from_millis(if slow { 20 } else { 0 }),
                ..BackfillOptions::default()
            })
            .boot()
            .await
            .unwrap();
        let old = old_writer(&pool, 0, log.clone());
        let new = new_writer(&pool, 2, log.clone());
        let qty = change_step(&evolution, "qty").await.id;
        match at {
            AbortAt::AfterExpand => {}
            AbortAt::MidBackfill => loop {
                let p = evolution
                    .progress()
                    .into_iter()
                    .find(|p| p.step == qty)
                    .unwrap();
                if p.rows_done > 300 {
                    assert!(p.phase < Phase::Backfill, "still backfilling");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            },
            AbortAt::AfterValidate => evolution.wait().await.unwrap(),
            AbortAt::AfterSwitch => evolution.switch().await.unwrap(),
        }
        let expected = match at {
            AbortAt::AfterExpand | AbortAt::MidBackfill => Phase::Expand,
            AbortAt::AfterValidate => Phase::Validate,
            AbortAt::AfterSwitch => Phase::Switch,
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        for column in ["qty", "code"] {
            let step = change_step(&evolution, column).await;
            assert_eq!(step.phase, expected, "{at:?}: {column}");
            evolution.abort(&step.id).await.unwrap();
            assert_eq!(change_step(&evolution, column).await.phase, Phase::Aborted);
        }
        assert_eq!(read_qty(&pool), "CAST(\"qty\" AS bigint)");
        // The new build goes on, on the old columns.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ok = finished(vec![old.finish().await, new.finish().await]);
        assert!(ok > 20, "{at:?}: only {ok} writes");
        assert_eq!(
            catalog_snapshot(&pool, "items").await,
            before,
            "{at:?}: catalog not restored"
        );
        assert_old_columns_match(&pool, &log, &format!("{at:?}")).await;
    }
}

#[derive(Evolve)]
#[evolve(table = "items")]
#[allow(dead_code)]
struct ItemWrongFrom {
    #[evolve(primary_key)]
    id: i64,
    name: String,
    #[evolve(type_from = "smallint")]
    qty: i64,
    code: Option<String>,
}

#[derive(Evolve)]
#[evolve(table = "items")]
#[allow(dead_code)]
struct ItemNoCast {
    #[evolve(primary_key)]
    id: i64,
    name: String,
    #[evolve(type_from = "integer", sql_type = "date")]
    qty: String,
    code: Option<String>,
}

async fn drift_of(evolver: Evolver) -> Vec<String> {
    let err = evolver.boot().await.expect_err("drift must stop the boot");
    let ErrorKind::Drift(problems) = err.kind() else {
        panic!("expected drift, got {err}")
    };
    problems.iter().map(|p| p.to_string()).collect()
}

/// A `type_from` that is not the column's type, and a conversion PostgreSQL cannot do without
/// `using`, are drift at boot, before any DDL.
#[tokio::test]
async fn a_wrong_type_from_or_a_conversion_that_does_not_work_is_drift_and_nothing_changes() {
    let (_db, pool) = database(5).await;
    seed(&pool).await;
    let before = catalog_snapshot(&pool, "items").await;
    let messages = drift_of(Evolver::new(pool.clone()).model::<ItemWrongFrom>()).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].starts_with("public.items.qty: the column has type `integer`, not `smallint`"),
        "{messages:#?}"
    );
    // PostgreSQL has no cast from integer to date: `using` must say how.
    let messages = drift_of(Evolver::new(pool.clone()).model::<ItemNoCast>()).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0]
            .contains("the conversion of field `qty` from `integer` to `date` does not work")
            && messages[0].contains("cannot cast type integer to date")
            && messages[0].contains("give `using"),
        "{messages:#?}"
    );
    assert_eq!(catalog_snapshot(&pool, "items").await, before);
}

#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "labels")]
pub struct Label {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(type_from = "varchar(20)")]
    pub label: String,
}

async fn seed_labels(pool: &PgPool, check: bool) {
    let check = if check {
        " CHECK (length(label) > 0)"
    } else {
        ""
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE labels (id bigint PRIMARY KEY, label varchar(20) NOT NULL{check});
         CREATE INDEX labels_label_idx ON labels (label);
         INSERT INTO labels SELECT g, 'label ' || g FROM generate_series(1, 200000) g;
         ANALYZE labels;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

async fn files(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT pg_relation_filenode('labels')::int8, pg_relation_filenode('labels_label_idx')::int8",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// `varchar(20)` to `text`: one `ALTER COLUMN ... TYPE` at boot, while the old build writes;
/// the table and its index keep their files (nothing rewritten or rebuilt), and both builds
/// read and write the column as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_postgresql_makes_without_rewrite_is_done_in_place_at_boot() {
    let (_db, pool) = database(10).await;
    seed_labels(&pool, false).await;
    let before = files(&pool).await;
    let plan = Label::plan();
    let step = &plan.steps[1];
    assert_eq!(step.kind.name(), "change_type_in_place");
    assert!(step.describe().contains("in place"), "{}", step.describe());
    let writes = support::writers_with(
        &pool,
        2,
        1_000,
        "INSERT INTO labels (id, label) VALUES (1000000 + $2, left($1, 20))",
        "UPDATE labels SET label = left($1, 20) WHERE id = $2",
    );
    let evolution = Evolver::new(pool.clone())
        .model::<Label>()
        .boot()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stats = writes.finish().await;
    assert_eq!(
        stats.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "old build writes failed: {:?}",
        stats.first_error.lock().unwrap()
    );
    assert!(stats.ok.load(std::sync::atomic::Ordering::Relaxed) > 10);
    let status = evolution.status().await.unwrap();
    let change = status
        .iter()
        .find(|s| s.description.contains("in place"))
        .unwrap();
    assert_eq!(change.phase, Phase::Expand);
    // Recorded for `pgevolve plan`: the one statement of its expand.
    let recorded: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.phase, p.sql FROM pgevolve.steps s JOIN pgevolve.plan p ON p.step_id = s.id \
         WHERE s.kind = 'change_type_in_place' ORDER BY p.phase, p.ordinal",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        [(
            "expand".to_string(),
            "ALTER TABLE \"public\".\"labels\" ALTER COLUMN \"label\" TYPE text".to_string()
        )]
    );
    assert_eq!(files(&pool).await, before, "nothing rewritten or rebuilt");
    let catalog = catalog_snapshot(&pool, "labels").await;
    assert!(
        catalog.contains(&"column label text notnull=true default=".to_string())
            && catalog.contains(
                &"index CREATE INDEX labels_label_idx ON public.labels USING btree (label) valid=true"
                    .to_string()
            ),
        "{catalog:#?}"
    );
    let long = Label {
        id: 5_000_000,
        label: "a label longer than twenty characters".into(),
    };
    long.insert(&pool).await.unwrap();
    assert_eq!(Label::find(&long.id, &pool).await.unwrap(), Some(long));
    support::assert_reboot_changes_nothing::<Label>(&pool, "labels").await;
}

/// A CHECK on the column would be checked again, scanning the table under ACCESS EXCLUSIVE:
/// drift, and nothing changes.
#[tokio::test]
async fn an_in_place_change_under_a_check_is_drift_and_nothing_changes() {
    let (_db, pool) = database(5).await;
    seed_labels(&pool, true).await;
    let before = catalog_snapshot(&pool, "labels").await;
    let messages = drift_of(Evolver::new(pool.clone()).model::<Label>()).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].contains("constraint labels_label_check on table labels depends on the column")
            && messages[0].contains("write `using = \"label\"`"),
        "{messages:#?}"
    );
    assert_eq!(catalog_snapshot(&pool, "labels").await, before);
}

/// An old build that updates another column of a row the backfill has not reached yet: the
/// `NOT VALID` NOT NULL check applies to every row written, so the trigger gives the row its new
/// value then (before, the update failed with a check violation).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_build_updates_of_other_columns_on_rows_not_yet_backfilled_succeed() {
    let (_db, pool) = database(10).await;
    seed(&pool).await;
    let evolution = Evolver::new(pool.clone())
        .model::<Item>()
        .backfill_options(BackfillOptions {
            initial_batch_size: 10,
            max_batch_size: 10,
            pause: Duration::from_millis(200),
            ..BackfillOptions::default()
        })
        .boot()
        .await
        .unwrap();
    // The backfill walks the key upwards: the last rows are reached last.
    let (qty, done): (i64, bool) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE items SET name = 'renamed by the old build' WHERE id = {} \
         RETURNING \"{}\", true",
        support::items::ROWS,
        shadow("qty")
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(done);
    assert_eq!(qty, support::items::ROWS);
    let step = change_step(&evolution, "qty").await;
    assert!(
        step.phase < Phase::Backfill,
        "the backfill was over too soon"
    );
    evolution.abort(&step.id).await.unwrap();
}
