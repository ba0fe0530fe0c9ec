//! `spool load`: many simulated recorders against a running server, over
//! real sockets, with the engine's ceiling measured in the same run.
//!
//! - `realistic`: each recorder sends a chunk every 1000/R ms (±10 %), start
//!   times spread over one interval, for S seconds, then finishes;
//! - `saturate`: as fast as acks allow, a window of W chunks in flight each;
//! - `idle`: open sockets that only ping, for the server's memory per socket;
//! - `ceiling`: no server: rows straight into SQLite (see `Ceiling`).
//!
//! Every recording is checked at the end: its `source_sha256` against what
//! was sent (verified / mismatched / unfinished).

mod ceiling;
mod recorder;
pub mod report;
pub mod stats;
mod tus;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::client::{Server, Session};
pub use ceiling::Ceiling;
use recorder::{Outcome, Plan};
pub use report::Report;
use stats::Stats;

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Recorders sending at a steady rate, as browsers do.
    Realistic {
        /// Concurrent recordings.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        sessions: u32,
        /// Chunks per second per recording (10 = a 100 ms timeslice).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// How long each recording lasts.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        #[command(flatten)]
        common: Common,
    },
    /// Recorders sending as fast as their acks allow.
    Saturate {
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        sessions: u32,
        /// Chunks in flight (sent, not yet acknowledged) per recording.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
        window: u32,
        /// Chunks per recording.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        chunks: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Open sockets that only ping: the server's memory per idle connection.
    Idle {
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        sessions: u32,
        /// How long to hold them open.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[command(flatten)]
        target: Target,
    },
    /// The engine's ceiling alone: rows straight into a fresh SQLite file.
    Ceiling {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Bytes per row.
        #[arg(long, default_value_t = 2048)]
        bytes: usize,
        /// Sessions the rows are spread over, in turn.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        sessions: u32,
        /// Directory for the scratch database (the disk measured).
        #[arg(long, env = "TMPDIR", default_value = "/tmp")]
        dir: std::path::PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where the server is, and how to print.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The server's base URL.
    #[arg(long, env = "SPOOL_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The server's API key, if it has one (with it, creating sessions is not rate limited).
    #[arg(long, env = "SPOOL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Bytes per chunk.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    bytes: u32,
    /// The protocol spoken: Spool's WebSocket, or tus (a PATCH per chunk) for comparison.
    #[arg(long, value_enum, default_value_t = Protocol::Spool)]
    protocol: Protocol,
    /// Seconds of the engine's ceiling to measure after the load (0: skip).
    #[arg(long, default_value_t = 5.0)]
    ceiling_seconds: f64,
    /// Directory for the ceiling's scratch database.
    #[arg(long, env = "TMPDIR", default_value = "/tmp")]
    ceiling_dir: std::path::PathBuf,
    /// How long to wait for every recording to be finalized after the load.
    #[arg(long, default_value_t = 120.0)]
    verify_seconds: f64,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Spool,
    Tus,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    raise_file_limit();
    match args.mode {
        Mode::Ceiling {
            seconds,
            bytes,
            sessions,
            dir,
            json,
        } => {
            let ceiling = measure_ceiling(&dir, seconds, bytes, sessions).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ceiling)?);
            } else {
                println!(
                    "ceiling: {:.0} rows/s ({:.1} MB/s) of {bytes} B over {sessions} sessions, {} rows per transaction, {:.1} s",
                    ceiling.rows_per_second,
                    ceiling.mb_per_second,
                    ceiling.batch_rows,
                    ceiling.seconds
                );
            }
            Ok(())
        }
        Mode::Idle {
            sessions,
            seconds,
            target,
        } => idle(sessions, seconds, &target).await,
        Mode::Realistic {
            sessions,
            rate,
            seconds,
            common,
        } => {
            if !(rate > 0.0 && seconds > 0.0) {
                bail!("--rate and --seconds must be above 0");
            }
            let chunks = ((rate * seconds).round() as u32).max(1);
            let interval = Duration::from_secs_f64(1.0 / rate);
            let workload = format!(
                "realistic: {sessions} recordings × {rate}/s × {} B for {seconds} s",
                common.bytes
            );
            drive(
                sessions,
                chunks,
                Some(interval),
                u32::MAX,
                &common,
                workload,
            )
            .await
        }
        Mode::Saturate {
            sessions,
            window,
            chunks,
            common,
        } => {
            let workload = format!(
                "saturate: {sessions} recordings × {chunks} chunks × {} B, window {window}",
                common.bytes
            );
            drive(sessions, chunks, None, window, &common, workload).await
        }
    }
}

/// One load to run against a server.
#[derive(Debug, Clone)]
pub struct Workload {
    pub description: String,
    pub sessions: u32,
    pub chunks: u32,
    pub bytes: usize,
    /// Paced: a chunk per interval per recording; `None`: as fast as acks allow.
    pub interval: Option<Duration>,
    /// Chunks in flight per recording.
    pub window: u32,
    /// How long to wait for every recording to be finalized after the load.
    pub verify_seconds: f64,
}

/// Creates the sessions, runs every recorder to its verified end, and
/// returns what was measured (without a ceiling).
pub async fn run_load(server: &Server, workload: &Workload, show: bool) -> anyhow::Result<Report> {
    let stats = Arc::new(Stats::default());
    let (sessions, chunks, interval) = (workload.sessions, workload.chunks, workload.interval);
    let created = create_sessions(server, sessions, &stats, show).await?;
    let started = Instant::now();
    let spread = interval.unwrap_or(Duration::from_millis(200));
    let load_seconds = interval.map_or(0.0, |i| i.as_secs_f64() * f64::from(chunks));
    let deadline =
        started + Duration::from_secs_f64(load_seconds + workload.verify_seconds) + spread;
    let progress = report::progress(stats.clone(), started, show);
    let tasks: Vec<_> = created
        .into_iter()
        .enumerate()
        .map(|(number, session)| {
            let (server, stats) = (server.clone(), stats.clone());
            let plan = Plan {
                chunks,
                bytes: workload.bytes,
                interval,
                window: workload.window as usize,
                start_after: spread.mul_f64(number as f64 / f64::from(sessions)),
                deadline,
            };
            tokio::spawn(async move {
                let outcome =
                    recorder::record(&server, number as u64, &session, plan, &stats).await;
                match &outcome {
                    Outcome::Verified => stats.verified.fetch_add(1, Ordering::Relaxed),
                    Outcome::Mismatched => stats.mismatched.fetch_add(1, Ordering::Relaxed),
                    Outcome::Unfinished(why) => {
                        stats.error(format!("unfinished: {why}"));
                        stats.unfinished.fetch_add(1, Ordering::Relaxed)
                    }
                };
            })
        })
        .collect();
    // The load's span ends when the last chunk is acknowledged, not when
    // the last recording is verified.
    let mut load_elapsed = None;
    let expected = u64::from(sessions) * u64::from(chunks);
    let mut tasks = futures_util::stream::iter(tasks).buffer_unordered(usize::MAX);
    let watch = async {
        loop {
            if stats.chunks_acked.load(Ordering::Relaxed) >= expected {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::pin!(watch);
    loop {
        tokio::select! {
            elapsed = &mut watch, if load_elapsed.is_none() => load_elapsed = Some(elapsed),
            next = tasks.next() => match next {
                Some(joined) => joined.context("a recorder task panicked")?,
                None => break,
            },
        }
    }
    let load_elapsed = load_elapsed.unwrap_or_else(|| started.elapsed());
    progress.abort();
    if show {
        eprintln!();
    }
    Ok(Report::new(
        workload.description.clone(),
        "spool",
        &stats,
        load_elapsed,
        workload.bytes,
    ))
}

/// Measures the engine's ceiling for `seconds`, rows spread over
/// `sessions`, in a scratch directory under `dir`.
pub async fn measure_ceiling(
    dir: &std::path::Path,
    seconds: f64,
    bytes: usize,
    sessions: u32,
) -> anyhow::Result<Ceiling> {
    let scratch = tempfile::Builder::new()
        .prefix("spool-ceiling")
        .tempdir_in(dir)?;
    ceiling::measure(scratch.path(), seconds, bytes, sessions).await
}

/// Runs the load, then the ceiling, and reports both.
async fn drive(
    sessions: u32,
    chunks: u32,
    interval: Option<Duration>,
    window: u32,
    common: &Common,
    description: String,
) -> anyhow::Result<()> {
    let target = &common.target;
    if common.protocol == Protocol::Tus {
        return tus::drive(sessions, chunks, interval, common, description).await;
    }
    let server = Server::new(&target.server, target.api_key.clone());
    let workload = Workload {
        description,
        sessions,
        chunks,
        bytes: common.bytes as usize,
        interval,
        window,
        verify_seconds: common.verify_seconds,
    };
    let mut report = run_load(&server, &workload, !target.json).await?;
    if common.ceiling_seconds > 0.0 {
        let ceiling = measure_ceiling(
            &common.ceiling_dir,
            common.ceiling_seconds,
            workload.bytes,
            sessions,
        )
        .await?;
        report.set_ceiling(ceiling);
    }
    report.print(target.json)?;
    if report.mismatched > 0 || report.unfinished > 0 {
        bail!(
            "{} recordings mismatched, {} unfinished",
            report.mismatched,
            report.unfinished
        );
    }
    Ok(())
}

/// Creates `count` sessions, a few at a time; refusals are retried after
/// their `Retry-After`-like pause, so a rate-limited server slows this down
/// instead of failing it.
async fn create_sessions(
    server: &Server,
    count: u32,
    stats: &Stats,
    show: bool,
) -> anyhow::Result<Vec<Session>> {
    let mut created = Vec::with_capacity(count as usize);
    let mut creations = futures_util::stream::iter(0..count)
        .map(|_| async {
            for attempt in 0..20u32 {
                match server.create_session("application/octet-stream").await {
                    Ok(session) => return Ok(session),
                    Err(crate::client::ClientError::Refused { status: 429, .. }) => {
                        stats.error("create: 429 (use --api-key)");
                        tokio::time::sleep(Duration::from_millis(500 << attempt.min(4))).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(crate::client::ClientError::Unexpected(
                "session creation kept being refused".into(),
            ))
        })
        .buffer_unordered(32);
    while let Some(session) = creations.next().await {
        created.push(session.context("creating a session")?);
        if show && created.len() % 500 == 0 {
            eprint!("\rcreated {} of {count} sessions", created.len());
        }
    }
    if show && count >= 500 {
        eprintln!();
    }
    Ok(created)
}

/// Holds `sessions` sockets open, pinging, and reports the server's memory
/// growth per socket (from its `/metrics`).
async fn idle(sessions: u32, seconds: f64, target: &Target) -> anyhow::Result<()> {
    let server = Server::new(&target.server, target.api_key.clone());
    let stats = Arc::new(Stats::default());
    let before = report::resident_bytes(&server).await?;
    let created = create_sessions(&server, sessions, &stats, !target.json).await?;
    let started = Instant::now();
    let progress = report::progress(stats.clone(), started, !target.json);
    let hold = Duration::from_secs_f64(seconds);
    let mut opened = futures_util::stream::iter(created)
        .map(|session| async move { crate::client::Connection::open(&session).await })
        .buffer_unordered(64);
    let mut sockets = Vec::with_capacity(sessions as usize);
    while let Some(connection) = opened.next().await {
        match connection {
            Ok(connection) => {
                stats.sockets_open.fetch_add(1, Ordering::Relaxed);
                sockets.push(connection);
            }
            Err(e) => stats.error(format!("connect: {e}")),
        }
    }
    let all_open = started.elapsed();
    let until = Instant::now() + hold;
    let pingers: Vec<_> = sockets
        .into_iter()
        .map(|mut connection| {
            tokio::spawn(async move {
                while Instant::now() < until {
                    let next = (Instant::now() + Duration::from_secs(20)).min(until);
                    tokio::select! {
                        () = tokio::time::sleep_until(next) => {
                            if connection.ping().await.is_err() { return Some(1006); }
                        }
                        event = connection.next_event() => match event {
                            Ok(crate::client::Event::Closed { code, .. }) => return Some(code),
                            Err(_) => return Some(1006),
                            Ok(_) => {}
                        },
                    }
                }
                connection.close().await;
                None
            })
        })
        .collect();
    // Measured while every socket is still open.
    tokio::time::sleep(hold / 2).await;
    let during = report::resident_bytes(&server).await?;
    let mut closed_early = 0;
    for pinger in pingers {
        if let Some(code) = pinger.await? {
            stats.closed(code);
            closed_early += 1;
        }
    }
    progress.abort();
    let open = stats.sockets_open.load(Ordering::Relaxed);
    let growth = during.saturating_sub(before);
    let per_socket = growth.checked_div(open).unwrap_or(0);
    let summary = serde_json::json!({
        "workload": format!("idle: {sessions} sockets for {seconds} s"),
        "sockets_open": open,
        "closed_early": closed_early,
        "seconds_to_open_all": all_open.as_secs_f64(),
        "server_rss_before_bytes": before,
        "server_rss_with_sockets_bytes": during,
        "rss_per_socket_bytes": per_socket,
        "closes": stats.closes(),
        "errors": stats.errors(),
    });
    if target.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "idle: {open} sockets open ({closed_early} closed early) in {:.1} s\n\
             server RSS {:.1} MiB → {:.1} MiB: {:.1} KiB per socket",
            all_open.as_secs_f64(),
            before as f64 / 1048576.0,
            during as f64 / 1048576.0,
            per_socket as f64 / 1024.0
        );
    }
    Ok(())
}

/// A load generator holds thousands of sockets: lift the soft limit on
/// open files to the hard one.
fn raise_file_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("spool load: could not raise the open-file limit: {e}");
    }
}
