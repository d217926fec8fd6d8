//! A statement of a plan, typed: its SQL, how it runs (in the phase's transaction, or alone
//! outside any transaction), and what makes it unnecessary. The engine decides from these
//! fields, never from the SQL text.

/// One statement, optionally skipped when the live catalog shows its effect is already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL text, identifiers quoted.
    pub sql: String,
    /// Skip the statement when this object exists (idempotent re-runs after a crash).
    pub unless: Option<Exists>,
    /// How the statement runs.
    pub run: Run,
    /// Whether it locks the step's table. A statement that locks only a type (`ALTER TYPE ...
    /// ADD VALUE`) does not wait for the table's long lock holders (see `executor.rs`): no
    /// application query on the table waits for it.
    pub locks_table: bool,
}

/// How a statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// In the phase's transaction, under `lock_timeout`, retried with backoff.
    InTransaction,
    /// Alone, outside any transaction block, on a dedicated connection (`CREATE INDEX
    /// CONCURRENTLY`, `DROP INDEX CONCURRENTLY`): PostgreSQL refuses these inside one.
    Concurrently,
}

/// A catalog object whose presence makes a statement unnecessary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exists {
    /// A constraint of that name on the step's table.
    Constraint(String),
    /// A schema of that name. `CREATE SCHEMA IF NOT EXISTS` checks `CREATE` on the database
    /// before it looks for the schema, so a role that may not create schemas fails on one that
    /// exists; the executor skips the statement instead. Not shown in plans: the statement
    /// does the same thing either way.
    Schema(String),
    /// A type of that qualified name (`"schema"."name"`): a `CREATE TYPE` for an enum that
    /// another table's step already created. `CREATE TYPE` has no `IF NOT EXISTS`.
    Type(String),
}

impl Statement {
    /// A statement of the phase's transaction, always run.
    pub(crate) fn always(sql: String) -> Statement {
        Statement {
            sql,
            unless: None,
            run: Run::InTransaction,
            locks_table: true,
        }
    }

    /// A statement of the phase's transaction, skipped when `exists` is there.
    pub(crate) fn unless(sql: String, exists: Exists) -> Statement {
        Statement {
            sql,
            unless: Some(exists),
            run: Run::InTransaction,
            locks_table: true,
        }
    }

    /// A statement that runs alone, outside any transaction.
    pub(crate) fn concurrently(sql: String) -> Statement {
        Statement {
            sql,
            unless: None,
            run: Run::Concurrently,
            locks_table: true,
        }
    }

    /// The same statement, marked as locking a type and no table.
    pub(crate) fn on_type_only(self) -> Statement {
        Statement {
            locks_table: false,
            ..self
        }
    }

    /// Whether it must run outside any transaction block.
    pub(crate) fn is_concurrent(&self) -> bool {
        self.run == Run::Concurrently
    }
}
