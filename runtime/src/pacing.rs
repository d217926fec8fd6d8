//! How a pass paces itself after each batch: the next batch's size and the pause before it,
//! from the batch's duration (the duty cycle) and the WAL it wrote (the WAL budget). Pure
//! arithmetic, shared by every walk in batches: the SQL pass (`backfill.rs`), the computed walk
//! (`computed.rs`) and the key widening's referencing fill (`evolver/widen_key.rs`), which
//! pace on both through [`PassPacing`], and the paced counts (`paced_count.rs`), which write
//! nothing and pace on time through [`Pacer`] alone.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

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

/// The server's WAL insert positions (bytes) read before and after a batch's writes
/// (`sql::backfill::wal_start`, `wal_end`), and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WalWindow {
    pub start: i64,
    pub end: i64,
    /// When the first position was read.
    pub at: Instant,
    /// From the first read to the second.
    pub took: Duration,
}

/// The WAL of a pass's batches, each batch charged with its own: what the rest of the server
/// writes is measured from one batch's window to the next one's ([`OthersWal`]).
#[derive(Debug, Default)]
pub(crate) struct BatchWal {
    others: OthersWal,
    /// Where (WAL position, time) the last measured batch ended.
    last_end: Option<(i64, Instant)>,
}

impl BatchWal {
    /// The WAL the batch measured by `window` wrote itself (`None`: not measured).
    pub fn own(&mut self, window: Option<WalWindow>) -> Option<u64> {
        let w = window?;
        if let Some((before, at)) = self.last_end {
            self.others.between_batches(
                w.start.saturating_sub(before).max(0) as u64,
                w.at.saturating_duration_since(at),
            );
        }
        self.last_end = Some((w.end, w.at + w.took));
        Some(
            self.others
                .own(w.end.saturating_sub(w.start).max(0) as u64, w.took),
        )
    }

    /// A batch failed (cancelled, rolled back): it wrote WAL too, so the time up to the next
    /// batch is no window of others' WAL.
    pub fn interrupted(&mut self) {
        self.last_end = None;
    }
}

/// What a pass does after a batch, with the WAL it was charged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AfterBatch {
    pub pace: Pace,
    /// The batch's own WAL in bytes (0: not measured).
    pub wal: u64,
    /// The WAL budget set the pace for the first time in this pass: log and journal it.
    pub first_wal_bound: bool,
}

/// One pass's pacing from batch to batch: the [`Pacer`]'s arithmetic on each batch's own WAL
/// ([`BatchWal`]), and whether the WAL budget has set the pace yet.
pub(crate) struct PassPacing<'a> {
    pacer: Pacer<'a>,
    wal: BatchWal,
    wal_paced: bool,
}

impl<'a> PassPacing<'a> {
    pub fn new(options: &'a BackfillOptions) -> Self {
        PassPacing {
            pacer: Pacer { options },
            wal: BatchWal::default(),
            wal_paced: false,
        }
    }

    /// After a batch of `size` rows (see [`Pacer::after`]) whose writes `window` measured.
    pub fn after(
        &mut self,
        size: u32,
        elapsed: Duration,
        window: Option<WalWindow>,
        slowdown: f64,
    ) -> AfterBatch {
        let sizes = self.pacer.row_sizes();
        self.after_within(size, elapsed, window, slowdown, sizes)
    }

    /// As [`PassPacing::after`], for a batch whose size counts something else than rows
    /// (heap pages), kept within `sizes`.
    pub fn after_within(
        &mut self,
        size: u32,
        elapsed: Duration,
        window: Option<WalWindow>,
        slowdown: f64,
        sizes: RangeInclusive<u32>,
    ) -> AfterBatch {
        let wal = self.wal.own(window);
        let pace = self.pacer.after_within(size, elapsed, wal, slowdown, sizes);
        let first_wal_bound = pace.wal_bound && !self.wal_paced;
        self.wal_paced |= pace.wal_bound;
        AfterBatch {
            pace,
            wal: wal.unwrap_or(0),
            first_wal_bound,
        }
    }

    /// A batch failed: see [`BatchWal::interrupted`].
    pub fn interrupted(&mut self) {
        self.wal.interrupted();
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
        self.after_within(size, elapsed, wal, slowdown, self.row_sizes())
    }

    /// The batch sizes in rows the options allow.
    fn row_sizes(&self) -> RangeInclusive<u32> {
        let min = self.options.min_batch_size.max(1);
        min..=self.options.max_batch_size.max(min)
    }

    /// As [`Pacer::after`], with the next size kept within `sizes` (at least 1).
    pub fn after_within(
        &self,
        size: u32,
        elapsed: Duration,
        wal: Option<u64>,
        slowdown: f64,
        sizes: RangeInclusive<u32>,
    ) -> Pace {
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
        // not followed by an even longer one. Up rounds up (past a rounding error), so that a
        // size of a few (heap pages) can grow at all.
        let ratio = ratio.clamp(0.5, 1.25);
        let next = size as f64 * ratio;
        let next = if ratio > 1.0 {
            (next - 1e-3).ceil()
        } else {
            next
        };
        let (low, high) = (sizes.start().max(&1), sizes.end());
        let next_size = (next as u32).clamp(*low, *high.max(low));
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
    fn a_pass_charges_each_batch_with_its_own_wal_between_its_windows() {
        let mut wal = BatchWal::default();
        let t = Instant::now();
        let window = |start: i64, end: i64, at: u64, took: u64| WalWindow {
            start,
            end,
            at: t + MS(at),
            took: MS(took),
        };
        assert_eq!(wal.own(None), None);
        // The first batch: nobody else measured yet, all of it is its own.
        assert_eq!(wal.own(Some(window(0, 500_000, 0, 30))), Some(500_000));
        // 600 KB by others over the 60 ms between the two windows (10 MB/s): 300 KB of the
        // next 30 ms batch's 500 KB were theirs.
        let own = wal.own(Some(window(1_100_000, 1_600_000, 90, 30))).unwrap();
        assert!(own.abs_diff(200_000) <= 1, "{own}");
        // After a failed batch, the time up to the next is no window of others' WAL: the rate
        // stays as it was.
        wal.interrupted();
        let own = wal
            .own(Some(window(9_000_000, 9_500_000, 500, 30)))
            .unwrap();
        assert!(own.abs_diff(200_000) <= 1, "{own}");
    }

    #[test]
    fn a_pass_says_once_that_the_budget_set_its_pace() {
        let options = BackfillOptions::default().wal_budget(1 << 20);
        let mut pacing = PassPacing::new(&options);
        let t = Instant::now();
        let heavy = |at: u64| WalWindow {
            start: 0,
            end: 1 << 20,
            at: t + MS(at),
            took: MS(30),
        };
        let first = pacing.after(1000, MS(30), Some(heavy(0)), 1.0);
        assert!(first.pace.wal_bound && first.first_wal_bound);
        assert_eq!(first.wal, 1 << 20);
        assert!(first.pace.pause >= MS(900), "{:?}", first.pace.pause);
        let second = pacing.after(500, MS(30), None, 1.0);
        assert!(!second.first_wal_bound);
        assert_eq!(second.wal, 0);
        let third = pacing.after(500, MS(30), Some(heavy(2_000)), 1.0);
        assert!(third.pace.wal_bound && !third.first_wal_bound);
    }

    #[test]
    fn heap_pages_grow_from_one_and_stay_within_their_range() {
        let options = BackfillOptions::unthrottled();
        let pacer = Pacer { options: &options };
        // Quick batches: up by at least one page, to the largest.
        let mut pages = 1;
        for _ in 0..20 {
            pages = pacer
                .after_within(pages, MS(1), None, 1.0, 1..=32)
                .next_size;
        }
        assert_eq!(pages, 32);
        // Over their share of the budget: down, never below one page.
        let budget = BackfillOptions::default().wal_budget(64 << 10);
        let pacer = Pacer { options: &budget };
        let pace = pacer.after_within(1, MS(30), Some(1 << 20), 1.0, 1..=32);
        assert_eq!(pace.next_size, 1);
        assert!(pace.wal_bound);
        // 1 MiB at 64 KiB/s: 16 s, the batch's 30 ms included.
        assert!(pace.pause.abs_diff(MS(15_970)) < MS(1), "{:?}", pace.pause);
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

    /// A pass of 40 batches beside a neighbour writing `others` bytes per second, each batch
    /// taking 30 µs and writing 50 bytes of its own per row, every pause as paced: each
    /// batch's size and whether the WAL budget bound it. `charge_all` charges each batch with
    /// all the WAL written while it ran, as a pass without [`OthersWal`] would.
    fn pass_beside(options: &BackfillOptions, others: u64, charge_all: bool) -> Vec<(u32, bool)> {
        let mut pass = PassPacing::new(options);
        let pacer = Pacer { options };
        let (mut now, mut lsn) = (Instant::now(), 0i64);
        let mut size = options.initial_batch_size;
        let mut out = Vec::new();
        for _ in 0..40 {
            let took = Duration::from_micros(30 * u64::from(size));
            let start = lsn;
            lsn += (others as f64 * took.as_secs_f64()) as i64 + 50 * i64::from(size);
            let window = WalWindow {
                start,
                end: lsn,
                at: now,
                took,
            };
            let mut pace = pass.after(size, took, Some(window), 1.0).pace;
            if charge_all {
                pace = pacer.after(size, took, Some((lsn - start) as u64), 1.0);
            }
            out.push((size, pace.wal_bound));
            size = pace.next_size;
            now += took + pace.pause;
            lsn += (others as f64 * pace.pause.as_secs_f64()) as i64;
        }
        out
    }

    #[test]
    fn a_noisy_neighbour_does_not_shrink_the_pass_to_its_smallest_batch() {
        // A budget of 1 MiB/s, and a neighbour writing 40 MB/s on its own: a batch of 1000
        // rows writes 50 KB of its own, within its share (about 94 KB per cycle).
        let options = BackfillOptions::default().wal_budget(1 << 20);
        let paced = pass_beside(&options, 40_000_000, false);
        // Only the first batch, before anything is measured, is charged with the neighbour's
        // WAL; the pass then grows back to the size its duty cycle sets.
        assert_eq!(
            paced.iter().filter(|(_, bound)| *bound).count(),
            1,
            "{paced:?}"
        );
        assert!(
            paced[10..].iter().all(|(size, _)| *size >= 990),
            "{paced:?}"
        );
        // Charged with the neighbour's WAL, the same pass crawls at its smallest batch.
        let charged = pass_beside(&options, 40_000_000, true);
        assert!(charged.iter().all(|(_, bound)| *bound), "{charged:?}");
        assert!(
            charged[5..]
                .iter()
                .all(|(size, _)| *size == options.min_batch_size),
            "{charged:?}"
        );
    }
}
