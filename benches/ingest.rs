//! Ingest benchmark: chunks per second and ack latency through the real
//! server (in process, over loopback WebSockets, driven by `spool load`'s
//! recorders), next to the engine's ceiling measured in the same round.
//!
//! `cargo bench --bench ingest` — or `cargo bench --bench ingest -- ROUNDS`.
//! Each round starts a fresh server and runs, so their ratios are taken
//! under the same machine conditions:
//! - *lone*: one recorder, one chunk in flight (every commit carries one
//!   chunk: the cost of an fsync per chunk);
//! - *saturated*: 100 recorders, 32 chunks in flight each (group commit);
//! - *paced*: 1000 recorders × 4 chunks/s (a 250 ms timeslice) for 10 s;
//! - *ceiling*: the same rows straight into SQLite, no server.
//!
//! For the seed's 100 ms timeslice at scale, run `spool load realistic`
//! against a release server (see the README's Performance section).

use std::time::Duration;

use spool::client::Server;
use spool::load::{Report, Workload, measure_ceiling, run_load};
use spool::{App, Config};

const CHUNK_BYTES: usize = 2048;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let workloads = [
        workload("lone", 1, 300, None, 1),
        workload("saturated", 100, 200, None, 32),
        workload(
            "paced",
            1000,
            40,
            Some(Duration::from_millis(250)),
            u32::MAX,
        ),
    ];
    let mut results: Vec<Vec<Report>> = vec![Vec::new(); workloads.len()];
    let mut ceilings = Vec::new();
    for round in 1..=rounds {
        let dir = tempfile::tempdir()?;
        let mut config = Config::with_data_dir(dir.path());
        config.max_chunks_per_second = 0;
        config.max_sessions_per_minute = 0; // one client creates every session
        let app = App::build(config).await?;
        let server = Server::new(&format!("http://127.0.0.1:{}", app.port()), None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until_stopped(async { drop(stopped.await) }));
        for (workload, reports) in workloads.iter().zip(&mut results) {
            let report = run_load(&server, workload, false).await?;
            println!(
                "round {round}: {:<10} {:>8.0} chunks/s  ack p50 {:>6.1} ms  p99 {:>6.1} ms  ({} verified)",
                workload.description,
                report.chunks_per_second,
                report.ack_latency.p50_ms,
                report.ack_latency.p99_ms,
                report.verified
            );
            reports.push(report);
        }
        let _ = stop.send(());
        running.await??;
        let ceiling = measure_ceiling(dir.path(), 5.0, CHUNK_BYTES, 100).await?;
        println!(
            "round {round}: ceiling    {:>8.0} rows/s",
            ceiling.rows_per_second
        );
        ceilings.push(ceiling.rows_per_second);
    }
    ceilings.sort_by(f64::total_cmp);
    let ceiling = ceilings[ceilings.len() / 2];
    println!();
    for (workload, reports) in workloads.iter().zip(&mut results) {
        reports.sort_by(|a, b| a.chunks_per_second.total_cmp(&b.chunks_per_second));
        let median = &reports[reports.len() / 2];
        println!(
            "median {:<10} {:>8.0} chunks/s ({:>3.0} % of the ceiling)  ack p50 {:>6.1} ms  p99 {:>6.1} ms",
            workload.description,
            median.chunks_per_second,
            median.chunks_per_second / ceiling * 100.0,
            median.ack_latency.p50_ms,
            median.ack_latency.p99_ms
        );
    }
    println!("median ceiling    {ceiling:>8.0} rows/s");
    Ok(())
}

fn workload(
    name: &str,
    sessions: u32,
    chunks: u32,
    interval: Option<Duration>,
    window: u32,
) -> Workload {
    Workload {
        description: name.to_owned(),
        sessions,
        chunks,
        bytes: CHUNK_BYTES,
        interval,
        window,
        verify_seconds: 60.0,
    }
}
