//! Per-phase figures, merged over the clients' records.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::workload::{ClientRecord, OPS};

/// Figures of one operation kind within a phase.
#[derive(Debug, Clone)]
pub struct KindSummary {
    /// `update`, `select` or `insert`.
    pub op: &'static str,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub failed: u64,
    /// Percentiles and maximum, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Figures of one phase of one run.
#[derive(Debug, Clone)]
pub struct PhaseSummary {
    /// The phase.
    pub name: String,
    /// How long it lasted.
    pub seconds: f64,
    /// Successful operations started in it.
    pub ops: u64,
    /// Successful writes (`UPDATE`, `INSERT`) started in it.
    pub writes: u64,
    /// Failed operations started in it.
    pub failed: u64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// Latency percentiles of the successful operations, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Longest time any operation started in the phase waited, failed or not.
    pub longest_stall_ms: f64,
    /// Longest interval without any completed operation, over all clients.
    pub longest_gap_ms: f64,
    /// WAL written while the phase lasted (the whole server's).
    pub wal_bytes: i64,
    /// Per operation kind.
    pub kinds: Vec<KindSummary>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Merges the records of phases `indexes` of every client.
pub fn summarize(
    name: &str,
    seconds: f64,
    wal_bytes: i64,
    records: &[ClientRecord],
    indexes: &[usize],
) -> PhaseSummary {
    let new_hist =
        || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let mut all = new_hist();
    let mut kinds: Vec<(Histogram<u64>, u64)> = OPS.iter().map(|_| (new_hist(), 0)).collect();
    let mut max_failed_us = 0;
    let mut max_gap_us = 0;
    for r in records {
        for &i in indexes {
            let Some(p) = r.phases.get(i) else { continue };
            for (slot, h) in p.latency.iter().enumerate() {
                all.add(h).expect("same bounds");
                kinds[slot].0.add(h).expect("same bounds");
                kinds[slot].1 += p.failed[slot];
            }
            max_failed_us = max_failed_us.max(p.max_failed_us);
            max_gap_us = max_gap_us.max(p.max_gap_us);
        }
    }
    let ops = all.len();
    let failed: u64 = kinds.iter().map(|k| k.1).sum();
    let writes = OPS
        .iter()
        .zip(&kinds)
        .filter(|(op, _)| op.writes())
        .map(|(_, k)| k.0.len())
        .sum();
    let q = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(q))
        }
    };
    let max_ms = if all.is_empty() { 0.0 } else { ms(all.max()) };
    PhaseSummary {
        name: name.to_string(),
        seconds,
        ops,
        writes,
        failed,
        ops_per_sec: if seconds > 0.0 {
            ops as f64 / seconds
        } else {
            0.0
        },
        p50_ms: q(&all, 0.5),
        p99_ms: q(&all, 0.99),
        p999_ms: q(&all, 0.999),
        max_ms,
        longest_stall_ms: max_ms.max(ms(max_failed_us)),
        longest_gap_ms: ms(max_gap_us),
        wal_bytes,
        kinds: OPS
            .iter()
            .zip(kinds)
            .map(|(op, (h, failed))| KindSummary {
                op: op.name(),
                ops: h.len(),
                failed,
                p50_ms: q(&h, 0.5),
                p99_ms: q(&h, 0.99),
                max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
            })
            .collect(),
    }
}

impl PhaseSummary {
    /// Writes per second.
    pub fn writes_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.writes as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The figures as JSON, with ratios against `baseline` when given.
    pub fn json(&self, baseline: Option<&PhaseSummary>) -> Value {
        let mut v = json!({
            "phase": self.name,
            "seconds": round(self.seconds, 3),
            "ops": self.ops,
            "writes": self.writes,
            "failed": self.failed,
            "ops_per_sec": round(self.ops_per_sec, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "p999_ms": round(self.p999_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "longest_stall_ms": round(self.longest_stall_ms, 3),
            "longest_gap_ms": round(self.longest_gap_ms, 3),
            "wal_bytes": self.wal_bytes,
            "by_operation": self.kinds.iter().map(|k| json!({
                "op": k.op, "ops": k.ops, "failed": k.failed,
                "p50_ms": round(k.p50_ms, 3), "p99_ms": round(k.p99_ms, 3), "max_ms": round(k.max_ms, 3),
            })).collect::<Vec<_>>(),
        });
        if let Some(b) = baseline {
            v["throughput_vs_baseline"] = json!(round(ratio(self.ops_per_sec, b.ops_per_sec), 3));
            v["p99_vs_baseline"] = json!(round(ratio(self.p99_ms, b.p99_ms), 3));
        }
        v
    }
}

/// `a / b`, or NaN when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// Rounds to `digits` decimals (JSON readability).
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Figures of one second of a run, over every client.
#[derive(Debug, Clone)]
pub struct WindowSummary {
    /// Seconds since the workload started (the window is `[second, second + 1)`).
    pub second: usize,
    /// Operations that started (open loop: were scheduled) in it, failed ones included.
    pub ops: u64,
    /// 99th percentile of their latency, in milliseconds.
    pub p99_ms: f64,
    /// Their longest latency, in milliseconds.
    pub max_ms: f64,
}

/// The per-second figures of a run, every client merged, for the windows `from..to`.
pub fn windows(records: &[ClientRecord], from: usize, to: usize) -> Vec<WindowSummary> {
    (from..to)
        .filter_map(|second| {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2)
                .expect("valid histogram bounds");
            for r in records {
                if let Some(w) = r.windows.get(second) {
                    h.add(w).expect("same bounds");
                }
            }
            (!h.is_empty()).then(|| WindowSummary {
                second,
                ops: h.len(),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
            })
        })
        .collect()
}
