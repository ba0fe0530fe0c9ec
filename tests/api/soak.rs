//! Crash soak: the real binary is killed (`kill -9`) at random moments while
//! several sessions upload, finish and are deleted. After every restart each
//! acknowledged chunk is still there (`ready.committed` never falls below the
//! last ack), every finished recording is byte-exact, and deleted sessions
//! leave nothing behind.
//!
//! `SPOOL_SOAK_KILLS=200 cargo test --test api soak` runs a long soak; the
//! seed is printed, and `SPOOL_SOAK_SEED` replays one.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use spool::domain::ChunkFrame;

use crate::helpers::{Inspect, ServerProcess, eventually, sha256_hex, stored_recording};

/// A small deterministic generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the test knows about one session, as its client would.
struct Tracked {
    id: String,
    /// The session's key in the database, to look for leftovers.
    seq: i64,
    token: String,
    chunks: Vec<Vec<u8>>,
    /// The highest `committed` the server acknowledged.
    acked: i64,
    /// Deleted when the test decides to, after this many connections.
    delete_after: Option<u32>,
    connections: u32,
    /// A delete was sent; its answer may have been lost to a kill.
    delete_sent: bool,
    deleted: bool,
    verified_ready: bool,
}

impl Tracked {
    fn done(&self) -> bool {
        self.deleted || self.verified_ready
    }

    fn url(&self, base: &str, rest: &str) -> String {
        format!("{base}/v1/sessions/{}{rest}", self.id)
    }
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_no_acknowledged_chunk() {
    let kills: u32 = env_or("SPOOL_SOAK_KILLS", 8);
    let seed: u64 = env_or("SPOOL_SOAK_SEED", rand_seed());
    println!("crash soak: {kills} kills, SPOOL_SOAK_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--max-sessions-per-minute",
        "0",
        "--max-chunks-per-second",
        "0",
    ];
    let mut sessions: Vec<Tracked> = Vec::new();
    let mut acked_total = 0;
    for kill in 0..kills {
        let server = ServerProcess::start(dir.path(), &args).await;
        let base = server.base.clone();
        for session in sessions.iter_mut().filter(|s| !s.done()) {
            check_after_restart(&base, session).await;
        }
        while sessions.iter().filter(|s| !s.done()).count() < 3 {
            match create(&base, &dir.path().join("spool.db"), &mut rng).await {
                Some(session) => sessions.push(session),
                None => break,
            }
        }
        let delay = Duration::from_millis(150 + rng.below(1200));
        let killer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            server.kill9().await;
        });
        let seeds: Vec<u64> = (0..sessions.len()).map(|_| rng.next()).collect();
        let drivers = sessions
            .iter_mut()
            .zip(seeds)
            .filter(|(s, _)| !s.done())
            .map(|(s, seed)| drive(&base, s, seed));
        let _ = tokio::time::timeout(Duration::from_secs(30), join_all(drivers)).await;
        killer.await.unwrap();
        acked_total = sessions.iter().map(|s| s.acked).sum::<i64>();
        let ready = sessions.iter().filter(|s| s.verified_ready).count();
        let deleted = sessions.iter().filter(|s| s.deleted).count();
        println!(
            "kill {}: {} sessions ({ready} verified ready, {deleted} deleted), {acked_total} chunks acked",
            kill + 1,
            sessions.len()
        );
    }

    // A last start: everything still open is checked once more, and deleted
    // sessions have left nothing behind.
    let server = ServerProcess::start(dir.path(), &args).await;
    for session in sessions.iter_mut().filter(|s| !s.done()) {
        check_after_restart(&server.base, session).await;
    }
    let db = Inspect::open(&dir.path().join("spool.db")).await;
    let mut seqs = Vec::new();
    for session in sessions.iter().filter(|s| s.deleted) {
        seqs.push(session.seq);
        let gone = || async {
            db.seq(&session.id).await.is_none()
                && stored_recording(dir.path(), &session.id).await.is_none()
        };
        eventually("a deleted session's row and file are removed", gone).await;
    }
    for seq in seqs {
        assert_eq!(db.chunks_of(seq).await, 0, "a deleted session kept chunks");
    }
    assert!(acked_total > 0, "the soak never got a chunk acknowledged");
    server.kill9().await;
}

/// After a restart: a session's acked chunks are all there; a ready one is byte-exact.
async fn check_after_restart(base: &str, session: &mut Tracked) {
    let response = reqwest::Client::new()
        .get(session.url(base, ""))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    if response.status() == 404 {
        assert!(
            session.delete_sent,
            "session {} vanished without a delete",
            session.id
        );
        session.deleted = true;
        return;
    }
    assert_eq!(response.status(), 200);
    let status: Value = response.json().await.unwrap();
    let committed = status["committed"].as_i64().unwrap();
    assert!(
        committed >= session.acked,
        "session {}: committed {committed} after a restart, but {} were acked",
        session.id,
        session.acked
    );
    if status["state"] == "ready" {
        verify_recording(base, session, &status).await;
    }
}

async fn verify_recording(base: &str, session: &mut Tracked, status: &Value) {
    let joined = session.chunks.concat();
    let recording = &status["recording"];
    assert_eq!(recording["complete"], true, "{status}");
    assert_eq!(
        recording["sha256"],
        sha256_hex(&joined).as_str(),
        "{status}"
    );
    let bytes = reqwest::Client::new()
        .get(session.url(base, "/recording"))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        bytes[..] == joined[..],
        "session {}: the recording differs from its chunks",
        session.id
    );
    session.verified_ready = true;
}

async fn create(base: &str, db: &std::path::Path, rng: &mut Rng) -> Option<Tracked> {
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"mime_type": "audio/ogg;codecs=opus"}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let count = 40 + rng.below(120) as usize;
    let chunks = (0..count)
        .map(|_| {
            (0..100 + rng.below(1500))
                .map(|_| rng.next() as u8)
                .collect()
        })
        .collect();
    let id = created["id"].as_str()?.to_owned();
    let seq = Inspect::open(db).await.seq(&id).await?;
    Some(Tracked {
        seq,
        id,
        token: created["token"].as_str()?.to_owned(),
        chunks,
        acked: 0,
        delete_after: (rng.below(4) == 0).then(|| rng.below(3) as u32),
        connections: 0,
        delete_sent: false,
        deleted: false,
        verified_ready: false,
    })
}

/// Works on a session until it is done or the server dies: connect, resend
/// from `committed`, finish, download; or delete it when its time has come.
async fn drive(base: &str, session: &mut Tracked, seed: u64) {
    let mut rng = Rng(seed);
    while !session.done() {
        if session
            .delete_after
            .is_some_and(|after| session.connections >= after)
        {
            session.delete_sent = true;
            let Ok(response) = reqwest::Client::new()
                .delete(session.url(base, ""))
                .bearer_auth(&session.token)
                .send()
                .await
            else {
                return;
            };
            assert!(
                matches!(response.status().as_u16(), 204 | 404),
                "{}",
                response.status()
            );
            session.deleted = true;
            return;
        }
        session.connections += 1;
        if upload(base, session, &mut rng).await.is_none() {
            return;
        }
    }
}

/// One connection's worth of work; `None` when the connection broke.
async fn upload(base: &str, session: &mut Tracked, rng: &mut Rng) -> Option<()> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let url = format!(
        "{}?token={}",
        session.url(&base.replace("http://", "ws://"), "/ws"),
        session.token
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
    let ready = next_json(&mut ws).await?;
    assert_eq!(ready["type"], "ready", "{ready}");
    let committed = ready["committed"].as_i64().unwrap();
    assert!(
        committed >= session.acked,
        "session {}: ready.committed {committed} is below the last ack {}",
        session.id,
        session.acked
    );
    // Send part or all of what is left, as a recorder still recording would.
    let total = session.chunks.len() as i64;
    let upto = (committed + 1 + rng.below(total as u64) as i64).min(total);
    for index in committed..upto {
        let frame = ChunkFrame::encode(index as u32, index == 0, &session.chunks[index as usize]);
        ws.send(Message::Binary(frame.into())).await.ok()?;
    }
    if upto == total {
        ws.send(Message::Text(
            json!({"type": "finish", "chunks": total})
                .to_string()
                .into(),
        ))
        .await
        .ok()?;
    }
    loop {
        let message = next_json(&mut ws).await?;
        match message["type"].as_str() {
            Some("ack") => {
                session.acked = session.acked.max(message["committed"].as_i64().unwrap());
                if session.acked == upto && upto < total {
                    return Some(()); // reconnect for the rest
                }
            }
            Some("finishing") => {}
            Some("finalized") => {
                let status = json!({"recording": message["recording"]});
                session.acked = total;
                verify_recording(base, session, &status).await;
                return Some(());
            }
            _ => panic!("unexpected message {message}"),
        }
    }
}

/// The next text message as JSON; `None` once the connection closes or breaks.
async fn next_json<S>(ws: &mut S) -> Option<Value>
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
