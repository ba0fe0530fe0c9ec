//! Process metrics, in the Prometheus (OpenMetrics) text format at
//! `GET /metrics`, through the `prometheus-client` crate. Sessions by state
//! are read from the database at scrape time; everything else is counted as
//! it happens.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::SessionState;

/// Why a chunk was refused: a label of `spool_chunks_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The session is ready, failed, deleted or being finalized.
    SessionClosed,
    /// At or past the count declared by `finish`.
    BeyondFinish,
    UnknownSession,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Self::SessionClosed => "session_closed",
            Self::BeyondFinish => "beyond_finish",
            Self::UnknownSession => "unknown_session",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions_created: Counter,
    sessions: Family<StateLabel, Gauge>,
    chunks_stored: Counter,
    chunk_bytes_stored: Counter,
    chunks_duplicate: Counter,
    chunks_conflict: Counter,
    chunks_refused: Family<ReasonLabel, Counter>,
    ack_latency: Histogram,
    batch_rows: Histogram,
    commit_duration: Histogram,
    ws_connections: Counter,
    ws_open: Gauge,
    resident_bytes: Gauge,
    recordings_finalized: Counter,
    finalize_duration: Histogram,
    finalize_failures: Counter,
    rewrite_failures: Counter,
    recordings_expired: Counter,
    webhooks_delivered: Counter,
    webhook_failures: Counter,
    /// Chunks stored per second over the last minute: (second, count), oldest first.
    recent: Mutex<VecDeque<(u64, u64)>>,
}

/// The window `chunks_per_second_1m` averages over.
const RECENT_SECONDS: u64 = 60;
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// 0.5 ms to ~16 s: from one fsync to a badly overloaded writer.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Registry::with_prefix("spool"),
            sessions_created: Counter::default(),
            sessions: Family::default(),
            chunks_stored: Counter::default(),
            chunk_bytes_stored: Counter::default(),
            chunks_duplicate: Counter::default(),
            chunks_conflict: Counter::default(),
            chunks_refused: Family::default(),
            ack_latency: seconds_buckets(),
            batch_rows: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            commit_duration: seconds_buckets(),
            ws_connections: Counter::default(),
            ws_open: Gauge::default(),
            resident_bytes: Gauge::default(),
            recordings_finalized: Counter::default(),
            finalize_duration: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            finalize_failures: Counter::default(),
            rewrite_failures: Counter::default(),
            recordings_expired: Counter::default(),
            webhooks_delivered: Counter::default(),
            webhook_failures: Counter::default(),
            recent: Mutex::default(),
        };
        metrics.register()
    }
}

impl Metrics {
    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "sessions_created",
            "Sessions created",
            self.sessions_created.clone(),
        );
        r.register("sessions", "Sessions by state, now", self.sessions.clone());
        r.register(
            "process_resident_bytes",
            "Resident memory of the server process, now (0 where the system does not say)",
            self.resident_bytes.clone(),
        );
        r.register(
            "chunks_stored",
            "Chunks stored for the first time",
            self.chunks_stored.clone(),
        );
        r.register(
            "chunk_bytes_stored",
            "Payload bytes of chunks stored",
            self.chunk_bytes_stored.clone(),
        );
        r.register(
            "chunks_duplicate",
            "Resent chunks dropped as duplicates",
            self.chunks_duplicate.clone(),
        );
        r.register(
            "chunks_conflict",
            "Chunks refused: same index, other bytes",
            self.chunks_conflict.clone(),
        );
        r.register(
            "chunks_refused",
            "Chunks refused, by reason",
            self.chunks_refused.clone(),
        );
        r.register(
            "chunk_ack_seconds",
            "From a chunk reaching the writer to its commit being answered",
            self.ack_latency.clone(),
        );
        r.register(
            "writer_batch_rows",
            "Requests per writer transaction",
            self.batch_rows.clone(),
        );
        r.register(
            "writer_commit_seconds",
            "Writer transaction time, commit (fsync) included",
            self.commit_duration.clone(),
        );
        r.register(
            "ws_connections",
            "WebSocket connections accepted",
            self.ws_connections.clone(),
        );
        r.register(
            "ws_connections_open",
            "WebSocket connections open now",
            self.ws_open.clone(),
        );
        r.register(
            "recordings_finalized",
            "Recordings finalized",
            self.recordings_finalized.clone(),
        );
        r.register(
            "finalize_seconds",
            "Time to finalize a recording",
            self.finalize_duration.clone(),
        );
        r.register(
            "finalize_failures",
            "Failed finalize attempts (retried)",
            self.finalize_failures.clone(),
        );
        r.register(
            "rewrite_failures",
            "WebM recordings served joined as they came because the rewrite failed",
            self.rewrite_failures.clone(),
        );
        r.register(
            "recordings_expired",
            "Recordings deleted by --keep-recordings",
            self.recordings_expired.clone(),
        );
        r.register(
            "webhooks_delivered",
            "Webhook events delivered (answered 2xx)",
            self.webhooks_delivered.clone(),
        );
        r.register(
            "webhook_failures",
            "Webhook delivery attempts that failed (retried)",
            self.webhook_failures.clone(),
        );
        self
    }

    pub fn session_created(&self) {
        self.sessions_created.inc();
    }

    /// One writer transaction: how many requests, and how long it took.
    pub fn writer_batch(&self, rows: usize, took: Duration) {
        self.batch_rows.observe(rows as f64);
        self.commit_duration.observe(took.as_secs_f64());
    }

    /// A chunk's commit was answered `waited` after it reached the writer.
    pub fn chunk_answered(&self, waited: Duration) {
        self.ack_latency.observe(waited.as_secs_f64());
    }

    pub fn chunk_stored(&self, bytes: usize) {
        self.chunks_stored.inc();
        self.chunk_bytes_stored.inc_by(bytes as u64);
        let now = EPOCH.elapsed().as_secs();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        match recent.back_mut() {
            Some((second, count)) if *second == now => *count += 1,
            _ => recent.push_back((now, 1)),
        }
        while recent
            .front()
            .is_some_and(|(second, _)| second + RECENT_SECONDS <= now)
        {
            recent.pop_front();
        }
    }

    /// Chunks stored per second, averaged over the last minute.
    pub fn chunks_per_second_1m(&self) -> f64 {
        let now = EPOCH.elapsed().as_secs();
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let stored: u64 = recent
            .iter()
            .filter(|(second, _)| second + RECENT_SECONDS > now)
            .map(|(_, count)| count)
            .sum();
        stored as f64 / RECENT_SECONDS as f64
    }

    pub fn chunk_duplicate(&self) {
        self.chunks_duplicate.inc();
    }

    pub fn chunk_conflict(&self) {
        self.chunks_conflict.inc();
    }

    pub fn chunk_refused(&self, why: Refused) {
        self.chunks_refused
            .get_or_create(&ReasonLabel {
                reason: why.label(),
            })
            .inc();
    }

    pub fn connection_opened(&self) {
        self.ws_connections.inc();
        self.ws_open.inc();
    }

    pub fn connection_closed(&self) {
        self.ws_open.dec();
    }

    pub fn finalized(&self, took: Duration) {
        self.recordings_finalized.inc();
        self.finalize_duration.observe(took.as_secs_f64());
    }

    pub fn finalize_failed(&self) {
        self.finalize_failures.inc();
    }

    pub fn rewrite_failed(&self) {
        self.rewrite_failures.inc();
    }

    pub fn recording_expired(&self) {
        self.recordings_expired.inc();
    }

    pub fn webhook_delivered(&self) {
        self.webhooks_delivered.inc();
    }

    pub fn webhook_failed(&self) {
        self.webhook_failures.inc();
    }

    /// The text exposition, with sessions by state as counted just now.
    pub fn render(&self, sessions_by_state: &[(SessionState, i64)]) -> String {
        for state in [
            SessionState::Recording,
            SessionState::Finishing,
            SessionState::Ready,
            SessionState::Failed,
        ] {
            let count = sessions_by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.sessions
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(count);
        }
        self.resident_bytes.set(resident_bytes().unwrap_or(0));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// This process's resident memory, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: i64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let metrics = Metrics::default();
        metrics.chunk_stored(100);
        metrics.chunk_refused(Refused::BeyondFinish);
        metrics.writer_batch(3, Duration::from_millis(2));
        let text = metrics.render(&[(SessionState::Ready, 2)]);
        for line in [
            "spool_chunks_stored_total 1",
            "spool_chunk_bytes_stored_total 100",
            "spool_chunks_refused_total{reason=\"beyond_finish\"} 1",
            "spool_sessions{state=\"ready\"} 2",
            "spool_sessions{state=\"recording\"} 0",
            "spool_writer_batch_rows_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
