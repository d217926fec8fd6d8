//! pgevolve's metrics exported to Prometheus: the `metrics` facade's recorder is
//! `metrics-exporter-prometheus`, installed before the evolution boots; after a backfill of a
//! seeded table the scrape text is printed, or served over HTTP for Prometheus to scrape.
//!
//! ```sh
//! cargo run -p metrics_example                                  # prints the scrape text
//! cargo run -p metrics_example -- --rows 500000 --serve 127.0.0.1:9187
//! curl -s http://127.0.0.1:9187/metrics | grep pgevolve_
//! ```
//!
//! With `DATABASE_URL` set, a fresh database is created on that server; without it, a throwaway
//! PostgreSQL is started from the installed binaries. The names and labels are listed in
//! `pgevolve::telemetry`.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pgevolve_testkit::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USAGE: &str = "usage: metrics_example [--rows N] [--serve ADDR]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pgevolve_runtime=info".into()),
        )
        .init();
    let (mut rows, mut serve) = (100_000i64, None::<String>);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rows" => rows = args.next().ok_or(USAGE)?.parse()?,
            "--serve" => serve = Some(args.next().ok_or(USAGE)?),
            _ => return Err(USAGE.into()),
        }
    }

    // The recorder first: whatever pgevolve records before it is installed is lost.
    let handle = PrometheusBuilder::new().install_recorder()?;
    pgevolve::telemetry::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });

    let db = TestDatabase::new().await?;
    let pool = db.pool(10).await?;
    metrics_example::seed(&pool, rows).await?;
    let evolution = metrics_example::evolve(&pool).await?;
    match serve {
        None => print!("{}", handle.render()),
        Some(addr) => serve_scrapes(&addr, &handle).await?,
    }
    drop(evolution);
    Ok(())
}

/// Answers every request on `addr` with the scrape text (`GET /metrics` or any other path), until
/// Ctrl-C: enough for Prometheus, without an HTTP server in the dependencies.
async fn serve_scrapes(addr: &str, handle: &PrometheusHandle) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("serving the scrape text on http://{addr}/metrics; Ctrl-C stops");
    loop {
        let (mut socket, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let mut request = [0u8; 4096];
        // The request itself does not matter; read what came so the client is not reset.
        let _ = socket.read(&mut request).await?;
        let body = handle.render();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await?;
        socket.shutdown().await?;
    }
}
