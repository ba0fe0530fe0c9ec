//! Process counters, rendered as Prometheus text at `GET /metrics`.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Metrics {
    sessions_created: AtomicU64,
    chunks_stored: AtomicU64,
    chunk_bytes_stored: AtomicU64,
    chunks_duplicate: AtomicU64,
    chunks_conflict: AtomicU64,
    chunks_refused: AtomicU64,
    writer_batches: AtomicU64,
    writer_batch_rows: AtomicU64,
    ws_connections_total: AtomicU64,
    ws_connections_open: AtomicI64,
    recordings_finalized: AtomicU64,
    finalize_failures: AtomicU64,
    webhooks_delivered: AtomicU64,
    recordings_expired: AtomicU64,
    webhook_failures: AtomicU64,
    /// Chunks stored per second over the last minute: (second, count), oldest first.
    recent: Mutex<VecDeque<(u64, u64)>>,
}

/// The window `chunks_per_second_1m` averages over.
const RECENT_SECONDS: u64 = 60;
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Metrics {
    pub fn session_created(&self) {
        self.sessions_created.fetch_add(1, Relaxed);
    }

    pub fn writer_batch(&self, rows: usize) {
        self.writer_batches.fetch_add(1, Relaxed);
        self.writer_batch_rows.fetch_add(rows as u64, Relaxed);
    }

    pub fn chunk_stored(&self, bytes: usize) {
        self.chunks_stored.fetch_add(1, Relaxed);
        self.chunk_bytes_stored.fetch_add(bytes as u64, Relaxed);
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
        self.chunks_duplicate.fetch_add(1, Relaxed);
    }

    pub fn chunk_conflict(&self) {
        self.chunks_conflict.fetch_add(1, Relaxed);
    }

    pub fn chunk_refused(&self) {
        self.chunks_refused.fetch_add(1, Relaxed);
    }

    pub fn connection_opened(&self) {
        self.ws_connections_total.fetch_add(1, Relaxed);
        self.ws_connections_open.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.ws_connections_open.fetch_sub(1, Relaxed);
    }

    pub fn finalized(&self) {
        self.recordings_finalized.fetch_add(1, Relaxed);
    }

    pub fn recording_expired(&self) {
        self.recordings_expired.fetch_add(1, Relaxed);
    }

    pub fn webhook_delivered(&self) {
        self.webhooks_delivered.fetch_add(1, Relaxed);
    }

    pub fn webhook_failed(&self) {
        self.webhook_failures.fetch_add(1, Relaxed);
    }

    pub fn finalize_failed(&self) {
        self.finalize_failures.fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let counters: [(&str, &str, u64); 14] = [
            (
                "spool_sessions_created_total",
                "Sessions created.",
                self.sessions_created.load(Relaxed),
            ),
            (
                "spool_chunks_stored_total",
                "Chunks stored for the first time.",
                self.chunks_stored.load(Relaxed),
            ),
            (
                "spool_chunk_bytes_stored_total",
                "Payload bytes of chunks stored.",
                self.chunk_bytes_stored.load(Relaxed),
            ),
            (
                "spool_chunks_duplicate_total",
                "Resent chunks dropped as duplicates.",
                self.chunks_duplicate.load(Relaxed),
            ),
            (
                "spool_chunks_conflict_total",
                "Chunks refused: same index, other bytes.",
                self.chunks_conflict.load(Relaxed),
            ),
            (
                "spool_chunks_refused_total",
                "Chunks refused for a session's state.",
                self.chunks_refused.load(Relaxed),
            ),
            (
                "spool_writer_batches_total",
                "Transactions committed by the chunk writer.",
                self.writer_batches.load(Relaxed),
            ),
            (
                "spool_writer_batch_rows_total",
                "Requests carried by those transactions.",
                self.writer_batch_rows.load(Relaxed),
            ),
            (
                "spool_ws_connections_total",
                "WebSocket connections accepted.",
                self.ws_connections_total.load(Relaxed),
            ),
            (
                "spool_recordings_finalized_total",
                "Recordings finalized.",
                self.recordings_finalized.load(Relaxed),
            ),
            (
                "spool_finalize_failures_total",
                "Failed finalize attempts.",
                self.finalize_failures.load(Relaxed),
            ),
            (
                "spool_recordings_expired_total",
                "Recordings deleted by --keep-recordings.",
                self.recordings_expired.load(Relaxed),
            ),
            (
                "spool_webhooks_delivered_total",
                "Webhook events delivered (answered 2xx).",
                self.webhooks_delivered.load(Relaxed),
            ),
            (
                "spool_webhook_failures_total",
                "Webhook delivery attempts that failed (to be retried).",
                self.webhook_failures.load(Relaxed),
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let open = self.ws_connections_open.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP spool_ws_connections_open WebSocket connections open now.\n# TYPE spool_ws_connections_open gauge\nspool_ws_connections_open {open}"
        );
        out
    }
}
