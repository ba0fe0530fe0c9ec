//! The same workload over tus 1.0 (what a team would otherwise pick: one
//! upload per recording, created with a deferred length, a `PATCH` per
//! chunk, each answered once the server has written it). For comparison
//! only: run a tus server (see `benches/tus-peer.sh`) and point `--server`
//! at its endpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::Common;
use super::recorder::payload;
use super::report::{self, Report};
use super::stats::Stats;

const TUS: &str = "1.0.0";

pub async fn drive(
    sessions: u32,
    chunks: u32,
    interval: Option<Duration>,
    common: &Common,
    workload: String,
) -> anyhow::Result<()> {
    let endpoint = common.target.server.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(Duration::from_secs(120))
        .build()?;
    let stats = Arc::new(Stats::default());
    let bytes = common.bytes as usize;
    let started = Instant::now();
    let progress = report::progress(stats.clone(), started, !common.target.json);
    let spread = interval.unwrap_or(Duration::from_millis(200));
    let uploads = futures_util::stream::iter(0..sessions)
        .map(|number| {
            let (http, endpoint, stats) = (http.clone(), endpoint.clone(), stats.clone());
            let start_after = spread.mul_f64(f64::from(number) / f64::from(sessions));
            tokio::spawn(async move {
                tokio::time::sleep(start_after).await;
                let upload = Upload {
                    http: &http,
                    number: u64::from(number),
                    chunks,
                    bytes,
                    interval,
                };
                match upload.run(&endpoint, &stats).await {
                    Ok(true) => stats.verified.fetch_add(1, Ordering::Relaxed),
                    Ok(false) => stats.mismatched.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        stats.error(format!("{e:#}").chars().take(100).collect::<String>());
                        stats.unfinished.fetch_add(1, Ordering::Relaxed)
                    }
                };
            })
        })
        .collect::<Vec<_>>()
        .await;
    for upload in uploads {
        upload.await.context("a tus upload task panicked")?;
    }
    let elapsed = started.elapsed();
    progress.abort();
    let report = Report::new(workload, "tus", &stats, elapsed, bytes);
    report.print(common.target.json)?;
    Ok(())
}

struct Upload<'a> {
    http: &'a reqwest::Client,
    number: u64,
    chunks: u32,
    bytes: usize,
    interval: Option<Duration>,
}

impl Upload<'_> {
    /// Creates the upload, sends every chunk, then reads it back: whether
    /// it holds exactly what was sent.
    async fn run(&self, endpoint: &str, stats: &Stats) -> anyhow::Result<bool> {
        let created = self
            .http
            .post(endpoint)
            .header("Tus-Resumable", TUS)
            .header("Upload-Defer-Length", "1")
            .send()
            .await?;
        if created.status() != StatusCode::CREATED {
            bail!("create: {}", created.status());
        }
        let location = created
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("create: no Location")?;
        let url = reqwest::Url::parse(endpoint)?.join(location)?;
        let mut source = Sha256::new();
        let mut offset = 0u64;
        let mut due = Instant::now();
        for index in 0..self.chunks {
            tokio::time::sleep_until(due).await;
            let body = payload(self.number, index, self.bytes);
            source.update(&body);
            let sent = Instant::now();
            let mut patch = self
                .http
                .patch(url.clone())
                .header("Tus-Resumable", TUS)
                .header("Upload-Offset", offset)
                .header("Content-Type", "application/offset+octet-stream");
            if index + 1 == self.chunks {
                patch = patch.header("Upload-Length", offset + body.len() as u64);
            }
            stats.chunks_sent.fetch_add(1, Ordering::Relaxed);
            let answer = patch.body(body).send().await?;
            if answer.status() != StatusCode::NO_CONTENT {
                bail!("PATCH: {}", answer.status());
            }
            offset += self.bytes as u64;
            stats.acked(&[sent.elapsed()], self.bytes as u64, false);
            if let Some(interval) = self.interval {
                due = due.max(sent - interval) + interval;
            }
        }
        let stored = self
            .http
            .get(url)
            .header("Tus-Resumable", TUS)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok(Sha256::digest(&stored)[..] == source.finalize()[..])
    }
}
