//! Steps, their kinds, phases and content-derived ids.

use std::fmt;

use crate::spec::{CheckSpec, ColumnSpec, Fill, IndexSpec, ModelSpec};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Create the table with every column, when it does not exist.
    CreateTable,
    /// Add a nullable column (an `Option<T>` field missing from the table).
    AddNullableColumn(&'static ColumnSpec),
    /// Add a NOT NULL column filled from `backfill = "..."` or `default = "..."`.
    AddFilledColumn(&'static ColumnSpec),
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
    DropIndex(&'static str),
}

impl StepKind {
    /// The kind's name in the state store.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::CreateTable => "create_table",
            StepKind::AddNullableColumn(_) => "add_nullable_column",
            StepKind::AddFilledColumn(c) => match c.fill {
                Fill::Default(_) => "add_column_with_default",
                _ => "add_backfilled_column",
            },
            StepKind::RenameColumn(_) => "rename_column",
            StepKind::CreateIndex(_) => "create_index",
            StepKind::AddUnique(_) => "add_unique",
            StepKind::AddForeignKey(_) => "add_foreign_key",
            StepKind::AddCheck(_) => "add_check",
            StepKind::DropIndex(_) => "drop_index",
        }
    }

    /// The column the step adds, if any (index and constraint steps add none).
    pub fn column(&self) -> Option<&'static ColumnSpec> {
        match self {
            StepKind::CreateTable
            | StepKind::CreateIndex(_)
            | StepKind::AddUnique(_)
            | StepKind::AddForeignKey(_)
            | StepKind::AddCheck(_)
            | StepKind::DropIndex(_) => None,
            StepKind::AddNullableColumn(c)
            | StepKind::AddFilledColumn(c)
            | StepKind::RenameColumn(c) => Some(c),
        }
    }

    /// The phases this kind goes through, in order (without `Pending`).
    pub fn phases(&self) -> &'static [Phase] {
        match self {
            StepKind::CreateTable | StepKind::AddNullableColumn(_) => &[Phase::Expand],
            StepKind::AddFilledColumn(c) => match c.fill {
                Fill::Default(_) => &[Phase::Expand, Phase::Validate, Phase::Contract],
                _ => &[
                    Phase::Expand,
                    Phase::Backfill,
                    Phase::Validate,
                    Phase::Contract,
                ],
            },
            StepKind::RenameColumn(_) => &[
                Phase::Expand,
                Phase::Backfill,
                Phase::Validate,
                Phase::Switch,
                Phase::Retire,
                Phase::Contract,
            ],
            StepKind::CreateIndex(_) => &[Phase::Expand],
            StepKind::AddUnique(_) | StepKind::AddForeignKey(_) | StepKind::AddCheck(_) => {
                &[Phase::Expand, Phase::Validate]
            }
            StepKind::DropIndex(_) => &[Phase::Contract],
        }
    }

    /// The phase after `done`, if any (none once aborted).
    pub fn next_phase(&self, done: Phase) -> Option<Phase> {
        if done == Phase::Aborted {
            return None;
        }
        self.phases().iter().copied().find(|p| *p > done)
    }

    /// Whether boot runs this kind's expand before returning (additive, metadata-only DDL). Kinds
    /// whose expand takes long (a concurrent index build) run it in the background instead.
    pub fn expands_at_boot(&self) -> bool {
        !matches!(
            self,
            StepKind::CreateIndex(_) | StepKind::AddUnique(_) | StepKind::DropIndex(_)
        )
    }

    /// Whether the step still has work after expand (it is walked by the background task).
    pub fn has_background_work(&self) -> bool {
        self.phases().iter().any(|p| *p > Phase::Expand) || !self.expands_at_boot()
    }

    /// The phase that completes the step.
    pub fn last_phase(&self) -> Phase {
        *self.phases().last().unwrap_or(&Phase::Expand)
    }
}

/// A stable id derived from a step's content: table, column, kind and parameters. The same
/// declaration gives the same id in every build, so any instance can find a step's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(String);

impl StepId {
    pub(crate) fn for_step(model: &ModelSpec, kind: &StepKind) -> StepId {
        let mut parts: Vec<&str> = vec!["v1", kind.name(), model.schema, model.table];
        match kind {
            StepKind::CreateTable => {}
            StepKind::RenameColumn(c) => {
                parts.extend([c.renamed_from.unwrap_or_default(), c.name, c.sql_type]);
            }
            StepKind::AddNullableColumn(c) | StepKind::AddFilledColumn(c) => {
                parts.extend([c.name, c.sql_type]);
                match c.fill {
                    Fill::None => {}
                    Fill::Backfill(e) => parts.extend(["backfill", e]),
                    Fill::Default(e) => parts.extend(["default", e]),
                }
            }
            StepKind::CreateIndex(ix) => {
                parts.extend([
                    ix.name.unwrap_or_default(),
                    ix.method.as_str(),
                    if ix.unique { "unique" } else { "" },
                    ix.predicate.unwrap_or_default(),
                    "columns",
                ]);
                parts.extend(ix.columns.iter().copied());
                parts.push("include");
                parts.extend(ix.include.iter().copied());
            }
            StepKind::AddUnique(c) => parts.push(c.name),
            StepKind::AddForeignKey(c) => {
                parts.push(c.name);
                if let Some(fk) = &c.references {
                    parts.extend([
                        fk.schema.unwrap_or_default(),
                        fk.table,
                        fk.column,
                        fk.on_delete.as_sql(),
                    ]);
                }
            }
            StepKind::AddCheck(ck) => {
                parts.extend([
                    ck.name.unwrap_or_default(),
                    ck.column.unwrap_or_default(),
                    ck.expr,
                ]);
            }
            StepKind::DropIndex(name) => parts.push(name),
        }
        StepId(format!("{:016x}", fnv1a(&parts)))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    static EMAIL: ColumnSpec = ColumnSpec {
        field: "email_normalized",
        name: "email_normalized",
        sql_type: "text",
        fill: Fill::Backfill("lower(email)"),
        ..ColumnSpec::DEFAULT
    };
    const MODEL: ModelSpec = ModelSpec {
        rust_name: "User",
        table: "users",
        ..ModelSpec::DEFAULT
    };

    #[test]
    fn ids_are_stable_and_content_derived() {
        let id = StepId::for_step(&MODEL, &StepKind::AddFilledColumn(&EMAIL));
        // Pinned: changing the derivation would orphan every recorded step.
        assert_eq!(id.as_str(), "fa463a16ec1dcfaa");
        let other = ColumnSpec {
            fill: Fill::Backfill("upper(email)"),
            ..EMAIL
        };
        let other: &'static ColumnSpec = Box::leak(Box::new(other));
        assert_ne!(
            id,
            StepId::for_step(&MODEL, &StepKind::AddFilledColumn(other))
        );
    }

    #[test]
    fn phases_follow_the_fill() {
        let kind = StepKind::AddFilledColumn(&EMAIL);
        assert_eq!(kind.next_phase(Phase::Pending), Some(Phase::Expand));
        assert_eq!(kind.next_phase(Phase::Expand), Some(Phase::Backfill));
        assert_eq!(kind.next_phase(Phase::Contract), None);
        assert_eq!(Phase::parse("validate"), Some(Phase::Validate));
    }
}
