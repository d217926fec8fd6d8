//! pgevolve without a superuser: the whole lifecycle (expand, backfill, validate, switch,
//! contract) of a backfilled column, a rename, a concurrent index, a unique constraint, a
//! foreign key, a check and a new table, run as a role like the master user of Amazon RDS, as a
//! role that only owns the tables, and as a member of the role that owns them; and the
//! privilege check at boot, which names what is
//! missing with the statement that grants it, before anything is changed, enum types included
//! (`CREATE` to create one, ownership to add or rename a label).

use pgevolve_test_support as support;
#[macro_use]
#[path = "support/sqlx_enum.rs"]
mod sqlx_enum;

use pgevolve::{DeployWindow, Evolver, Phase};
use sqlx::PgPool;
use support::roles::{self, Role};
use support::{catalog_snapshot, database};

mod model {
    use pgevolve::Evolve;

    /// `posts` (see [`super::seed`]) with a rename, a backfilled column, an index, a unique
    /// constraint, a foreign key and a check.
    #[derive(Evolve)]
    #[evolve(table = "posts")]
    #[evolve(check(name = "posts_score_not_negative", expr = "score >= 0"))]
    #[allow(dead_code)]
    pub struct Post {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(renamed_from = "title")]
        pub headline: String,
        pub email: String,
        #[evolve(backfill = "lower(email)")]
        pub email_normalized: String,
        #[evolve(index)]
        pub created_at: i64,
        #[evolve(unique)]
        pub slug: String,
        #[evolve(references = "authors(id)")]
        pub author_id: i64,
        pub score: i32,
    }

    /// A table pgevolve creates, in a schema of its own, referencing `posts`.
    #[derive(Evolve)]
    #[evolve(table = "tags", schema = "shop")]
    #[allow(dead_code)]
    pub struct Tag {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(references = "public.posts(id)")]
        pub post_id: i64,
        pub label: String,
    }
}

/// Enum types: one the database has, with a label renamed and one added, and a new one.
mod enums {
    use pgevolve::{Evolve, EvolveEnum};

    #[derive(EvolveEnum, Debug, Clone, Copy, PartialEq)]
    #[evolve(type_name = "order_status")]
    #[allow(dead_code)]
    pub enum Status {
        Pending,
        #[evolve(renamed_from = "Shipped")]
        Dispatched,
        Delivered,
    }
    sqlx_enum!(Status, "order_status", {
        Pending => "Pending", Dispatched => "Dispatched", Delivered => "Delivered",
    });

    #[derive(EvolveEnum, Debug, Clone, Copy, PartialEq)]
    #[evolve(type_name = "order_priority")]
    #[allow(dead_code)]
    pub enum Priority {
        Low,
        High,
    }
    sqlx_enum!(Priority, "order_priority", { Low => "Low", High => "High" });

    /// `orders` (id, status) as it is, with a nullable column of the new type.
    #[derive(Evolve)]
    #[evolve(table = "orders")]
    #[allow(dead_code)]
    pub struct Order {
        #[evolve(primary_key)]
        pub id: i64,
        pub status: Status,
        pub priority: Option<Priority>,
    }
}

const ROWS: i64 = 5_000;

/// `authors` and `posts` in the shape before the evolution, created by `pool`'s role (which
/// owns them), with `ROWS` posts whose emails are mixed case.
async fn seed(pool: &PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE authors (id bigint PRIMARY KEY, name text NOT NULL);
         INSERT INTO authors SELECT g, 'author ' || g FROM generate_series(1, 100) g;
         CREATE TABLE posts (
             id bigint PRIMARY KEY,
             title text NOT NULL,
             email text NOT NULL,
             created_at bigint NOT NULL,
             slug text NOT NULL,
             author_id bigint NOT NULL,
             score integer NOT NULL
         );
         INSERT INTO posts
         SELECT g, 'Title ' || g, 'Writer' || g || '@Example.COM', g * 10, 'slug-' || g, 1 + g % 100, g % 7
           FROM generate_series(1, {ROWS}) g;
         ANALYZE authors; ANALYZE posts;"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// Boots both models as `role`, waits for the backfills and validations, switches the rename
/// and contracts; then checks the final shape, every row, that every step reached its last
/// phase, and that booting again changes nothing.
async fn run_the_whole_lifecycle(role: &Role, admin: &PgPool) {
    let evolution = Evolver::new(role.pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<model::Post>()
        .model::<model::Tag>()
        .boot()
        .await
        .unwrap_or_else(|e| panic!("boot as {}: {e}", role.name));
    evolution
        .wait()
        .await
        .unwrap_or_else(|e| panic!("backfill and validate as {}: {e}", role.name));
    evolution
        .switch()
        .await
        .unwrap_or_else(|e| panic!("switch as {}: {e}", role.name));
    evolution
        .contract()
        .await
        .unwrap_or_else(|e| panic!("contract as {}: {e}", role.name));

    let status = evolution.status().await.unwrap();
    let plans = evolution.plans();
    for step in plans.iter().flat_map(|p| &p.steps) {
        let recorded = status
            .iter()
            .find(|s| s.id == step.id)
            .unwrap_or_else(|| panic!("{} not recorded", step.describe()));
        assert_eq!(
            recorded.phase,
            step.kind.last_phase(),
            "{} as {}",
            step.describe(),
            role.name
        );
    }
    let kinds: Vec<&str> = plans
        .iter()
        .flat_map(|p| &p.steps)
        .map(|s| s.kind.name())
        .collect();
    for kind in [
        "rename_column",
        "add_backfilled_column",
        "create_index",
        "add_unique",
        "add_foreign_key",
        "add_check",
        "create_table",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    let columns = catalog_snapshot(admin, "posts").await;
    for expected in [
        "column headline text notnull=true default=",
        "column email_normalized text notnull=true default=",
        "constraint posts_author_id_fkey FOREIGN KEY (author_id) REFERENCES authors(id) validated=true",
        "constraint posts_score_not_negative CHECK ((score >= 0)) validated=true",
        "constraint posts_slug_key UNIQUE (slug) validated=true",
        "index CREATE INDEX posts_created_at_idx ON public.posts USING btree (created_at) valid=true",
    ] {
        assert!(
            columns.iter().any(|c| c == expected),
            "{expected} in {columns:#?}"
        );
    }
    assert!(
        !columns.iter().any(|c| c.starts_with("column title ")),
        "the old column is dropped: {columns:#?}"
    );
    assert!(
        !columns
            .iter()
            .any(|c| c.starts_with("trigger ") || c.starts_with("function ")),
        "no helper left: {columns:#?}"
    );
    let (rows, wrong): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE email_normalized IS DISTINCT FROM lower(email) \
                                           OR headline IS DISTINCT FROM 'Title ' || id) FROM posts",
    )
    .fetch_one(admin)
    .await
    .unwrap();
    assert_eq!((rows, wrong), (ROWS, 0), "every row filled and renamed");
    let tags = catalog_snapshot(admin, "shop.tags").await;
    assert!(
        tags.iter().any(|c| c
            == "constraint tags_post_id_fkey FOREIGN KEY (post_id) REFERENCES posts(id) validated=true"),
        "{tags:#?}"
    );

    // Everything pgevolve made belongs to the role (or to a role it is a member of).
    let foreign: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text || ' owned by ' || pg_get_userbyid(c.relowner) FROM pg_class c \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname IN ('public', 'shop', 'pgevolve') AND NOT pg_has_role($1, c.relowner, 'USAGE') \
          ORDER BY 1",
    )
    .bind(&role.name)
    .fetch_all(admin)
    .await
    .unwrap();
    assert!(foreign.is_empty(), "{foreign:#?}");

    let before = (
        catalog_snapshot(admin, "posts").await,
        catalog_snapshot(admin, "shop.tags").await,
    );
    let again = Evolver::new(role.pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<model::Post>()
        .model::<model::Tag>()
        .boot()
        .await
        .unwrap_or_else(|e| panic!("second boot as {}: {e}", role.name));
    again.wait().await.unwrap();
    assert!(
        again
            .status()
            .await
            .unwrap()
            .iter()
            .all(|s| s.phase >= Phase::Expand),
        "every step still recorded"
    );
    assert_eq!(
        (
            catalog_snapshot(admin, "posts").await,
            catalog_snapshot(admin, "shop.tags").await,
        ),
        before,
        "booting again as {} changed nothing",
        role.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rds_like_master_user_runs_every_phase_of_every_step_kind() {
    let (db, admin) = database(5).await;
    let master = roles::rds_master(&db, &admin).await;
    seed(&master.pool).await;
    run_the_whole_lifecycle(&master, &admin).await;
    let state_owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'pgevolve'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(
        state_owner, master.name,
        "the master user created the state schema"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_owning_only_its_tables_runs_every_phase_of_every_step_kind() {
    let (db, admin) = database(5).await;
    let owner = roles::table_owner(&db, &admin).await;
    // The schema of the new table exists, created by an administrator; the role may create in
    // it, and may not create schemas.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA shop; GRANT USAGE, CREATE ON SCHEMA shop TO {};",
        owner.quoted()
    )))
    .execute(&admin)
    .await
    .unwrap();
    seed(&owner.pool).await;
    let may_create_schemas: bool =
        sqlx::query_scalar("SELECT has_database_privilege(current_database(), 'CREATE')")
            .fetch_one(&owner.pool)
            .await
            .unwrap();
    assert!(!may_create_schemas);
    run_the_whole_lifecycle(&owner, &admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_the_role_owning_the_tables_runs_every_phase_of_every_step_kind() {
    let (db, admin) = database(5).await;
    seed(&admin).await;
    // The tables, the state schema and the new table's schema belong to a group role nobody
    // logs in as; the deploying role is a member of it.
    let group = format!("{}_owners", db.name());
    let deployer = Role::create(
        &db,
        &admin,
        "deployer",
        "NOSUPERUSER NOCREATEDB NOCREATEROLE",
        &format!(
            "CREATE ROLE {group} NOLOGIN;
             GRANT {group} TO {{role}};
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;
             GRANT USAGE, CREATE ON SCHEMA public TO {group};
             ALTER TABLE posts OWNER TO {group};
             ALTER TABLE authors OWNER TO {group};
             CREATE SCHEMA pgevolve AUTHORIZATION {group};
             CREATE SCHEMA shop AUTHORIZATION {group};",
            group = roles::quoted(&group)
        ),
    )
    .await;
    run_the_whole_lifecycle(&deployer, &admin).await;
}

/// The missing privileges of a refused boot, as the statements that grant them.
fn grants_of(error: &pgevolve::Error) -> Vec<String> {
    let pgevolve::ErrorKind::PrivilegesMissing { missing, .. } = error.kind() else {
        panic!("expected missing privileges, got: {error}");
    };
    missing.iter().map(|m| m.grant.clone()).collect()
}

/// Runs `statements` as the superuser.
async fn run_as_admin(admin: &PgPool, statements: &[String]) {
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
            .execute(admin)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// The schemas of the database outside the system ones.
async fn schemas(admin: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_lacking_privileges_is_refused_with_the_grants_to_run_and_nothing_changes() {
    let (db, admin) = database(5).await;
    // The tables belong to the superuser; the role may use `public` and create nothing.
    seed(&admin).await;
    sqlx::raw_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .execute(&admin)
        .await
        .unwrap();
    let app = roles::app_user(&db, &admin).await;
    let before = (
        catalog_snapshot(&admin, "posts").await,
        catalog_snapshot(&admin, "authors").await,
        schemas(&admin).await,
    );

    let error = Evolver::new(app.pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<model::Post>()
        .model::<model::Tag>()
        .boot()
        .await
        .expect_err("the role owns nothing and may create nothing");
    println!("{error}");
    let role = app.quoted();
    let mut grants = grants_of(&error);
    grants.sort();
    let mut expected = vec![
        format!("CREATE SCHEMA \"pgevolve\" AUTHORIZATION {role};"),
        format!("ALTER TABLE \"public\".\"posts\" OWNER TO {role};"),
        format!("GRANT CREATE ON SCHEMA \"public\" TO {role};"),
        format!("CREATE SCHEMA \"shop\" AUTHORIZATION {role};"),
        format!("GRANT REFERENCES ON TABLE \"public\".\"authors\" TO {role};"),
        format!("GRANT REFERENCES ON TABLE \"public\".\"posts\" TO {role};"),
    ];
    expected.sort();
    assert_eq!(grants, expected, "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "role {role} lacks privileges this evolution needs; nothing was changed."
        )),
        "{message}"
    );
    for (grant, reason) in [
        (
            format!("ALTER TABLE \"public\".\"posts\" OWNER TO {role};"),
            "-- ownership on table \"public\".\"posts\": pgevolve alters it (",
        ),
        (
            format!("CREATE SCHEMA \"pgevolve\" AUTHORIZATION {role};"),
            "-- CREATE on database",
        ),
    ] {
        assert!(
            message
                .lines()
                .any(|l| l.contains(&grant) && l.contains(reason)),
            "{grant} with {reason} in:\n{message}"
        );
    }
    assert_eq!(
        (
            catalog_snapshot(&admin, "posts").await,
            catalog_snapshot(&admin, "authors").await,
            schemas(&admin).await,
        ),
        before,
        "a refused boot changes nothing, and creates no state schema"
    );

    // The statements the error gives are exactly what the role needs.
    run_as_admin(&admin, &grants).await;
    let evolution = Evolver::new(app.pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<model::Post>()
        .model::<model::Tag>()
        .boot()
        .await
        .unwrap_or_else(|e| panic!("boot after the grants: {e}"));
    evolution.wait().await.unwrap();
    evolution.switch().await.unwrap();
    evolution.contract().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_taking_over_from_a_superuser_is_told_the_grants_on_the_state_store_and_helpers() {
    let (db, admin) = database(5).await;
    seed(&admin).await;
    // A superuser expanded and backfilled: the state store and the helpers are its own.
    let first = Evolver::new(admin.clone())
        .deploy_window(DeployWindow::always())
        .model::<model::Post>()
        .boot()
        .await
        .unwrap();
    first.wait().await.unwrap();
    // The tables are handed over to a role that owns nothing else.
    let owner = Role::create(
        &db,
        &admin,
        "owner",
        "NOSUPERUSER NOCREATEDB NOCREATEROLE",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;
         GRANT USAGE, CREATE ON SCHEMA public TO {role};",
    )
    .await;
    let role = owner.quoted();
    run_as_admin(
        &admin,
        &[
            format!("ALTER TABLE posts OWNER TO {role}"),
            format!("ALTER TABLE authors OWNER TO {role}"),
        ],
    )
    .await;
    let before = catalog_snapshot(&admin, "posts").await;

    let error = Evolver::new(owner.pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<model::Post>()
        .boot()
        .await
        .expect_err("the state store and the helpers are the superuser's");
    println!("{error}");
    let grants = grants_of(&error);
    for table in ["acks", "instances", "journal", "steps", "verified_builds"] {
        let grant = format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE \"pgevolve\".\"{table}\" TO {role};"
        );
        assert!(grants.contains(&grant), "{grant} in {grants:#?}");
    }
    assert!(
        grants.contains(&format!(
            "GRANT USAGE ON SEQUENCE \"pgevolve\".\"journal_id_seq\" TO {role};"
        )),
        "{grants:#?}"
    );
    let helpers: Vec<&String> = grants
        .iter()
        .filter(|g| {
            g.starts_with("ALTER FUNCTION \"public\".\"pgevolve_")
                || g.starts_with("ALTER VIEW \"public\".\"pgevolve_view_")
        })
        .collect();
    // The fill and mark functions of the backfilled column, the sync function and the view of
    // the rename.
    assert_eq!(helpers.len(), 4, "{grants:#?}");
    assert_eq!(catalog_snapshot(&admin, "posts").await, before);

    run_as_admin(&admin, &grants).await;
    let evolution = Evolver::new(owner.pool.clone())
        .deploy_window(DeployWindow::always())
        .model::<model::Post>()
        .boot()
        .await
        .unwrap_or_else(|e| panic!("boot after the grants: {e}"));
    evolution.wait().await.unwrap();
    evolution.switch().await.unwrap();
    evolution.contract().await.unwrap();
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_types_need_create_on_their_schema_and_ownership_to_add_or_rename_a_label() {
    let (db, admin) = database(5).await;
    // The superuser's type; the table handed over to a role that may not create in `public`.
    sqlx::raw_sql(
        "CREATE TYPE order_status AS ENUM ('Pending', 'Shipped');
         CREATE TABLE orders (id bigint PRIMARY KEY, status order_status NOT NULL);
         INSERT INTO orders SELECT g, 'Shipped' FROM generate_series(1, 10) g;
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
    )
    .execute(&admin)
    .await
    .unwrap();
    let owner = Role::create(
        &db,
        &admin,
        "owner",
        "NOSUPERUSER NOCREATEDB NOCREATEROLE",
        "GRANT USAGE ON SCHEMA public TO {role};
         CREATE SCHEMA pgevolve AUTHORIZATION {role};
         ALTER TABLE orders OWNER TO {role};",
    )
    .await;
    let role = owner.quoted();
    let labels = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT string_agg(t.typname || ':' || e.enumlabel, ',' ORDER BY t.typname, e.enumsortorder) \
             FROM pg_type t LEFT JOIN pg_enum e ON e.enumtypid = t.oid \
             WHERE t.typname IN ('order_status', 'order_priority')",
        )
        .fetch_one(&admin)
        .await
        .unwrap()
    };
    let before = (catalog_snapshot(&admin, "orders").await, labels().await);
    let boot = || {
        Evolver::new(owner.pool.clone())
            .deploy_window(DeployWindow::always())
            .model::<enums::Order>()
            .boot()
    };

    let error = boot().await.expect_err("the type is the superuser's");
    println!("{error}");
    let mut grants = grants_of(&error);
    grants.sort();
    assert_eq!(
        grants,
        [
            format!("ALTER TYPE \"public\".\"order_status\" OWNER TO {role};"),
            format!("GRANT CREATE ON SCHEMA \"public\" TO {role};"),
        ],
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(
            "-- ownership on type \"public\".\"order_status\": pgevolve alters it (renames value 'Shipped' to \
             'Dispatched' at contract; adds value 'Delivered'; owner now:"
        ),
        "{message}"
    );
    assert!(
        message.contains("pgevolve creates enum type \"public\".\"order_priority\" there"),
        "{message}"
    );
    assert_eq!(
        (catalog_snapshot(&admin, "orders").await, labels().await),
        before,
        "a refused boot changes nothing"
    );

    run_as_admin(&admin, &grants).await;
    let evolution = boot()
        .await
        .unwrap_or_else(|e| panic!("boot after the grants: {e}"));
    evolution.wait().await.unwrap();
    evolution.contract().await.unwrap();
    assert_eq!(
        labels().await,
        "order_priority:Low,order_priority:High,order_status:Pending,order_status:Dispatched,order_status:Delivered"
    );
}
