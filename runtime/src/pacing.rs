//! How a pass paces itself after each batch: the next batch's size and the pause before it,
//! from the batch's duration (the duty cycle) and the WAL it wrote (the WAL budget). Pure
//! arithmetic, shared by the SQL pass (`backfill.rs`) and the paced counts (`paced_count.rs`).

use std::time::Duration;

use crate::options::BackfillOptions;

/// What to do after a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pace {
    /// Rows (keys) in the next batch.
    pub next_size: u32,
    /// The wait before the next batch.
    pub pause: Duration,
    /// Whether the WAL budget made the pause longer or the next batch smaller than the duty
    /// cycle alone would have.
    pub wal_bound: bool,
}

/// The WAL the rest of the server writes, measured while the pass is between batches (every
/// byte written then is someone else's), so that a batch is charged only for its own WAL. On a
/// busy table the application's WAL alone can exceed the budget (random writes over a table
/// larger than shared buffers write a full-page image per page after every checkpoint): a pass
/// charged with it would shrink to its smallest batch and crawl, as it did at 10,000,000 rows
/// in BENCHMARKS.md, while taking nothing off the application's flushes.
#[derive(Debug, Default)]
pub(crate) struct OthersWal {
    /// Bytes per second, smoothed.
    rate: Option<f64>,
}

impl OthersWal {
    /// Others wrote `bytes` over `over`, from the end of one batch to the start of the next.
    pub fn between_batches(&mut self, bytes: u64, over: Duration) {
        let secs = over.as_secs_f64();
        // A few milliseconds say more about the clock than about the rate.
        if secs < 0.005 {
            return;
        }
        let rate = bytes as f64 / secs;
        // Smoothed, so that one checkpoint's burst of full-page images does not swing the pace.
        self.rate = Some(match self.rate {
            Some(old) => 0.7 * old + 0.3 * rate,
            None => rate,
        });
    }

    /// The part of `wal`, which the server wrote while a batch ran for `elapsed`, that was the
    /// batch's own: what others write at their measured rate over the same time is taken off.
    pub fn own(&self, wal: u64, elapsed: Duration) -> u64 {
        let others = self.rate.unwrap_or(0.0) * elapsed.as_secs_f64();
        (wal as f64 - others).max(0.0) as u64
    }
}

/// Paces one pass by `options`.
pub(crate) struct Pacer<'a> {
    pub options: &'a BackfillOptions,
}

impl Pacer<'_> {
    /// After a batch of `size` rows that took `elapsed` and during which the server wrote `wal`
    /// bytes (`None`: not measured). `slowdown` stretches the duty cycle's pause (the health
    /// verdict's factor, 1.0 when healthy).
    pub fn after(&self, size: u32, elapsed: Duration, wal: Option<u64>, slowdown: f64) -> Pace {
        let o = self.options;
        // A target the batch timeout would cancel (a caller that shortened the timeout only)
        // would have every batch grow into its cancellation: aim below the timeout.
        let target = o
            .target_batch_duration
            .min(o.batch_timeout.mul_f64(0.75))
            .as_secs_f64();
        let by_time = target / elapsed.as_secs_f64().max(1e-4);
        let duty = o.duty_cycle.clamp(0.01, 1.0);
        let duty_pause = o.pause_after(elapsed).mul_f64(slowdown.max(0.0));
        let (mut ratio, mut pause, mut wal_bound) = (by_time, duty_pause, false);
        if let (Some(budget), Some(wal)) = (o.wal_budget.filter(|b| *b > 0), wal.filter(|w| *w > 0))
        {
            let budget = budget as f64;
            // One batch may write the budget of one cycle (a batch and its pause at the duty
            // cycle): a smaller burst for the application's next commit to flush.
            let allowance = budget * target / duty;
            let by_wal = allowance / wal as f64;
            if by_wal < ratio {
                ratio = by_wal;
                wal_bound = by_wal < 1.0;
            }
            // Back to the budget over the batch and its pause.
            let needed =
                Duration::from_secs_f64((wal as f64 / budget - elapsed.as_secs_f64()).max(0.0));
            if needed > pause {
                pause = needed;
                wal_bound = true;
            }
        }
        // Down by up to half at once, up by at most a quarter per batch, so one slow batch is
        // not followed by an even longer one.
        let next_size = ((size as f64 * ratio.clamp(0.5, 1.25)) as u32).clamp(
            o.min_batch_size.max(1),
            o.max_batch_size.max(o.min_batch_size.max(1)),
        );
        Pace {
            next_size,
            pause,
            wal_bound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn without_wal_it_keeps_the_duty_cycle() {
        let options = BackfillOptions::default();
        let pace = Pacer { options: &options }.after(1000, MS(30), None, 1.0);
        assert_eq!(pace.pause, MS(60));
        assert_eq!(pace.next_size, 1000);
        assert!(!pace.wal_bound);
        let slow = Pacer { options: &options }.after(1000, MS(60), None, 2.0);
        assert_eq!(slow.next_size, 500);
        assert_eq!(slow.pause, MS(240));
    }

    #[test]
    fn a_batch_over_its_wal_share_shrinks_the_next_and_lengthens_the_pause() {
        let options = BackfillOptions::default().wal_budget(1 << 20);
        // 1 MiB in 30 ms against 1 MiB/s: a second of pause, and a batch sized to the share
        // of one 90 ms cycle (about a tenth): halved, the most at once.
        let pace = Pacer { options: &options }.after(1000, MS(30), Some(1 << 20), 1.0);
        assert!(pace.wal_bound);
        assert!(pace.pause.abs_diff(MS(970)) < MS(1), "{:?}", pace.pause);
        assert_eq!(pace.next_size, 500);
        // Within the budget: the duty cycle decides.
        let light = Pacer { options: &options }.after(1000, MS(30), Some(10_000), 1.0);
        assert!(!light.wal_bound);
        assert_eq!(light.pause, MS(60));
        assert_eq!(light.next_size, 1000);
    }

    #[test]
    fn the_target_stays_below_the_batch_timeout() {
        let options = BackfillOptions {
            batch_timeout: MS(80),
            ..BackfillOptions::unthrottled()
        };
        // 100 ms aimed at, but 60 ms is what an 80 ms timeout lets through: 60 ms batches stay.
        let pace = Pacer { options: &options }.after(400, MS(60), None, 1.0);
        assert_eq!(pace.next_size, 400);
    }

    #[test]
    fn a_batch_is_charged_only_for_the_wal_others_did_not_write() {
        let mut others = OthersWal::default();
        // Nothing measured yet: the batch is charged with all of it (the gentle side).
        assert_eq!(others.own(500_000, MS(30)), 500_000);
        // Others wrote 10 MB/s between batches: 300 KB of a 30 ms batch's 500 KB were theirs.
        others.between_batches(600_000, MS(60));
        assert!(others.own(500_000, MS(30)).abs_diff(200_000) <= 1);
        // Never below nothing, when others wrote faster during the batch than between batches.
        assert_eq!(others.own(100_000, MS(30)), 0);
        // A window too short to measure leaves the rate as it was.
        others.between_batches(1_000_000, MS(1));
        assert!(others.own(500_000, MS(30)).abs_diff(200_000) <= 1);
        // Smoothed: a burst moves the rate by 30% of the difference.
        others.between_batches(3_000_000, MS(100));
        assert!(others.own(1_000_000, MS(50)).abs_diff(200_000) <= 1);
    }

    #[test]
    fn the_applications_wal_alone_does_not_shrink_the_pass_to_its_smallest_batch() {
        let options = BackfillOptions::default();
        let pacer = Pacer { options: &options };
        let mut others = OthersWal::default();
        // A workload writing 18 MB/s on its own (BENCHMARKS.md, 10,000,000 rows) and a batch
        // writing 300 KB of its own in 30 ms: within its share of the 4 MiB/s budget.
        others.between_batches(1_080_000, MS(60));
        let server_wide = 540_000 + 300_000;
        let charged = pacer.after(1000, MS(30), Some(server_wide), 1.0);
        assert_eq!(
            charged.next_size, 500,
            "charged with the server's WAL, it halves"
        );
        let own = pacer.after(1000, MS(30), Some(others.own(server_wide, MS(30))), 1.0);
        assert_eq!(own.next_size, 1000);
        assert!(!own.wal_bound);
    }

    #[test]
    fn no_budget_no_wal_pacing() {
        let options = BackfillOptions::unthrottled();
        let pace = Pacer { options: &options }.after(10_000, MS(50), Some(100 << 20), 1.0);
        assert!(!pace.wal_bound);
        assert_eq!(pace.pause, Duration::ZERO);
        // Half the 100 ms target: up by a quarter, the most at once.
        assert_eq!(pace.next_size, 12_500);
    }
}
