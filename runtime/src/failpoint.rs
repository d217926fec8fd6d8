//! Named points where tests stop a process (feature `test-util` only; nothing at all in other
//! builds): when `PGEVOLVE_PAUSE_AT` names the point, the process prints `PAUSED <point>` on
//! its standard output and waits, so that a test can SIGKILL it exactly there, with whatever
//! transaction it has open, or act while it is held and then let it go on.

/// The environment variable that names the point to pause at.
#[cfg(feature = "test-util")]
pub const PAUSE_ENV: &str = "PGEVOLVE_PAUSE_AT";

/// The environment variable that names a file: once it exists, the pause ends (the process
/// prints `RELEASED <point>`) and later passes go on at once (each printing `PASSED <point>`).
/// Without it, the pause lasts for ever.
#[cfg(feature = "test-util")]
pub const RELEASE_ENV: &str = "PGEVOLVE_PAUSE_RELEASE";

/// Pauses at `point` when `PAUSE_ENV` names it (feature `test-util`): for ever, or until the
/// file `RELEASE_ENV` names exists.
pub(crate) async fn pause_at(point: &str) {
    #[cfg(feature = "test-util")]
    if std::env::var(PAUSE_ENV).is_ok_and(|p| p == point) {
        use std::io::Write;
        let release = std::env::var_os(RELEASE_ENV).map(std::path::PathBuf::from);
        if release.as_ref().is_some_and(|file| file.exists()) {
            // Said, so that a test can tell whether the process came back here after.
            println!("\nPASSED {point}");
            let _ = std::io::stdout().flush();
            return;
        }
        println!("\nPAUSED {point}");
        let _ = std::io::stdout().flush();
        loop {
            match &release {
                Some(file) if file.exists() => break,
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                None => tokio::time::sleep(std::time::Duration::from_secs(3_600)).await,
            }
        }
        println!("\nRELEASED {point}");
        let _ = std::io::stdout().flush();
    }
    #[cfg(not(feature = "test-util"))]
    let _ = point;
}
