//! A streaming replica of a throwaway cluster: a base backup into a temporary directory of its
//! own (`pg_basebackup -R`, or the low-level backup API where the installation has no
//! `pg_basebackup`), then a hot standby on a free port, replaying what the primary writes.

use crate::Error;
use crate::backup::copy_running_cluster;
use crate::binaries::Binaries;
use crate::cluster::Cluster;
use crate::user::RunAs;

impl Cluster {
    /// Starts a hot standby of this cluster, streaming its WAL, and returns it as a cluster of
    /// its own (stopped and removed like any other: on drop, on [`Cluster::shutdown`], or by its
    /// guardian when this process ends). Blocks while the base backup is copied; in async code
    /// call it from [`tokio::task::spawn_blocking`].
    ///
    /// The copy is made by `pg_basebackup -R --checkpoint=fast`, which also writes
    /// `standby.signal` and the `primary_conninfo` that points back at this cluster over TCP,
    /// as `postgres`. Installations without `pg_basebackup` (the npm packages of other majors
    /// ship only the server) get the same copy through PostgreSQL's low-level backup API:
    /// `pg_backup_start`, a copy of the data directory, `pg_backup_stop`, its `backup_label`,
    /// then the WAL. That needs what a cluster from [`Cluster::start`] has from `initdb`:
    /// `wal_level = replica`, free `max_wal_senders`, and a `host replication` line of
    /// `pg_hba.conf` that trusts `127.0.0.1`. No replication slot is made: pausing replay on
    /// the standby (`SELECT pg_wal_replay_pause()`) does not stop it from receiving WAL, so
    /// the primary never waits for it.
    ///
    /// The standby shows in the primary's `pg_stat_replication` once it has connected, which
    /// may take a moment after this returns; poll for it.
    ///
    /// ```no_run
    /// let primary = pgevolve_testkit::Cluster::start()?;
    /// let standby = primary.start_replica()?;
    /// println!("primary {}, standby {}", primary.url(), standby.url());
    /// # Ok::<(), pgevolve_testkit::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::BinariesNotFound`] and [`Error::NoServerUser`] as [`Cluster::start`],
    /// [`Error::Basebackup`] with `pg_basebackup`'s output when the copy fails, [`Error::Start`]
    /// when the standby does not start.
    pub fn start_replica(&self) -> Result<Cluster, Error> {
        let binaries = Binaries::find()?;
        let run_as = RunAs::detect()?;
        let mut replica = Cluster::prepare(&binaries, &run_as)?;
        if binaries.path("pg_basebackup").is_file() {
            self.base_backup(&binaries, &run_as, &replica.data)?;
        } else {
            copy_running_cluster(&self.url(), self.port, &self.data, &replica.data)?;
            run_as.hand_over_tree(&replica.data)?;
        }
        replica.launch(&binaries, &run_as)?;
        Ok(replica)
    }

    /// Copies this cluster into `into` with `pg_basebackup`, as the cluster's owner.
    fn base_backup(
        &self,
        binaries: &Binaries,
        run_as: &RunAs,
        into: &std::path::Path,
    ) -> Result<(), Error> {
        let output = run_as
            .command(&binaries.path("pg_basebackup"))
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-D"])
            .arg(into)
            .args([
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
            ])
            .output()
            .map_err(Error::io("running pg_basebackup"))?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(Error::Basebackup {
            status: output.status,
            output: text,
        })
    }
}
