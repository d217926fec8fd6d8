//! An owned cluster: stopped and removed by `shutdown` and by `Drop`.

use std::path::{Path, PathBuf};

use pgevolve_testkit::Cluster;

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .unwrap()
            .1
            .trim_start()
            .starts_with('Z')
    })
}

/// The postmaster's pid and the temporary directory of a running cluster.
fn inspect(cluster: &Cluster) -> (u32, PathBuf) {
    let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap().parse().unwrap();
    assert!(alive(pid));
    let root = cluster.data_dir().parent().unwrap().to_owned();
    assert!(root.starts_with(std::env::temp_dir()), "{}", root.display());
    (pid, root)
}

fn query_one(url: &str) -> i32 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .unwrap()
    })
}

fn assert_gone(pid: u32, root: &Path) {
    assert!(!alive(pid), "postmaster {pid} still running");
    assert!(!root.exists(), "{} still exists", root.display());
}

#[test]
fn shutdown_stops_the_server_and_removes_the_directory() {
    let cluster = Cluster::start().unwrap();
    assert!(cluster.url().contains(&format!(":{}/", cluster.port())));
    assert_eq!(query_one(&cluster.url()), 1);
    let (pid, root) = inspect(&cluster);
    cluster.shutdown().unwrap();
    assert_gone(pid, &root);
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() {
    let cluster = Cluster::start().unwrap();
    let (pid, root) = inspect(&cluster);
    drop(cluster);
    assert_gone(pid, &root);
}
