//! A label of a Rust enum (`#[derive(EvolveEnum)]`) renamed by this build, declared with
//! `#[evolve(renamed_from = "old")]` on the variant: `ALTER TYPE ... RENAME VALUE 'old' TO
//! 'new'` at contract, once every live instance acknowledged (like a dropped column).
//!
//! - **Until contract** the type has the old label only. The new build sends values of the
//!   enum as text (`__private::as_text`: a parameter typed as the enum would be checked
//!   against the labels before any SQL around it runs) and its accessors map the new label to
//!   the old one when writing and the old one to the new when reading, in SQL (`ModelSql`).
//!   Older builds write and read the old label as they always did.
//! - **Contract** renames the label in the transaction that records the phase: rows keep their
//!   value (a label is stored by its OID, `pg_enum` changes, no table is touched or locked).
//!   A statement of the new build built before that commit and run after it writes the old
//!   label, which no longer exists (`22P02`): the accessor asks the catalog and runs it again
//!   with the contract's SQL (`access::retry`).
//! - **Abort** before retire changes nothing in the catalog (there is nothing before the
//!   contract); the accessors keep mapping the label. From retire on, like every step whose
//!   contract waits for acknowledgements, it is refused.

use super::resolving::BoxFuture;
use super::{Kind, PlannedPhase, Resolving, Shown};
use crate::catalog;
use crate::error::Result;
use crate::ident::Literal;
use crate::spec::{EnumSpec, ModelSpec};
use crate::sql::{Statement, enums};
use crate::step::{Phase, StepId};

/// `(type, new label, old label)`.
pub(crate) struct RenameEnumValue(pub &'static EnumSpec, pub &'static str, pub &'static str);

impl Kind for RenameEnumValue {
    fn name(&self) -> &'static str {
        "rename_enum_value"
    }

    fn identity(&self) -> Vec<&'static str> {
        vec![self.0.schema, self.0.name, self.2, self.1]
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand, Phase::Retire, Phase::Contract]
    }

    fn plan(&self, _model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![
            PlannedPhase {
                phase: Phase::Expand,
                note: "no DDL: the new build sends the enum as text and maps the new label to the old one in SQL, \
                       and the old label read back to the new variant",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Retire,
                note: "no DDL: contract waits until every live instance acknowledged, so no build that still \
                       writes the old label is running",
                statements: Vec::new(),
            },
            PlannedPhase {
                phase: Phase::Contract,
                note: "gated (deploy window, explicit contract() or auto_contract), after every acknowledgement; \
                       one short transaction: RENAME VALUE (catalog only, locks the type, not the table)",
                statements: vec![self.contract()],
            },
        ]
    }

    fn describe(&self, _model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "rename value {} of enum type {} to {}",
            Literal(self.2),
            self.0.qualified_name(),
            Literal(self.1)
        )
    }

    fn object_name(&self, _model: &ModelSpec, _id: &StepId) -> Option<String> {
        Some(format!("{}.{}", self.0.qualified_name(), self.1))
    }

    fn aborts_without_ddl(&self) -> bool {
        true
    }

    /// The catalog says: the new label and not the old one, renamed (or created so, with a new
    /// type); the old one only, the state store says how far.
    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let (spec, new, old) = (self.0, self.1, self.2);
            let recorded = cx.recorded_phase();
            if recorded == Some(Phase::Aborted) {
                return Ok(Phase::Aborted);
            }
            let live = catalog::read_enum(&mut *cx.conn, &spec.qualified_name()).await?;
            // No type yet: it is created with the new label.
            let Some(live) = live.filter(|l| l.is_enum) else {
                return Ok(Phase::Contract);
            };
            let has = |label: &str| live.labels.iter().any(|l| l == label);
            match (has(old), has(new)) {
                (false, true) => Ok(Phase::Contract),
                (true, false) => Ok(match recorded {
                    Some(p) if p < Phase::Contract => p,
                    _ => Phase::Pending,
                }),
                (true, true) => {
                    cx.problems.add(
                        None,
                        format!(
                            "enum type {} has both {} and {}, which `{}` renames to it, so the rename cannot run; \
                             if no row holds {} and no running build writes it, leave the old label (PostgreSQL cannot \
                             drop it) and remove `renamed_from` from the variant",
                            spec.qualified_name(),
                            Literal(old),
                            Literal(new),
                            spec.rust_name,
                            Literal(old),
                        ),
                    );
                    Ok(Phase::Pending)
                }
                (false, false) => {
                    cx.problems.add(
                        None,
                        format!(
                            "enum type {} has neither {} nor {}, which `{}` renames to it; add the label back \
                             (`ALTER TYPE {} ADD VALUE {}`), or correct `renamed_from`",
                            spec.qualified_name(),
                            Literal(old),
                            Literal(new),
                            spec.rust_name,
                            spec.qualified_name(),
                            Literal(old),
                        ),
                    );
                    Ok(Phase::Pending)
                }
            }
        })
    }
}

impl RenameEnumValue {
    fn contract(&self) -> Statement {
        enums::rename_value(self.0, self.2, self.1)
    }
}
