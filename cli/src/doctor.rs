//! `doctor`: what makes a migration slow or unsafe on this server, checked from one session.

use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Row};

use crate::error::{CliError, Reading};
use crate::store::{Store, ident};

/// The oldest PostgreSQL pgevolve runs on.
const MIN_SERVER_VERSION: i32 = 130_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

struct Check {
    name: &'static str,
    status: Status,
    detail: String,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

pub async fn doctor(
    store: &mut Store,
    options: Option<PgConnectOptions>,
    long_transaction: u64,
    max_lag: u64,
    json: bool,
) -> Result<(), CliError> {
    let mut checks = vec![
        server(store).await?,
        privileges(store).await?,
        pooler(options).await,
        long_transactions(store, long_transaction).await?,
        invalid_indexes(store).await?,
        replication(store, max_lag).await?,
        state_store(store).await?,
    ];
    checks.retain(|c| !c.detail.is_empty());
    if json {
        let out: Vec<Value> = checks
            .iter()
            .map(|c| json!({"name": c.name, "status": c.status.as_str(), "detail": c.detail}))
            .collect();
        println!("{}", json!({ "checks": out }));
    } else {
        for c in &checks {
            let mut lines = c.detail.lines();
            println!(
                "{:<4}  {:<22} {}",
                c.status.as_str(),
                c.name,
                lines.next().unwrap_or("")
            );
            for line in lines {
                println!("{:<28} {line}", "");
            }
        }
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::DoctorFailed {
            failed: failed.len(),
            names: failed.join(", "),
        })
    }
}

async fn server(store: &mut Store) -> Result<Check, CliError> {
    let (version, number, standby): (String, i32, bool) = sqlx::query_as(
        "SELECT version(), current_setting('server_version_num')::int, pg_is_in_recovery()",
    )
    .fetch_one(&mut store.conn)
    .await
    .reading("the server version")?;
    Ok(if number < MIN_SERVER_VERSION {
        check(
            "server version",
            Status::Fail,
            format!("{version}: pgevolve needs PostgreSQL 13 or later"),
        )
    } else if standby {
        check(
            "server version",
            Status::Fail,
            format!("{version}: this is a standby (in recovery); connect to the primary"),
        )
    } else {
        check("server version", Status::Ok, version)
    })
}

/// A light check of what the runtime needs (the boot makes the full one against the plan):
/// creating the state schema or using it, and owning the evolved tables (DDL needs ownership).
async fn privileges(store: &mut Store) -> Result<Check, CliError> {
    let (role, superuser, create_db, schema_exists, schema_ok): (String, bool, bool, bool, bool) =
        sqlx::query_as(
            "SELECT current_user::text, r.rolsuper, has_database_privilege(current_database(), 'CREATE'), \
             n.oid IS NOT NULL, coalesce(has_schema_privilege(n.oid, 'USAGE, CREATE'), false) \
             FROM pg_catalog.pg_roles r LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $1 \
             WHERE r.rolname = current_user",
        )
        .bind(&store.schema)
        .fetch_one(&mut store.conn)
        .await
        .reading("the role's privileges")?;
    let mut problems = Vec::new();
    if !schema_exists && !create_db {
        problems.push(format!(
            "may not create the state schema \"{}\": GRANT CREATE ON DATABASE ... TO {}, or create the schema for it",
            store.schema,
            ident(&role)
        ));
    }
    if schema_exists && !schema_ok {
        problems.push(format!(
            "lacks USAGE, CREATE on the state schema: GRANT USAGE, CREATE ON SCHEMA {} TO {}",
            ident(&store.schema),
            ident(&role)
        ));
    }
    if store.has_table("steps").await? {
        let not_owned: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT s.table_schema || '.' || s.table_name FROM {} s \
             JOIN pg_catalog.pg_namespace n ON n.nspname = s.table_schema \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.table_name \
             WHERE NOT pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY 1",
            store.table("steps")
        )))
        .fetch_all(&mut store.conn)
        .await
        .reading("the evolved tables' owners")?;
        if !not_owned.is_empty() {
            problems.push(format!(
                "does not own (nor belong to the owner of) {}: ALTER TABLE needs ownership",
                not_owned.join(", ")
            ));
        }
    }
    let who = format!(
        "role {}{}",
        role,
        if superuser { " (superuser)" } else { "" }
    );
    Ok(if problems.is_empty() {
        check(
            "privileges",
            Status::Ok,
            format!("{who}: may use the state schema and owns the evolved tables"),
        )
    } else {
        check(
            "privileges",
            Status::Fail,
            format!("{who}:\n{}", problems.join("\n")),
        )
    })
}

/// The runtime's own probe: does a second connection see the first one's session?
async fn pooler(options: Option<PgConnectOptions>) -> Check {
    let Some(options) = options else {
        return check("pooler", Status::Warn, "not checked: no URL");
    };
    match pgevolve_runtime::__private::shares_sessions(&options).await {
        Ok(None) => check(
            "pooler",
            Status::Ok,
            "sessions are kept (a direct connection, or a session pooler)",
        ),
        Ok(Some(evidence)) => check(
            "pooler",
            Status::Warn,
            format!(
                "a transaction pooler shares sessions between clients ({evidence}): give the runtime a direct \
                 connection with Evolver::direct (the leader lock and CONCURRENTLY builds need their own session)"
            ),
        ),
        Err(e) => check("pooler", Status::Warn, format!("could not probe: {e}")),
    }
}

async fn long_transactions(store: &mut Store, secs: u64) -> Result<Check, CliError> {
    let rows = sqlx::query(
        "SELECT pid, coalesce(application_name, '') AS app, coalesce(state, '') AS state, \
         extract(epoch FROM now() - xact_start)::float8 AS age, left(coalesce(query, ''), 120) AS query \
         FROM pg_catalog.pg_stat_activity WHERE xact_start < now() - make_interval(secs => $1) \
         AND pid <> pg_backend_pid() AND datname = current_database() ORDER BY xact_start",
    )
    .bind(secs as f64)
    .fetch_all(&mut store.conn)
    .await
    .reading("pg_stat_activity")?;
    if rows.is_empty() {
        return Ok(check(
            "long transactions",
            Status::Ok,
            format!("none open longer than {secs} s"),
        ));
    }
    let mut lines = vec![format!(
        "{} transaction(s) open longer than {secs} s (DDL queues behind them; CONCURRENTLY builds wait for them):",
        rows.len()
    )];
    for r in &rows {
        lines.push(format!(
            "pid {} ({}, {}, open {:.0} s): {}",
            r.try_get::<i32, _>("pid").unwrap_or_default(),
            r.try_get::<String, _>("app").unwrap_or_default(),
            r.try_get::<String, _>("state").unwrap_or_default(),
            r.try_get::<f64, _>("age").unwrap_or_default(),
            r.try_get::<String, _>("query").unwrap_or_default(),
        ));
    }
    Ok(check("long transactions", Status::Warn, lines.join("\n")))
}

async fn invalid_indexes(store: &mut Store) -> Result<Check, CliError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname || ' on ' || t.relname FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
         JOIN pg_catalog.pg_class t ON t.oid = i.indrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT i.indisvalid ORDER BY 1",
    )
    .fetch_all(&mut store.conn)
    .await
    .reading("the indexes")?;
    Ok(if names.is_empty() {
        check("invalid indexes", Status::Ok, "none")
    } else {
        check(
            "invalid indexes",
            Status::Warn,
            format!(
                "{} (left by a failed CREATE INDEX CONCURRENTLY, or being built now; pgevolve rebuilds its own at the next boot)",
                names.join(", ")
            ),
        )
    })
}

async fn replication(store: &mut Store, max_lag: u64) -> Result<Check, CliError> {
    let rows = sqlx::query(
        "SELECT coalesce(application_name, '') AS app, coalesce(client_addr::text, 'local') AS addr, \
         coalesce(state, '') AS state, extract(epoch FROM replay_lag)::float8 AS lag \
         FROM pg_catalog.pg_stat_replication ORDER BY 1",
    )
    .fetch_all(&mut store.conn)
    .await
    .reading("pg_stat_replication")?;
    if rows.is_empty() {
        return Ok(check(
            "replication lag",
            Status::Ok,
            "no replicas streaming from this server (or the role may not see them: pg_monitor)",
        ));
    }
    let mut worst = Status::Ok;
    let mut lines = Vec::new();
    for r in &rows {
        let lag: Option<f64> = r.try_get("lag").unwrap_or(None);
        if lag.is_some_and(|l| l > max_lag as f64) {
            worst = Status::Warn;
        }
        lines.push(format!(
            "{} ({}, {}): replay lag {}",
            r.try_get::<String, _>("app").unwrap_or_default(),
            r.try_get::<String, _>("addr").unwrap_or_default(),
            r.try_get::<String, _>("state").unwrap_or_default(),
            lag.map(|l| format!("{l:.1} s"))
                .unwrap_or_else(|| "unknown (idle, or the role lacks pg_monitor)".into())
        ));
    }
    Ok(check("replication lag", worst, lines.join("\n")))
}

async fn state_store(store: &mut Store) -> Result<Check, CliError> {
    if !store.has_table("steps").await? {
        return Ok(check(
            "state store",
            Status::Warn,
            format!(
                "none in schema \"{}\" yet (the first boot creates it)",
                store.schema
            ),
        ));
    }
    let version: Option<String> =
        sqlx::query_scalar("SELECT obj_description(to_regclass($1), 'pg_class')")
            .bind(store.table("steps"))
            .fetch_one(&mut store.conn)
            .await
            .reading("the state store's version")?;
    let live = store.instances(10.0).await?.len();
    Ok(check(
        "state store",
        Status::Ok,
        format!(
            "schema \"{}\", {}; {live} live instance(s)",
            store.schema,
            version.unwrap_or_else(|| "version unknown".into())
        ),
    ))
}
