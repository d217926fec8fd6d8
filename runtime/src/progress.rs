//! What [`Evolution::progress`](crate::Evolution::progress) shows: each step's phase and its rows,
//! as this instance sees them. The engine hands a [`Progress`] handle down to the runners
//! (backfill batches, concurrent builds), so nothing below the engine imports it.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::step::{Phase, StepId};

/// Progress of one step, as this instance sees it.
#[derive(Debug, Clone)]
pub struct StepProgress {
    /// The step.
    pub step: StepId,
    /// `schema.table`.
    pub table: String,
    /// What the step does.
    pub description: String,
    /// The last phase the step completed.
    pub phase: Phase,
    /// Rows filled by the backfill so far.
    pub rows_done: i64,
    /// The table's estimated rows when the backfill started (0 when unknown).
    pub rows_estimated: i64,
    /// Rows per second of this instance's backfill run.
    pub rows_per_second: f64,
}

/// A shared, cheaply cloned view of every step's progress in one evolution.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress(Arc<Mutex<Vec<StepProgress>>>);

impl Progress {
    /// A poisoned lock only means a reader panicked; the numbers are still good.
    fn all(&self) -> MutexGuard<'_, Vec<StepProgress>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces every step's entry (at boot).
    pub fn reset(&self, steps: Vec<StepProgress>) {
        for p in &steps {
            crate::telemetry::phase(p.step.as_str(), &p.table, p.phase);
        }
        *self.all() = steps;
    }

    /// Every step's entry, copied.
    pub fn snapshot(&self) -> Vec<StepProgress> {
        self.all().clone()
    }

    /// The phase `step` reached in this instance's view, when it has an entry.
    pub fn phase(&self, step: &StepId) -> Option<Phase> {
        self.all().iter().find(|p| &p.step == step).map(|p| p.phase)
    }

    /// The phase `step` reached, also as the [`crate::telemetry::PHASE`] gauge.
    pub fn set_phase(&self, step: &StepId, phase: Phase) {
        self.update(
            |id| id == step,
            |p| {
                p.phase = phase;
                crate::telemetry::phase(p.step.as_str(), &p.table, phase);
            },
        );
    }

    /// The rows a step's table is expected to hold, for every step `of` selects (a backfill
    /// pass reports for all its steps at once).
    pub fn set_estimate(&self, of: impl Fn(&StepId) -> bool, estimate: i64) {
        self.update(of, |p| p.rows_estimated = estimate);
    }

    /// Rows done so far and the current rate, for every step `of` selects.
    pub fn set_rows(&self, of: impl Fn(&StepId) -> bool, done: i64, rate: f64) {
        self.update(of, |p| {
            p.rows_done = done;
            p.rows_per_second = rate;
        });
    }

    /// A concurrent build's tuples, from `pg_stat_progress_create_index`.
    pub fn set_build(&self, step: &StepId, done: i64, total: i64) {
        self.update(
            |id| id == step,
            |p| {
                p.rows_done = done;
                p.rows_estimated = total;
            },
        );
    }

    fn update(&self, of: impl Fn(&StepId) -> bool, mut change: impl FnMut(&mut StepProgress)) {
        for p in self.all().iter_mut().filter(|p| of(&p.step)) {
            change(p);
        }
    }
}
