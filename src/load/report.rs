//! The load run's report (a table for people, JSON for scripts) and the
//! progress line while it runs.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;

use super::ceiling::Ceiling;
use super::stats::{Latency, Stats};
use crate::client::Server;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub protocol: &'static str,
    pub seconds: f64,
    pub chunks_acked: u64,
    pub chunks_per_second: f64,
    pub mb_per_second: f64,
    /// Of chunks acknowledged on the connection that first sent them (what an admitted socket sees).
    pub ack_latency: Latency,
    /// Of chunks acknowledged only after a reconnect (their first connection was shed or lost).
    pub ack_latency_after_reconnect: Latency,
    /// From sending `finish` to the recording being ready (`chunks` = recordings).
    pub finalized_after_finish: Latency,
    /// Sockets closed by the server, by close code (a finished recording's 1000 is not counted).
    pub closes: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    pub verified: u64,
    pub mismatched: u64,
    pub unfinished: u64,
    pub ceiling: Option<Ceiling>,
    /// `chunks_per_second` over the ceiling's rows per second.
    pub fraction_of_ceiling: Option<f64>,
}

impl Report {
    pub fn new(
        workload: String,
        protocol: &'static str,
        stats: &Stats,
        elapsed: Duration,
        bytes: usize,
    ) -> Self {
        let seconds = elapsed.as_secs_f64();
        let chunks_acked = stats.chunks_acked.load(Ordering::Relaxed);
        let chunks_per_second = chunks_acked as f64 / seconds;
        Self {
            workload,
            protocol,
            seconds,
            chunks_acked,
            chunks_per_second,
            mb_per_second: chunks_per_second * bytes as f64 / 1e6,
            ack_latency: stats.latency(),
            ack_latency_after_reconnect: stats.latency_after_reconnect(),
            finalized_after_finish: stats.finalize_latency(),
            closes: stats.closes(),
            errors: stats.errors(),
            verified: stats.verified.load(Ordering::Relaxed),
            mismatched: stats.mismatched.load(Ordering::Relaxed),
            unfinished: stats.unfinished.load(Ordering::Relaxed),
            ceiling: None,
            fraction_of_ceiling: None,
        }
    }

    /// Adds the ceiling measured in the same run.
    pub fn set_ceiling(&mut self, ceiling: Ceiling) {
        self.fraction_of_ceiling = Some(self.chunks_per_second / ceiling.rows_per_second);
        self.ceiling = Some(ceiling);
    }

    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        let l = &self.ack_latency;
        println!("{} ({})", self.workload, self.protocol);
        println!(
            "  throughput   {:>10.0} chunks/s  {:>7.1} MB/s  ({} chunks in {:.1} s)",
            self.chunks_per_second, self.mb_per_second, self.chunks_acked, self.seconds
        );
        println!(
            "  ack latency  p50 {:.1} ms · p99 {:.1} ms · p999 {:.1} ms · max {:.1} ms",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        let r = &self.ack_latency_after_reconnect;
        if r.chunks > 0 {
            println!(
                "  after a reconnect ({} chunks): p50 {:.1} ms · p99 {:.1} ms · max {:.1} ms",
                r.chunks, r.p50_ms, r.p99_ms, r.max_ms
            );
        }
        println!(
            "  recordings   {} verified · {} mismatched · {} unfinished",
            self.verified, self.mismatched, self.unfinished
        );
        let f = &self.finalized_after_finish;
        if f.chunks > 0 {
            println!(
                "  finalized    p50 {:.0} ms · p99 {:.0} ms · last {:.0} ms after the finish",
                f.p50_ms, f.p99_ms, f.max_ms
            );
        }
        let closes: Vec<String> = self
            .closes
            .iter()
            .map(|(code, n)| format!("{code}×{n}"))
            .collect();
        println!(
            "  closes       {}",
            if closes.is_empty() {
                "none".to_owned()
            } else {
                closes.join(" · ")
            }
        );
        for (error, n) in &self.errors {
            println!("  error        {n} × {error}");
        }
        if let (Some(c), Some(f)) = (self.ceiling, self.fraction_of_ceiling) {
            println!(
                "  ceiling      {:.0} rows/s ({} rows per transaction over {} sessions): the server did {:.0} % of it",
                c.rows_per_second,
                c.batch_rows,
                c.sessions,
                f * 100.0
            );
        }
        Ok(())
    }
}

/// Prints a progress line every second (to stderr; overwritten in place on
/// a terminal) until aborted.
pub fn progress(stats: Arc<Stats>, started: Instant, show: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !show {
            return;
        }
        let terminal = std::io::stderr().is_terminal();
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let acked = stats.chunks_acked.load(Ordering::Relaxed);
            let line = format!(
                "[{:>4.0} s] sockets {} · sent {} · acked {} ({}/s) · verified {}",
                started.elapsed().as_secs_f64(),
                stats.sockets_open.load(Ordering::Relaxed),
                stats.chunks_sent.load(Ordering::Relaxed),
                acked,
                acked - last,
                stats.verified.load(Ordering::Relaxed),
            );
            last = acked;
            if terminal {
                eprint!("\r{line}\x1b[K");
            } else if started.elapsed().as_secs().is_multiple_of(5) {
                eprintln!("{line}");
            }
        }
    })
}

/// The server's resident memory, from its `/metrics`.
pub async fn resident_bytes(server: &Server) -> anyhow::Result<u64> {
    let text = reqwest::get(server.url("/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .find_map(|line| line.strip_prefix("spool_process_resident_bytes "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("the server's /metrics has no spool_process_resident_bytes")
}
