//! Text pieces shared by the commands: progress bars, counts, durations.

use crate::store::Step;

/// `12,345`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `4s`, `3m 05s`, `2h 10m`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The fraction of a step's backfill done, when its size is known.
pub fn fraction(step: &Step) -> Option<f64> {
    let total = step.rows_estimated.filter(|t| *t > 0)?;
    Some((step.rows_done as f64 / total as f64).clamp(0.0, 1.0))
}

/// `[########------------]  42%`.
pub fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction * width as f64).round() as usize).min(width);
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        "-".repeat(width - filled),
        fraction * 100.0
    )
}

/// Seconds left at `rate` rows per second, when it can be told.
pub fn eta(step: &Step, rate: Option<f64>) -> Option<f64> {
    let total = step.rows_estimated?;
    let rate = rate.filter(|r| *r > 0.0)?;
    Some(((total - step.rows_done).max(0) as f64) / rate)
}

/// A pause's scope as people read it.
pub fn scope(scope: &str) -> String {
    if scope == "*" {
        "every step".into()
    } else {
        format!("step {scope}")
    }
}

/// What a step is doing, in a few words.
pub fn state(step: &Step, paused: bool) -> String {
    let mut out = match step.next_phase() {
        _ if step.phase == "aborted" => "aborted".to_string(),
        None if step.phases.is_empty() => format!("at {}", step.phase),
        None => "done".to_string(),
        Some(next) if step.waits_for_operator() => {
            format!(
                "{next} waits for `pgevolve {}` (or auto_contract)",
                operator_command(next)
            )
        }
        Some("backfill") if step.backfill_started => "backfill running".to_string(),
        Some(next) => format!("{next} next"),
    };
    if paused && !step.settled() {
        out.push_str(" [PAUSED]");
    }
    out
}

/// The command that runs a gated phase.
fn operator_command(phase: &str) -> &'static str {
    match phase {
        "switch" => "switch",
        _ => "contract",
    }
}
