//! The trait `#[derive(Evolve)]` implements.

use crate::plan::Plan;
use crate::spec::ModelSpec;

/// A struct whose table pgevolve keeps in the shape the struct declares.
///
/// Derive it with `#[derive(Evolve)]`; implementing it by hand is not supported.
pub trait Evolve {
    /// The table and columns the struct declares, as the derive saw them.
    const MODEL: ModelSpec;

    /// [`Evolve::MODEL`] as a `'static` reference (the derive keeps it in a `static`).
    fn model() -> &'static ModelSpec;

    /// Every step this model can need, with each phase's exact SQL, for review before a deploy.
    ///
    /// This is the static plan: it does not look at a database. At boot the runtime skips the
    /// steps the live catalog already satisfies.
    fn plan() -> Plan {
        Plan::for_model(&Self::MODEL)
    }
}
