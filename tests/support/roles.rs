//! Roles that are not superusers, for the privilege tests: one like the master user of Amazon
//! RDS, one that owns the application's tables and nothing more, and a role for the sessions
//! of the rest of the application.
#![allow(dead_code)]

use pgevolve_testkit::TestDatabase;
use sqlx::{AssertSqlSafe, PgPool};

/// The password every test role gets (the throwaway cluster trusts local connections and
/// ignores it; a `DATABASE_URL` server may need it).
pub const PASSWORD: &str = "pgevolve-test";

/// A role of one test: its name (unique on the cluster, which every test database shares) and
/// a pool connected as it.
pub struct Role {
    pub name: String,
    pub pool: PgPool,
}

impl Role {
    /// `CREATE ROLE <db>_<suffix> LOGIN PASSWORD ... <attributes>`, then `setup` with `{role}`
    /// and `{db}` replaced by the quoted role and database names, run as the superuser.
    pub async fn create(
        db: &TestDatabase,
        admin: &PgPool,
        suffix: &str,
        attributes: &str,
        setup: &str,
    ) -> Role {
        let name = format!("{}_{suffix}", db.name());
        let sql = format!(
            "CREATE ROLE {} LOGIN PASSWORD '{PASSWORD}' {attributes};\n{}",
            quoted(&name),
            setup
                .replace("{role}", &quoted(&name))
                .replace("{db}", &quoted(db.name()))
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(admin)
            .await
            .unwrap_or_else(|e| panic!("creating role {name}: {e}"));
        let pool = db.pool_as(10, &name, Some(PASSWORD)).await.unwrap();
        Role { name, pool }
    }

    /// The role named in SQL.
    pub fn quoted(&self) -> String {
        quoted(&self.name)
    }
}

pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Like the master user of an Amazon RDS or Aurora instance: not a superuser, `CREATEROLE` and
/// `CREATEDB`, member of `pg_signal_backend`, and owner of the database (RDS creates the
/// initial database owned by the master user), so it has `CREATE` on it and, from PostgreSQL
/// 15, owns `public` through `pg_database_owner`. Not a member of `pg_read_all_stats`.
pub async fn rds_master(db: &TestDatabase, admin: &PgPool) -> Role {
    Role::create(
        db,
        admin,
        "master",
        "NOSUPERUSER CREATEROLE CREATEDB",
        "GRANT pg_signal_backend TO {role};
         ALTER DATABASE {db} OWNER TO {role};
         GRANT CREATE ON SCHEMA public TO {role};",
    )
    .await
}

/// A role that owns the application's tables and nothing more: no role attributes, `CREATE`
/// on `public` (where its tables and pgevolve's helper functions and views live), and the
/// state schema created for it by an administrator (`CREATE SCHEMA pgevolve AUTHORIZATION`),
/// since it may not create schemas in the database.
pub async fn table_owner(db: &TestDatabase, admin: &PgPool) -> Role {
    Role::create(
        db,
        admin,
        "owner",
        "NOSUPERUSER NOCREATEDB NOCREATEROLE",
        "GRANT USAGE, CREATE ON SCHEMA public TO {role};
         CREATE SCHEMA pgevolve AUTHORIZATION {role};",
    )
    .await
}

/// A role for the application's other sessions: it may read and write the tables, owns
/// nothing and may not create anything.
pub async fn app_user(db: &TestDatabase, admin: &PgPool) -> Role {
    Role::create(
        db,
        admin,
        "app",
        "NOSUPERUSER NOCREATEDB NOCREATEROLE",
        "GRANT USAGE ON SCHEMA public TO {role};",
    )
    .await
}
