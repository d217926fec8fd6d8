//! The hot table and its evolution, shared by the `hot_table` example and by
//! `benches/under_load.rs` (which includes this file with `#[path]`), so the program anyone can
//! drive under their own load and the benchmark evolve exactly the same struct.
//!
//! The target evolution of `users` has three steps (see [`STEPS`]): a NOT NULL column
//! `email_normalized` backfilled from `lower(email)`, an index on it, and `name` renamed to
//! `full_name`. [`User`] declares all three; the plain one-transaction migration
//! ([`plain_migration`]) runs the same three. A step pgevolve could not run would be listed as
//! [`Support::NotYet`], left off [`User`], and reported as not measured.

use pgevolve::Evolve;

/// `users` as the new build declares it: every step of the target evolution.
#[derive(Evolve, Debug, Clone)]
#[evolve(table = "users")]
pub struct User {
    #[evolve(primary_key)]
    pub id: i64,
    #[evolve(renamed_from = "name")]
    pub full_name: String,
    pub email: String,
    #[evolve(backfill = "lower(email)")]
    #[evolve(index)]
    pub email_normalized: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `users` before the evolution, as the old build (and the benchmark's seed) has it.
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS users (\n\
     \x20 id bigserial PRIMARY KEY,\n\
     \x20 name text NOT NULL,\n\
     \x20 email text NOT NULL,\n\
     \x20 created_at timestamptz NOT NULL DEFAULT now()\n\
     )";

/// Fills `users` with `$1` rows in one statement. The emails are mixed-case, so
/// `lower(email)` differs from `email` on every row.
pub const SEED: &str = "INSERT INTO users (name, email) \
     SELECT 'User ' || g, 'User.' || g || '@Example.COM' FROM generate_series(1, $1::bigint) g";

/// How a step of the target evolution stands in pgevolve today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// [`User`] declares it: pgevolve runs it (and the benchmark measures it).
    Declared,
    /// pgevolve has no such feature yet, so [`User`] cannot declare it; only the plain migration
    /// runs it, and the benchmark reports it as not measured.
    NotYet,
}

/// One step of the target evolution.
#[derive(Debug, Clone, Copy)]
pub struct EvolutionStep {
    /// Short name, used in reports.
    pub name: &'static str,
    /// What the step does.
    pub what: &'static str,
    /// The attribute that declares it on [`User`].
    pub attribute: &'static str,
    /// Whether [`User`] declares it.
    pub support: Support,
    /// The step's statements in the plain one-transaction migration.
    pub plain_sql: &'static [&'static str],
}

/// The target evolution, in the order the plain migration runs it.
pub const STEPS: &[EvolutionStep] = &[
    EvolutionStep {
        name: "email_normalized",
        what: "NOT NULL column email_normalized, backfilled from lower(email)",
        attribute: "#[evolve(backfill = \"lower(email)\")]",
        support: Support::Declared,
        plain_sql: &[
            "ALTER TABLE users ADD COLUMN email_normalized text",
            "UPDATE users SET email_normalized = lower(email)",
            "ALTER TABLE users ALTER COLUMN email_normalized SET NOT NULL",
        ],
    },
    EvolutionStep {
        name: "index",
        what: "index on email_normalized",
        attribute: "#[evolve(index)]",
        support: Support::Declared,
        plain_sql: &["CREATE INDEX users_email_normalized_idx ON users (email_normalized)"],
    },
    EvolutionStep {
        name: "rename",
        what: "name renamed to full_name",
        attribute: "#[evolve(renamed_from = \"name\")]",
        support: Support::Declared,
        plain_sql: &["ALTER TABLE users RENAME COLUMN name TO full_name"],
    },
];

/// Whether pgevolve's run of the evolution renames `name` to `full_name`.
pub fn pgevolve_renames() -> bool {
    STEPS
        .iter()
        .any(|s| s.name == "rename" && s.support == Support::Declared)
}

/// The plain way: every statement of every step, to run in one transaction, each with the name
/// of its step.
pub fn plain_migration() -> impl Iterator<Item = (&'static EvolutionStep, &'static str)> {
    STEPS
        .iter()
        .flat_map(|step| step.plain_sql.iter().map(move |sql| (step, *sql)))
}
