//! What a load run measured: ack latencies, chunks and bytes acknowledged,
//! closes by code, recordings verified. Shared by every recorder task; the
//! progress line reads the counters while the run goes on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Stats {
    pub chunks_sent: AtomicU64,
    pub chunks_acked: AtomicU64,
    pub bytes_acked: AtomicU64,
    pub sockets_open: AtomicU64,
    /// Ack latencies in microseconds, from the first send to the covering
    /// ack, of chunks acknowledged on the connection that first sent them.
    latencies: Mutex<Vec<u32>>,
    /// The same for chunks acknowledged only after a reconnect (the server
    /// shed or lost the connection they were first sent on).
    after_reconnect: Mutex<Vec<u32>>,
    /// From sending `finish` to the recording being ready, in microseconds.
    finalized_after: Mutex<Vec<u32>>,
    closes: Mutex<BTreeMap<u16, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    pub verified: AtomicU64,
    pub mismatched: AtomicU64,
    pub unfinished: AtomicU64,
}

impl Stats {
    /// Chunks acknowledged, each with its latency; `reconnected`: only
    /// after a reconnect.
    pub fn acked(&self, latencies: &[Duration], bytes: u64, reconnected: bool) {
        self.chunks_acked
            .fetch_add(latencies.len() as u64, Ordering::Relaxed);
        self.bytes_acked.fetch_add(bytes, Ordering::Relaxed);
        let list = if reconnected {
            &self.after_reconnect
        } else {
            &self.latencies
        };
        list.lock().expect("not poisoned").extend(
            latencies
                .iter()
                .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX)),
        );
    }

    /// A recording was ready this long after its `finish` was sent.
    pub fn finalized(&self, after_finish: Duration) {
        self.finalized_after
            .lock()
            .expect("not poisoned")
            .push(u32::try_from(after_finish.as_micros()).unwrap_or(u32::MAX));
    }

    /// From `finish` to ready, over every recording.
    pub fn finalize_latency(&self) -> Latency {
        Latency::of(&self.finalized_after)
    }

    /// The server closed a socket with `code` (1000 after `finalized` is not counted).
    pub fn closed(&self, code: u16) {
        *self
            .closes
            .lock()
            .expect("not poisoned")
            .entry(code)
            .or_default() += 1;
    }

    /// Something failed that is not a close code (a refused session, a transport error).
    pub fn error(&self, what: impl Into<String>) {
        *self
            .errors
            .lock()
            .expect("not poisoned")
            .entry(what.into())
            .or_default() += 1;
    }

    /// Of chunks acknowledged on the connection that sent them first.
    pub fn latency(&self) -> Latency {
        Latency::of(&self.latencies)
    }

    /// Of chunks acknowledged only after a reconnect.
    pub fn latency_after_reconnect(&self) -> Latency {
        Latency::of(&self.after_reconnect)
    }

    pub fn closes(&self) -> BTreeMap<u16, u64> {
        self.closes.lock().expect("not poisoned").clone()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("not poisoned").clone()
    }
}

/// Ack latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub chunks: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(list: &Mutex<Vec<u32>>) -> Self {
        let mut all = list.lock().expect("not poisoned").clone();
        all.sort_unstable();
        let at = |q: f64| -> f64 {
            if all.is_empty() {
                return 0.0;
            }
            let i = ((all.len() - 1) as f64 * q).round() as usize;
            f64::from(all[i]) / 1000.0
        };
        Self {
            chunks: all.len() as u64,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: at(1.0),
        }
    }
}
