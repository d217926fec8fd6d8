//! The accessors' SQL for every phase runs against a real table in the shape that phase
//! guarantees: before expand (old column only, new columns absent), during the migration (both),
//! and after contract (new only). A statement naming a column that does not exist yet, or any
//! more, fails here.

use pgevolve_test_support as support;

use pgevolve::__private::ModelSql;
use pgevolve::{DeployWindow, Evolve, Evolver, Phase};
use sqlx::PgPool;
use support::database;

#[derive(Evolve, Debug, Clone, PartialEq)]
#[evolve(table = "members")]
struct Member {
    #[evolve(primary_key)]
    id: i64,
    #[evolve(renamed_from = "name")]
    full_name: String,
    email: String,
    #[evolve(backfill = "lower(email)")]
    email_normalized: String,
    nickname: Option<String>,
}

/// Runs insert, update, find, select and delete of `sql` on row `id`, and returns what find read.
async fn exercise(
    pool: &PgPool,
    sql: &ModelSql,
    id: i64,
) -> (i64, String, String, String, Option<String>) {
    let bind_all = |text: &str| {
        pgevolve::__private::query(text)
            .bind(id)
            .bind(format!("Member {id}"))
            .bind(format!("M{id}@Example.COM"))
            .bind(format!("m{id}@example.com"))
            .bind(Some("nick"))
    };
    bind_all(&sql.insert)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", sql.insert));
    bind_all(&sql.update)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", sql.update));
    let row: (i64, String, String, String, Option<String>) =
        sqlx::query_as(sqlx::AssertSqlSafe(sql.find.clone()))
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", sql.find));
    sqlx::query(sqlx::AssertSqlSafe(sql.select_all.clone()))
        .fetch_all(pool)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.delete.clone()))
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    bind_all(&sql.insert).execute(pool).await.unwrap();
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_names_only_columns_that_exist() {
    let (_db, pool) = database(5).await;
    sqlx::raw_sql(
        "CREATE TABLE members (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();

    // Before expand: only `name` and `email` exist.
    let before = ModelSql::build(Member::model(), |_| Some(Phase::Pending));
    let read = exercise(&pool, &before, 1).await;
    assert_eq!(
        read,
        (
            1,
            "Member 1".into(),
            "M1@Example.COM".into(),
            "m1@example.com".into(),
            None
        )
    );

    let evolution = Evolver::new(pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<Member>()
        .boot()
        .await
        .unwrap();
    // Accessors of the booted model, mid-migration: both names, the new columns.
    let member = Member {
        id: 2,
        full_name: "Two".into(),
        email: "Two@X.org".into(),
        email_normalized: "two@x.org".into(),
        nickname: None,
    };
    member.insert(&pool).await.unwrap();
    assert_eq!(Member::find(&2, &pool).await.unwrap(), Some(member.clone()));
    for phase in [
        Phase::Expand,
        Phase::Backfill,
        Phase::Validate,
        Phase::Switch,
        Phase::Retire,
    ] {
        let sql = ModelSql::build(Member::model(), |_| Some(phase));
        let (_, full_name, _, normalized, nickname) =
            exercise(&pool, &sql, 10 + phase as i64).await;
        assert_eq!(
            full_name,
            format!("Member {}", 10 + phase as i64),
            "{phase}"
        );
        assert_eq!(nickname.as_deref(), Some("nick"), "{phase}");
        assert!(normalized.starts_with('m'), "{phase}");
    }
    // Rows written before expand read their backfill expression until the backfill reaches them.
    let legacy = Member::find(&1, &pool).await.unwrap().unwrap();
    assert_eq!(legacy.email_normalized, "m1@example.com");

    evolution.contract().await.unwrap();
    let after = ModelSql::build(Member::model(), |_| Some(Phase::Contract));
    exercise(&pool, &after, 100).await;
    let everyone = Member::fetch_all(&pool).await.unwrap();
    assert!(everyone.iter().any(|m| m == &member));
    assert_eq!(Member::delete(&2, &pool).await.unwrap(), 1);
    assert_eq!(Member::find(&2, &pool).await.unwrap(), None);
    let many: Vec<Member> = (200..210)
        .map(|id| Member {
            id,
            full_name: format!("M{id}"),
            email: "a@b.c".into(),
            email_normalized: "a@b.c".into(),
            nickname: None,
        })
        .collect();
    assert_eq!(Member::insert_many(&many, &pool).await.unwrap(), 10);
    let found = Member::select()
        .filter("{id} >= $1 AND {id} < $2")
        .bind(200i64)
        .bind(210i64)
        .order_by("{id}")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(found, many);
}
