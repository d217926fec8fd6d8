//! Behaviour across processes: the guardian cleans up after the test process ends however it
//! ends, and `DATABASE_URL` replaces the throwaway cluster.
//!
//! Each parent test re-runs this test binary with only `child_process` selected and
//! `PGEVOLVE_TESTKIT_CHILD` set to what the child should do; the child reports on stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgevolve_testkit::{TestDatabase, server_url};

const CHILD_ENV: &str = "PGEVOLVE_TESTKIT_CHILD";

/// Not a test of its own: the body of the child processes the other tests start.
#[tokio::test(flavor = "multi_thread")]
async fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = TestDatabase::new().await.unwrap();
    let pool = db.pool(1).await.unwrap();
    let data_dir: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&pool)
        .await
        .unwrap();
    // libtest has printed "test child_process ... " without a newline.
    println!();
    println!("NAME={}", db.name());
    println!("URL={}", db.url());
    println!("SERVER={}", server_url().unwrap());
    println!("DATA_DIR={data_dir}");
    println!("READY");
    match mode.as_str() {
        "exit" => {}
        "panic" => panic!("the child panics on purpose"),
        "wait" => tokio::time::sleep(Duration::from_secs(600)).await,
        other => panic!("unknown mode {other}"),
    }
}

/// Starts the child; returns it with the `KEY=value` lines it printed before `READY`.
fn spawn_child(mode: &str, database_url: Option<&str>) -> (Child, Vec<(String, String)>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut report = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "READY" {
            break;
        }
        if let Some((key, value)) = line.split_once('=') {
            report.push((key.to_owned(), value.to_owned()));
        }
    }
    // Keep reading, or the child's next `println!` fails on a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, report)
}

fn get<'a>(report: &'a [(String, String)], key: &str) -> &'a str {
    report
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("child did not report {key}: {report:?}"))
}

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

/// Runs a child in `mode`, ends it with `end`, and checks the guardian removed its cluster.
fn assert_cleaned_up_after(mode: &str, end: impl FnOnce(&mut Child)) {
    let (mut child, report) = spawn_child(mode, None);
    let data_dir = PathBuf::from(get(&report, "DATA_DIR"));
    let root = data_dir.parent().unwrap().to_owned();
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    let postmaster: u32 = pid_file.lines().next().unwrap().parse().unwrap();
    assert!(alive(postmaster));
    assert!(root.exists());

    end(&mut child);
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while (alive(postmaster) || root.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(postmaster), "postmaster {postmaster} still running");
    assert!(!root.exists(), "{} still exists", root.display());
}

#[test]
fn guardian_cleans_up_after_a_normal_exit() {
    assert_cleaned_up_after("exit", |_| {});
}

#[test]
fn guardian_cleans_up_after_a_panic() {
    assert_cleaned_up_after("panic", |_| {});
}

#[test]
fn guardian_cleans_up_after_kill_9() {
    assert_cleaned_up_after("wait", |child| child.kill().unwrap());
}

/// Authority (`user@host:port`) of a `postgres://` URL.
fn authority(url: &str) -> &str {
    url.split_once("://").unwrap().1.split('/').next().unwrap()
}

fn temp_dirs_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("pgevolve-testkit-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path_name(path).starts_with(&prefix))
        .collect()
}

fn path_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn database_url_replaces_the_cluster() {
    // Point the child at a database of this process's server (not the maintenance one, to
    // check that the database part of the URL is replaced).
    let ours = TestDatabase::new().await.unwrap();
    let (mut child, report) =
        tokio::task::spawn_blocking(move || spawn_child("exit", Some(ours.url())))
            .await
            .unwrap();
    let child_pid = child.id();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());

    let server = server_url().unwrap();
    assert_eq!(get(&report, "SERVER"), server);
    let url = get(&report, "URL");
    let name = get(&report, "NAME");
    assert_eq!(authority(url), authority(&server));
    assert!(
        name.starts_with(&format!("pgevolve_test_{child_pid}_")),
        "{name}"
    );
    assert!(
        temp_dirs_of(child_pid).is_empty(),
        "the child started a cluster"
    );

    let pool = sqlx::PgPool::connect(&server).await.unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(exists, "{name} is not on this process's server");
}
