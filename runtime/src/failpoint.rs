//! Named points where the kill tests stop a process (feature `test-util` only; nothing at all in
//! other builds): when `PGEVOLVE_PAUSE_AT` names the point, the process prints
//! `PAUSED <point>` on its standard output and waits for ever, so that a test can SIGKILL it
//! exactly there, with whatever transaction it has open.

/// The environment variable that names the point to pause at.
#[cfg(feature = "test-util")]
pub const PAUSE_ENV: &str = "PGEVOLVE_PAUSE_AT";

/// Pauses for ever at `point` when [`PAUSE_ENV`] names it (feature `test-util`).
pub(crate) async fn pause_at(point: &str) {
    #[cfg(feature = "test-util")]
    if std::env::var(PAUSE_ENV).is_ok_and(|p| p == point) {
        use std::io::Write;
        println!("\nPAUSED {point}");
        let _ = std::io::stdout().flush();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(3_600)).await;
        }
    }
    #[cfg(not(feature = "test-util"))]
    let _ = point;
}
