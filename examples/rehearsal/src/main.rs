//! Rehearsing a migration before it ships: `customers.name` becomes `full_name` and a new
//! `email_key` column is backfilled from `lower(email)`. The rehearsal runs the build in
//! production and the next one side by side on a throwaway server, through expand, backfill,
//! validate, switch and contract, with an abort round and a restart mid-backfill, and compares
//! every row with what was written last.
//!
//! Run with `cargo run -p rehearsal` (a throwaway PostgreSQL, or `DATABASE_URL`'s server). It
//! prints the report and exits with status 1 when a row was lost or differs.

use pgevolve_testkit::rehearsal::Rehearsal;

/// The build in production.
mod v1 {
    #[derive(pgevolve::Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "customers")]
    pub struct Customer {
        #[evolve(primary_key)]
        pub id: i64,
        pub name: String,
        pub email: String,
    }
}

/// The build about to ship.
mod v2 {
    #[derive(pgevolve::Evolve, Debug, Clone, PartialEq)]
    #[evolve(table = "customers")]
    pub struct Customer {
        #[evolve(primary_key)]
        pub id: i64,
        #[evolve(renamed_from = "name")]
        pub full_name: String,
        pub email: String,
        #[evolve(backfill = "lower(email)")]
        pub email_key: String,
    }
}

pgevolve_testkit::rehearsable!(v1::Customer, key = id: i64);
pgevolve_testkit::rehearsable!(v2::Customer, key = id: i64);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let rehearsal = Rehearsal::new(
        // How the old build writes customer `n`; `version` changes with every write.
        |n, version| v1::Customer {
            id: n,
            name: format!("Customer {n}.{version}"),
            email: format!("Customer{n}.{version}@Example.COM"),
        },
        // How the new build writes it: it computes `email_key` itself.
        |n, version| v2::Customer {
            id: n,
            full_name: format!("Client {n}.{version}"),
            email: format!("Client{n}.{version}@Example.ORG"),
            email_key: format!("client{n}.{version}@example.org"),
        },
        // What the new build must read for a row the old build wrote last: the renamed column
        // carries `name`; the backfill (or the fill trigger) computes `email_key`, unless the
        // new build wrote the row before (`before`): a value a knowing writer set is kept
        // against an old build's later updates (README, "Fill semantics").
        |old: &v1::Customer, before: Option<&v2::Customer>| v2::Customer {
            id: old.id,
            full_name: old.name.clone(),
            email: old.email.clone(),
            email_key: before.map_or_else(|| old.email.to_lowercase(), |b| b.email_key.clone()),
        },
    )
    .rows(20_000)
    .writers(2);
    match rehearsal.run().await {
        Ok(report) => {
            println!("{report}");
            if report.is_clean() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
