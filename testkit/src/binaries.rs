//! Finding the installed PostgreSQL server binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// Programs the cluster needs, all from the same installation.
const REQUIRED: [&str; 3] = ["initdb", "postgres", "pg_ctl"];

/// A directory with the server binaries to use instead of the installed ones, e.g. another
/// major version fetched by `scripts/pg-binaries`.
pub const BINDIR_ENV: &str = "PGEVOLVE_PG_BINDIR";

/// Where Debian and Ubuntu install one directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The directory holding `initdb`, `postgres` and `pg_ctl`.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    /// E.g. `/usr/lib/postgresql/15/bin`.
    dir: PathBuf,
}

impl Binaries {
    /// `PGEVOLVE_PG_BINDIR` when set (an error if it lacks a program), else `pg_config --bindir`,
    /// then the newest `/usr/lib/postgresql/<version>/bin`.
    pub(crate) fn find() -> Result<Binaries, Error> {
        if let Some(dir) = std::env::var_os(BINDIR_ENV) {
            let dir = PathBuf::from(dir);
            return if is_complete(&dir) {
                Ok(Binaries { dir })
            } else {
                Err(Error::BinariesIncomplete { dir })
            };
        }
        pg_config_bindir()
            .into_iter()
            .chain(newest_debian_bindir(Path::new(DEBIAN_ROOT)))
            .find(|dir| is_complete(dir))
            .map(|dir| Binaries { dir })
            .ok_or(Error::BinariesNotFound)
    }

    /// The full path of one program, e.g. `initdb`.
    pub(crate) fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }
}

/// Whether `dir` holds every program in [`REQUIRED`].
fn is_complete(dir: &Path) -> bool {
    REQUIRED.iter().all(|program| dir.join(program).is_file())
}

/// What `pg_config --bindir` prints, if it runs and succeeds.
fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The `bin` directory of the highest numeric version under `root` that has all binaries.
fn newest_debian_bindir(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = parse_version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            is_complete(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`; anything else is not a version directory.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("common"), None);
        assert!(parse_version("10") > parse_version("9.6"));
    }

    #[test]
    fn finds_the_installed_binaries() {
        let binaries = Binaries::find().expect("this machine has PostgreSQL installed");
        assert!(binaries.path("initdb").is_file());
    }
}
