//! Ingest benchmark: chunks per second and ack latency through the real
//! server (in process, over loopback WebSockets), with group commit.
//!
//! `cargo bench --bench ingest` — or `cargo bench --bench ingest -- CONNECTIONS CHUNKS ROUNDS`.
//! Each round runs two loads on a fresh data directory, so their ratio is
//! taken under the same machine conditions:
//! - *lone*: one connection sending one chunk at a time and waiting for its
//!   ack (every commit carries one chunk: the cost of an fsync per chunk);
//! - *concurrent*: CONNECTIONS sockets, each keeping up to 32 chunks in
//!   flight (commits carry whatever is waiting: group commit);
//! - *paced*: 1000 recordings each sending 4 chunks a second (a 250 ms
//!   timeslice) for 10 s — the realistic load: what matters is ack latency.
//!
//! Client and server share this machine's cores, so absolute figures are
//! pessimistic; compare ratios and medians.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use spool::domain::ChunkFrame;
use spool::{App, Config};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const CHUNK_BYTES: usize = 2048;
const WINDOW: usize = 32;
const PACED_RECORDINGS: usize = 1000;
const PACED_RATE: u64 = 4;
const PACED_SECONDS: u64 = 10;

#[derive(Debug)]
struct Load {
    chunks_per_second: f64,
    ack_p50: Duration,
    ack_p99: Duration,
}

impl Load {
    /// One latency per chunk acknowledged within `elapsed`.
    fn from(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        Self {
            chunks_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            ack_p50: at(0.5),
            ack_p99: at(0.99),
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let connections = args.first().copied().unwrap_or(100);
    let chunks = args.get(1).copied().unwrap_or(200);
    let rounds = args.get(2).copied().unwrap_or(3);
    println!(
        "ingest: {connections} connections × {chunks} chunks of {CHUNK_BYTES} B, window {WINDOW}; lone: 1 × 300; {rounds} rounds"
    );
    let (mut lone, mut concurrent, mut paced) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::with_data_dir(dir.path());
        config.max_chunks_per_second = 0;
        config.max_sessions_per_minute = 0; // one client creates every session
        let app = App::build(config).await.unwrap();
        let base = format!("127.0.0.1:{}", app.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async { drop(stopped.await) }));

        let one = run_load(&base, 1, 300, 1).await;
        let many = run_load(&base, connections, chunks, WINDOW).await;
        let steady = run_paced(&base, PACED_RECORDINGS, PACED_RATE, PACED_SECONDS).await;
        println!(
            "round {round}: lone {one:?}\n         concurrent {many:?}\n         paced {steady:?}"
        );
        lone.push(one);
        concurrent.push(many);
        paced.push(steady);
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
    let median = |loads: &mut Vec<Load>| {
        loads.sort_by(|a, b| a.chunks_per_second.total_cmp(&b.chunks_per_second));
        loads.remove(loads.len() / 2)
    };
    let (one, many) = (median(&mut lone), median(&mut concurrent));
    paced.sort_by_key(|load| load.ack_p99);
    let steady = paced.remove(paced.len() / 2);
    println!(
        "\nmedian lone:       {:>9.0} chunks/s   ack p50 {:>7.2?}  p99 {:>7.2?}",
        one.chunks_per_second, one.ack_p50, one.ack_p99
    );
    println!(
        "median concurrent: {:>9.0} chunks/s   ack p50 {:>7.2?}  p99 {:>7.2?}",
        many.chunks_per_second, many.ack_p50, many.ack_p99
    );
    println!(
        "median paced ({PACED_RECORDINGS} × {PACED_RATE}/s): {:>5.0} chunks/s   ack p50 {:>7.2?}  p99 {:>7.2?}",
        steady.chunks_per_second, steady.ack_p50, steady.ack_p99
    );
    println!(
        "group commit gain (concurrent / lone throughput): {:.1}×",
        many.chunks_per_second / one.chunks_per_second
    );
}

async fn create_session(http: &reqwest::Client, base: &str) -> (String, String) {
    let body: Value = http
        .post(format!("http://{base}/v1/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        body["id"].as_str().unwrap().into(),
        body["token"].as_str().unwrap().into(),
    )
}

async fn run_load(base: &str, connections: usize, chunks: usize, window: usize) -> Load {
    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    for _ in 0..connections {
        sessions.push(create_session(&http, base).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|(id, token)| {
            let url = format!("ws://{base}/v1/sessions/{id}/ws?token={token}");
            tokio::spawn(upload(url, chunks, window))
        })
        .collect();
    gather(tasks, started).await
}

/// Waits for every upload task; their latencies over the time since `started`.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>, started: Instant) -> Load {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Load::from(latencies, started.elapsed())
}

/// Sends `chunks` chunks keeping at most `window` unacknowledged; returns
/// each chunk's time from send to the ack that covered it.
async fn upload(url: String, chunks: usize, window: usize) -> Vec<Duration> {
    let (mut ws, _) = connect_async(url).await.unwrap();
    let ready = ws.next().await.unwrap().unwrap();
    assert!(ready.to_text().unwrap().contains("\"ready\""));
    let payload = vec![7u8; CHUNK_BYTES];
    let mut sent_at = Vec::with_capacity(chunks);
    let mut latencies = Vec::with_capacity(chunks);
    let mut acked = 0;
    while acked < chunks {
        while sent_at.len() < chunks && sent_at.len() - acked < window {
            let index = sent_at.len() as u32;
            sent_at.push(Instant::now());
            ws.send(Message::Binary(
                ChunkFrame::encode(index, index == 0, &payload).into(),
            ))
            .await
            .unwrap();
        }
        let message = ws.next().await.unwrap().unwrap();
        let ack: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        let committed = ack["committed"].as_u64().unwrap() as usize;
        let now = Instant::now();
        latencies.extend(sent_at[acked..committed].iter().map(|t| now - *t));
        acked = committed;
    }
    latencies
}

/// `recordings` sockets, each sending `rate` chunks per second for `seconds`
/// (phases spread evenly); ack latency is what a recorder would see.
async fn run_paced(base: &str, recordings: usize, rate: u64, seconds: u64) -> Load {
    let http = reqwest::Client::new();
    let mut sockets = Vec::new();
    for _ in 0..recordings {
        let (id, token) = create_session(&http, base).await;
        let (mut ws, _) = connect_async(format!("ws://{base}/v1/sessions/{id}/ws?token={token}"))
            .await
            .unwrap();
        ws.next().await.unwrap().unwrap(); // ready
        sockets.push(ws);
    }
    let period = Duration::from_millis(1000 / rate);
    let chunks = (rate * seconds) as usize;
    let started = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(n, ws)| {
            let phase = period * n as u32 / recordings as u32;
            tokio::spawn(async move {
                let payload = vec![7u8; CHUNK_BYTES];
                let (mut sink, mut stream) = ws.split();
                let sender = tokio::spawn(async move {
                    let mut sent_at = Vec::with_capacity(chunks);
                    let mut tick =
                        tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
                    for index in 0..chunks as u32 {
                        tick.tick().await;
                        sent_at.push(Instant::now());
                        let frame = ChunkFrame::encode(index, index == 0, &payload);
                        sink.send(Message::Binary(frame.into())).await.unwrap();
                    }
                    sent_at
                });
                let mut acked_at = Vec::with_capacity(chunks);
                while acked_at.len() < chunks {
                    let message = stream.next().await.unwrap().unwrap();
                    let ack: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
                    let committed = ack["committed"].as_u64().unwrap() as usize;
                    let now = Instant::now();
                    acked_at.resize(committed, now);
                }
                let sent_at = sender.await.unwrap();
                sent_at
                    .iter()
                    .zip(&acked_at)
                    .map(|(sent, acked)| *acked - *sent)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    gather(tasks, started).await
}
