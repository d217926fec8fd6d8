//! The phases this process knows, read by the generated accessors on every call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, RwLock};
use std::time::Duration;

use crate::step::{Phase, StepId};

/// Step phases as this process knows them, with a generation that changes on every update so
/// accessors can cache the SQL they build from them.
#[derive(Debug, Default)]
pub struct PhaseRegistry {
    phases: RwLock<HashMap<StepId, Phase>>,
    generation: AtomicU64,
    /// Accessor calls under way, by the generation whose SQL they run.
    in_flight: Mutex<BTreeMap<u64, usize>>,
}

/// An accessor call under way with the SQL of one generation; ends when dropped.
#[derive(Debug)]
pub struct InFlight {
    registry: &'static PhaseRegistry,
    generation: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self
            .registry
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_flight.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.generation);
            }
        }
    }
}

impl PhaseRegistry {
    /// The phase of a step, if an evolution of its model was booted here.
    pub fn get(&self, step: &StepId) -> Option<Phase> {
        self.phases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(step)
            .copied()
    }

    /// Records a step's phase; bumps the generation when it changed.
    pub fn set(&self, step: &StepId, phase: Phase) {
        let mut phases = self.phases.write().unwrap_or_else(|p| p.into_inner());
        if phases.insert(step.clone(), phase) != Some(phase) {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Changes whenever a phase changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks an accessor call that runs SQL built at `generation`.
    pub fn enter(&'static self, generation: u64) -> InFlight {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(generation)
            .or_insert(0) += 1;
        InFlight {
            registry: self,
            generation,
        }
    }

    /// Waits until no accessor call runs SQL older than `generation`: after a phase change,
    /// nothing in this process still writes the shape the phase retired.
    pub async fn drained(&self, generation: u64) {
        loop {
            let busy = {
                let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                in_flight.range(..generation).next().is_some()
            };
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// The registry of this process, which the generated accessors read.
pub fn registry() -> &'static PhaseRegistry {
    static REGISTRY: LazyLock<PhaseRegistry> = LazyLock::new(PhaseRegistry::default);
    &REGISTRY
}
