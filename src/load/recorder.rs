//! One simulated recorder: sends its chunks (paced, or as fast as its
//! window allows), measures each chunk's time from first send to the ack
//! that covers it, reconnects and resends from `committed` when the server
//! says to retry, finishes, and checks the recording's `source_sha256`
//! against what it sent.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::stats::Stats;
use crate::client::{ClientError, Connection, Event, Server, Session};

/// How one recorder sends.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub chunks: u32,
    pub bytes: usize,
    /// Paced: one chunk per interval (±10 % jitter). `None`: as fast as acks allow.
    pub interval: Option<Duration>,
    /// Most chunks sent and not yet acknowledged.
    pub window: usize,
    /// Wait this long before the first chunk (spreads start times).
    pub start_after: Duration,
    /// Give up on the recording (unfinished) at this instant.
    pub deadline: Instant,
}

/// How the recording ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Verified,
    Mismatched,
    Unfinished(String),
}

/// The bytes of chunk `index` of recorder `number`: the same every time
/// they are generated, so a resend needs nothing kept.
pub fn payload(number: u64, index: u32, bytes: usize) -> Vec<u8> {
    let mut state = number
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(index) + 1);
    let mut out = Vec::with_capacity(bytes + 8);
    while out.len() < bytes {
        // SplitMix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(bytes);
    out
}

/// A random-enough factor in [0.9, 1.1) from a counter (no RNG needed).
fn jitter(seed: u64) -> f64 {
    let bits = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
    0.9 + 0.2 * (bits as f64 / (1u64 << 24) as f64)
}

/// Runs one recording to its end and says how it ended.
pub async fn record(
    server: &Server,
    number: u64,
    session: &Session,
    plan: Plan,
    stats: &Stats,
) -> Outcome {
    tokio::time::sleep(plan.start_after).await;
    let mut run = Run {
        number,
        plan,
        first_sent: vec![None; plan.chunks as usize],
        connections: 0,
        retry_after: None,
        finished_at: None,
        sent: 0,
        acked: 0,
        next_due: Instant::now(),
        source: Sha256::new(),
        hashed: 0,
    };
    let mut attempt = 0u32;
    loop {
        if Instant::now() >= plan.deadline {
            return Outcome::Unfinished("out of time".into());
        }
        let connection = match Connection::open(session).await {
            Ok(connection) => connection,
            Err(ClientError::Rejected {
                code,
                retryable: true,
                retry_after,
            }) => {
                stats.error(format!("refused on connect: {code}"));
                attempt += 1;
                let hint = retry_after.unwrap_or_default();
                tokio::time::sleep(hint + backoff(attempt, number)).await;
                continue;
            }
            Err(ClientError::Rejected { code, .. }) => {
                return Outcome::Unfinished(format!("refused: {code}"));
            }
            Err(e) => {
                stats.error(format!("connect: {}", short(&e.to_string())));
                attempt += 1;
                tokio::time::sleep(backoff(attempt, number)).await;
                continue;
            }
        };
        stats
            .sockets_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ended = run.on_connection(connection, stats).await;
        stats
            .sockets_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match ended {
            Ended::Finalized(recording) => {
                return match run.verify(&recording, stats) {
                    true => Outcome::Verified,
                    false => Outcome::Mismatched,
                };
            }
            Ended::Retry(code) => {
                attempt += 1;
                let wait = match (code, run.retry_after.take()) {
                    (4429, Some(hint)) => hint + backoff(attempt, number),
                    (4429, None) => Duration::from_secs(1) + backoff(attempt, number),
                    _ => backoff(attempt, number),
                };
                tokio::time::sleep(wait).await;
            }
            Ended::ClosedAfterFinish => return run.poll_until_ready(server, session, stats).await,
            Ended::Fatal(why) => return Outcome::Unfinished(why),
        }
    }
}

fn backoff(attempt: u32, seed: u64) -> Duration {
    let base = 100u64 << attempt.min(5);
    Duration::from_millis((base as f64 * jitter(seed + u64::from(attempt))) as u64)
}

fn short(text: &str) -> String {
    text.chars().take(80).collect()
}

enum Ended {
    Finalized(serde_json::Value),
    /// Closed with a code worth retrying.
    Retry(u16),
    /// Closed normally after the finish, without `finalized`: ask over HTTP.
    ClosedAfterFinish,
    Fatal(String),
}

struct Run {
    number: u64,
    plan: Plan,
    /// When each chunk was first sent, and on which connection: latency runs
    /// from there, across reconnects.
    first_sent: Vec<Option<(Instant, u32)>>,
    /// Connections opened so far.
    connections: u32,
    /// An overloaded server's hint for the next reconnect.
    retry_after: Option<Duration>,
    /// When `finish` was first sent.
    finished_at: Option<Instant>,
    /// Chunks sent on this connection's watch (the next index to send).
    sent: u32,
    acked: u32,
    next_due: Instant,
    /// SHA-256 of the chunks, in order, hashed as they are first sent.
    source: Sha256,
    hashed: u32,
}

impl Run {
    async fn on_connection(&mut self, mut connection: Connection, stats: &Stats) -> Ended {
        self.connections += 1;
        let committed = u32::try_from(connection.ready_committed.max(0)).unwrap_or(0);
        self.ack(committed.min(self.plan.chunks), stats);
        self.sent = self.acked; // resend whatever is not durable
        let mut finish_sent = false;
        let mut quiet_since = Instant::now();
        loop {
            let all_sent = self.sent >= self.plan.chunks;
            if all_sent && !finish_sent {
                if let Err(e) = connection.finish(self.plan.chunks).await {
                    stats.error(format!("send: {}", short(&e.to_string())));
                    return Ended::Retry(1006);
                }
                finish_sent = true;
                self.finished_at.get_or_insert_with(Instant::now);
            }
            let window_open = (self.sent - self.acked) < self.plan.window as u32;
            let resending = self.first_sent[self.sent.min(self.plan.chunks - 1) as usize].is_some();
            let due = if resending || self.plan.interval.is_none() {
                Instant::now()
            } else {
                self.next_due
            };
            let ping_at = quiet_since + Duration::from_secs(20);
            tokio::select! {
                biased;
                event = connection.next_event() => {
                    quiet_since = Instant::now();
                    match event {
                        Ok(Event::Ack { committed }) | Ok(Event::Finishing { committed, .. }) => {
                            let committed = u32::try_from(committed.max(0)).unwrap_or(0);
                            self.ack(committed.min(self.plan.chunks), stats);
                        }
                        Ok(Event::Finalized { recording }) => {
                            connection.close().await;
                            return Ended::Finalized(recording);
                        }
                        Ok(Event::Error { retry_after, .. }) => self.retry_after = retry_after,
                        Ok(Event::Pong) => {}
                        Ok(Event::Closed { code, .. }) => {
                            if code == 1000 && finish_sent {
                                return Ended::ClosedAfterFinish;
                            }
                            stats.closed(code);
                            return match code {
                                1001 | 1006 | 1011 | 1012 | 1013 | 4408 | 4429 | 4499 => Ended::Retry(code),
                                _ => Ended::Fatal(format!("closed with {code}")),
                            };
                        }
                        Err(e) => {
                            stats.error(format!("socket: {}", short(&e.to_string())));
                            return Ended::Retry(1006);
                        }
                    }
                }
                () = wait_until(due), if !all_sent && window_open => {
                    if let Err(e) = self.send_next(&mut connection, stats).await {
                        stats.error(format!("send: {}", short(&e.to_string())));
                        return Ended::Retry(1006);
                    }
                }
                () = tokio::time::sleep_until(ping_at) => {
                    quiet_since = Instant::now();
                    if connection.ping().await.is_err() {
                        return Ended::Retry(1006);
                    }
                }
                () = tokio::time::sleep_until(self.plan.deadline) => {
                    return Ended::Fatal("out of time".into());
                }
            }
        }
    }

    async fn send_next(
        &mut self,
        connection: &mut Connection,
        stats: &Stats,
    ) -> Result<(), crate::client::ClientError> {
        let index = self.sent;
        let payload = payload(self.number, index, self.plan.bytes);
        connection.send_chunk(index, index == 0, &payload).await?;
        self.sent += 1;
        let slot = &mut self.first_sent[index as usize];
        if slot.is_none() {
            let now = Instant::now();
            *slot = Some((now, self.connections));
            stats
                .chunks_sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(interval) = self.plan.interval {
                let factor = jitter(self.number ^ (u64::from(index) << 32));
                self.next_due = self.next_due.max(now - interval) + interval.mul_f64(factor);
            }
        }
        if index == self.hashed {
            self.source.update(&payload);
            self.hashed += 1;
        }
        Ok(())
    }

    /// Everything below `committed` is durable: record the new acks' latencies.
    fn ack(&mut self, committed: u32, stats: &Stats) {
        if committed <= self.acked {
            return;
        }
        let now = Instant::now();
        let (mut here, mut later) = (Vec::new(), Vec::new());
        for sent in &self.first_sent[self.acked as usize..committed as usize] {
            match sent {
                Some((at, connection)) if *connection == self.connections => here.push(now - *at),
                Some((at, _)) => later.push(now - *at),
                None => {} // durable before this run sent it (never, in a fresh session)
            }
        }
        for (latencies, reconnected) in [(here, false), (later, true)] {
            if !latencies.is_empty() {
                let bytes = (latencies.len() * self.plan.bytes) as u64;
                stats.acked(&latencies, bytes, reconnected);
            }
        }
        self.acked = committed;
    }

    fn verify(&mut self, recording: &serde_json::Value, stats: &Stats) -> bool {
        if let Some(at) = self.finished_at {
            stats.finalized(at.elapsed());
        }
        let expected = hex::encode(std::mem::take(&mut self.source).finalize());
        recording["source_sha256"].as_str() == Some(expected.as_str())
            && recording["complete"] == true
    }

    async fn poll_until_ready(
        &mut self,
        server: &Server,
        session: &Session,
        stats: &Stats,
    ) -> Outcome {
        while Instant::now() < self.plan.deadline {
            match server.status(session).await {
                Ok(status) if status["state"] == "ready" => {
                    return match self.verify(&status["recording"], stats) {
                        true => Outcome::Verified,
                        false => Outcome::Mismatched,
                    };
                }
                Ok(status) if status["state"] == "failed" => {
                    return Outcome::Unfinished(format!("failed: {}", status["failure_reason"]));
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        Outcome::Unfinished("not finalized in time".into())
    }
}

/// Waits for `due`, and not at all once it has passed: tokio's timer fires
/// a deadline already gone only at its next millisecond tick, which held
/// a recording sending as fast as acks allow to under 1,000 chunks/s.
async fn wait_until(due: Instant) {
    if due > Instant::now() {
        tokio::time::sleep_until(due).await;
    }
}
