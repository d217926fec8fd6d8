//! Steps, their kinds, phases and content-derived ids.

use std::fmt;

use crate::spec::{CheckSpec, ColumnSpec, EnumSpec, IndexSpec};

/// A phase of a step. Recorded in the state store as the last phase a step completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Nothing has run yet.
    Pending,
    /// Additive DDL: new column, helper constraint `NOT VALID`, fill trigger, new table.
    Expand,
    /// Existing rows filled in keyset batches.
    Backfill,
    /// Helper constraint validated and the data checked.
    Validate,
    /// Reads moved to the new shape; writes still go to both (renames).
    Switch,
    /// The old shape is retired: no instance writes it any more; contract may drop it (renames).
    Retire,
    /// Destructive, gated: `SET NOT NULL`, helpers and old columns dropped. The step is done.
    Contract,
    /// Undone before contract: the schema is back to what it was. Final for this declaration.
    Aborted,
}

impl Phase {
    /// The name stored in the state store and shown in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Expand => "expand",
            Phase::Backfill => "backfill",
            Phase::Validate => "validate",
            Phase::Switch => "switch",
            Phase::Retire => "retire",
            Phase::Contract => "contract",
            Phase::Aborted => "aborted",
        }
    }

    /// Parses a name written by [`Phase::as_str`].
    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "pending" => Phase::Pending,
            "expand" => Phase::Expand,
            "backfill" => Phase::Backfill,
            "validate" => Phase::Validate,
            "switch" => Phase::Switch,
            "retire" => Phase::Retire,
            "contract" => Phase::Contract,
            "aborted" => Phase::Aborted,
            _ => return None,
        })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Create the table with every column, when it does not exist.
    CreateTable,
    /// Add a nullable column (an `Option<T>` field missing from the table).
    AddNullableColumn(&'static ColumnSpec),
    /// Add a NOT NULL column filled from `backfill = "..."` or `default = "..."`.
    AddFilledColumn(&'static ColumnSpec),
    /// Add a NOT NULL column whose value is computed in Rust
    /// (`#[evolve(backfill_with = "f", inputs(..))]`): added nullable with the mark and reset
    /// triggers, filled by walks that read the inputs, call the function and write the values
    /// back; once every live instance runs a build that knows the column, the rows still
    /// without a value are drained, the NOT NULL check added and validated; `SET NOT NULL` at
    /// contract.
    AddComputedColumn(&'static ColumnSpec),
    /// Rename a column through a new column kept in sync (`renamed_from = "..."`).
    RenameColumn(&'static ColumnSpec),
    /// Build an index with `CREATE INDEX CONCURRENTLY`, in the background (`#[evolve(index)]`,
    /// or `index(...)` on the struct). The build runs outside any transaction with
    /// `lock_timeout = 0` and `statement_timeout = 0` (see [`DdlOptions::lock_timeout`]); an
    /// INVALID index of the same name is dropped concurrently first, a valid one with the same
    /// definition is adopted.
    ///
    /// [`DdlOptions::lock_timeout`]: crate::DdlOptions::lock_timeout
    CreateIndex(&'static IndexSpec),
    /// A unique constraint on one column (`#[evolve(unique)]`): a unique index built
    /// concurrently in the background, then attached with `ADD CONSTRAINT ... UNIQUE USING INDEX`.
    AddUnique(&'static ColumnSpec),
    /// A foreign key from one column (`references = "table(column)"`): added `NOT VALID` at
    /// boot, then validated in the background.
    AddForeignKey(&'static ColumnSpec),
    /// A CHECK constraint (`check = "..."`): added `NOT VALID` at boot, then validated in the
    /// background.
    AddCheck(&'static CheckSpec),
    /// Drop, with `DROP INDEX CONCURRENTLY` at contract, an index an earlier build declared and
    /// the struct no longer does. The name comes from the state store; these steps are found at
    /// contract time and are never part of a model's static plan.
    DropIndex(String),
    /// Drop a column the table has and the struct no longer maps, declared with
    /// `#[evolve(dropped("..."))]`: NOT NULL relaxed at expand (when the column has no default),
    /// retired once every live instance acknowledged, dropped at contract.
    DropColumn(&'static str),
    /// Make an existing nullable column NOT NULL (`#[evolve(set_not_null, backfill = "...")]`
    /// on a `T` field): a `CHECK (col IS NOT NULL) NOT VALID` and a trigger that fills NULL
    /// writes at expand, NULL rows filled in batches, the check validated, then after every live
    /// instance acknowledged, `SET NOT NULL` at contract without a scan.
    SetNotNull(&'static ColumnSpec),
    /// Make an existing NOT NULL column nullable (`#[evolve(drop_not_null)]` on an `Option<T>`
    /// field): NOT NULL stays, so nothing writes NULL while builds that read the column into a
    /// `T` may run, until every live instance acknowledged; `DROP NOT NULL` at contract.
    DropNotNull(&'static ColumnSpec),
    /// Change the default of an existing column (`#[evolve(set_default = "...")]`): `SET
    /// DEFAULT` at expand, metadata only.
    SetDefault(&'static ColumnSpec),
    /// Change a column's type (`type_from = "..."`) through a new column of the new type kept
    /// in sync both ways by a trigger, backfilled, validated, switched, retired, then given the
    /// old name at contract with what depended on the old column carried over.
    ChangeType(&'static ColumnSpec),
    /// Change a column's type in place (`type_from = "..."`), when PostgreSQL needs no rewrite
    /// for it (`varchar(20)` to `varchar(50)` or `text`, ...): one `ALTER COLUMN ... TYPE` at
    /// expand, under lock_timeout.
    ChangeTypeInPlace(&'static ColumnSpec),
    /// Widen an integer primary key to `bigint` (`#[evolve(primary_key, type_from =
    /// "integer")]` on an `i64` field), with every foreign key that references it: shadow
    /// `bigint` columns kept in sync both ways on the key table and on every referencing column
    /// (found in the catalog), backfilled, the shadow's unique index built concurrently, new
    /// foreign keys added `NOT VALID` and validated, then at contract the columns swapped by
    /// rename and the primary key moved with `USING INDEX`, each table in a short transaction.
    WidenKey(&'static ColumnSpec),
    /// A column that references a key this build widens (`type_from = "integer"` with
    /// `references` on an `i64` field): widened by the key's step, no DDL of its own; its
    /// accessors follow that step's phase.
    WidenReference(&'static ColumnSpec),
    /// Create a PostgreSQL enum type a column uses (`#[derive(EvolveEnum)]`) when it does not
    /// exist, with every label: a catalog change, no table locked.
    CreateEnum(&'static EnumSpec),
    /// Add a label of a Rust enum to its PostgreSQL type when the type lacks it: `ALTER TYPE
    /// ... ADD VALUE IF NOT EXISTS ... AFTER ...` at expand, in a short transaction of its own
    /// under lock_timeout that uses no value of the type. It locks the type, not a table.
    AddEnumValue(&'static EnumSpec, &'static str),
    /// Rename a label of an enum type (`#[evolve(renamed_from = "old")]` on the variant): no
    /// DDL before contract (the new build maps the label in SQL), retired once every live
    /// instance acknowledged, `ALTER TYPE ... RENAME VALUE` at contract. `(type, new, old)`.
    RenameEnumValue(&'static EnumSpec, &'static str, &'static str),
    /// Drop a table the application no longer declares
    /// ([`Evolver::dropped_table`](crate::Evolver::dropped_table)): no DDL at expand (the step is
    /// recorded, so the build is known), retired once every live instance acknowledged, so no
    /// build that still uses the table runs; `DROP TABLE` (without `CASCADE`) at contract.
    DropTable,
    /// Rename the table (`#[evolve(table = "new", renamed_from = "old")]`): at expand, in one
    /// short transaction, `ALTER TABLE old RENAME TO new` and an updatable view `old` over it
    /// (`security_invoker` from PostgreSQL 15) with the table's grants, so older builds keep
    /// reading and writing through the old name; retired once every live instance
    /// acknowledged; the view dropped at contract.
    RenameTable {
        /// The table's previous name.
        from: &'static str,
        /// Its new name (the model's table).
        to: &'static str,
    },
}

/// A stable id derived from a step's content: table, column, kind and parameters. The same
/// declaration gives the same id in every build, so any instance can find a step's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(String);

impl StepId {
    /// The id as stored (16 hex digits).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_stored(s: String) -> StepId {
        StepId(s)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a over the parts, each followed by a separator byte so ("ab","c") != ("a","bc"). A
/// stable, dependency-free hash: the id must never change between builds or Rust versions.
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

pub(crate) fn advisory_key(state_schema: &str) -> i64 {
    fnv1a(&["pgevolve leader", state_schema]) as i64
}

/// The advisory lock a boot holds for its drift check and expand only (seconds): boots of
/// several builds serialize their DDL on it, and never wait for the leader's background work.
pub(crate) fn boot_key(state_schema: &str) -> i64 {
    fnv1a(&["pgevolve boot", state_schema]) as i64
}
