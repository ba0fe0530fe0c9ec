//! Denial of service: what one client can take from the server is bounded —
//! sockets, slow or silent connections, partial frames, metadata, sessions —
//! and a stop completes whatever clients do.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Closed, Inspect, TestApp, Ws, spawn_app_with};

/// Waits for the server to close a raw connection (EOF or reset), for at most `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn raw_connection(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_socket_over_max_connections_is_told_to_retry_later() {
    let app = spawn_app_with(|c| c.max_connections = 2).await;
    let session = app.create_session().await;
    let (first, _) = Ws::ready(&app, &session).await;
    let other = app.create_session().await;
    let (_second, _) = Ws::ready(&app, &other).await;

    let third = app.create_session().await;
    let mut refused = app.connect(&third).await;
    let closed = refused.closed().await;
    assert_eq!(closed.code, 4429);
    let error = closed.error.unwrap();
    assert_eq!(error["code"], "server_busy", "{error}");
    assert_eq!(error["retryable"], true);

    // A place comes free when a socket closes.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut ws = app.connect(&third).await;
        let message = ws.recv_json().await;
        if message["type"] == "ready" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no place came free: {message}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn silent_and_slow_header_connections_are_closed() {
    let app = spawn_app_with(|_| {}).await;
    let mut silent = raw_connection(&app).await;
    let mut slow = raw_connection(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // An idle keep-alive connection after one request.
    let mut idle = raw_connection(&app).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let within = spool::server::HEADER_READ_TIMEOUT + Duration::from_secs(10);
    assert!(
        closed_by_server(&mut silent, within).await,
        "a silent connection stayed open"
    );
    assert!(
        closed_by_server(&mut slow, within).await,
        "a slow-header connection stayed open"
    );
    assert!(
        closed_by_server(&mut idle, within).await,
        "an idle keep-alive connection stayed open"
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_answered_408() {
    let app = spawn_app_with(|_| {}).await;
    let mut slow_body = raw_connection(&app).await;
    slow_body
        .write_all(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(30), slow_body.read(&mut answer))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_download_whose_client_stops_reading_is_closed() {
    let app = spawn_app_with(|_| {}).await;
    let session = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    let chunk = vec![7u8; 1024 * 1024];
    for index in 0..24 {
        ws.send_chunk(index, &chunk).await;
    }
    ws.wait_ack(24).await;
    ws.send_json(json!({"type": "finish", "chunks": 24})).await;
    assert_eq!(ws.recv_json().await["type"], "finishing");
    drop(ws);
    app.wait_finalized(&session).await;
    let mut reader = raw_connection(&app).await;
    let request = format!(
        "GET /v1/sessions/{}/recording?token={} HTTP/1.1\r\nHost: x\r\n\r\n",
        session.id, session.token
    );
    reader.write_all(request.as_bytes()).await.unwrap();
    // Read a little, then stop reading: the server's sends block once the
    // socket buffers are full.
    let mut first = vec![0u8; 4096];
    let _ = reader.read(&mut first).await.unwrap();
    tokio::time::sleep(spool::server::STALL_TIMEOUT + Duration::from_secs(5)).await;
    let mut received = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled download was never closed");
    assert!(
        received < 24 * 1024 * 1024,
        "the whole file was sent after all"
    );
}

#[tokio::test]
async fn a_stop_completes_whatever_clients_do() {
    let app = spawn_app_with(|_| {}).await;
    let mut partial_header = raw_connection(&app).await;
    partial_header
        .write_all(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut slow_body = raw_connection(&app).await;
    slow_body
        .write_all(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    // A socket whose client never reads again.
    let session = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, &[1; 100]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(60), app.stop()).await;
    assert!(
        stopped.is_ok(),
        "the server did not stop while clients held connections"
    );
    stopped.unwrap().unwrap();
    drop((partial_header, slow_body, ws));
}

#[tokio::test]
async fn a_partial_frame_cannot_pin_memory_for_long() {
    let app = spawn_app_with(|_| {}).await;
    let session = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    // A masked binary frame announcing 1 MiB, of which only half is sent.
    let announced: u64 = 1024 * 1024;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&announced.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]); // mask key 0: payload as is
    frame.extend(std::iter::repeat_n(0u8, 512 * 1024));
    ws.write_raw(&frame).await;
    let closed = tokio::time::timeout(Duration::from_secs(40), ws.closed())
        .await
        .expect("the socket with a stalled frame was not closed");
    assert_eq!(closed.code, 4408);
    assert_eq!(closed.error.unwrap()["code"], "message_timeout");
}

#[tokio::test]
async fn metadata_is_bounded() {
    let app = spawn_app_with(|_| {}).await;
    let fits = "x".repeat(4000);
    app.create_session_with(json!({"metadata": {"note": fits}}))
        .await;
    let response = app
        .http
        .post(app.url("/v1/sessions"))
        .json(&json!({"metadata": {"note": "x".repeat(5000)}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "metadata_too_large");
}

#[tokio::test]
async fn anonymous_session_creation_is_rate_limited_per_client() {
    let app = spawn_app_with(|c| c.max_sessions_per_minute = 3).await;
    for _ in 0..3 {
        app.create_session().await;
    }
    let response = app
        .http
        .post(app.url("/v1/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");
}

#[tokio::test]
async fn the_api_key_holder_is_not_rate_limited() {
    let app = spawn_app_with(|c| {
        c.max_sessions_per_minute = 2;
        c.api_key = Some("backend-key".into());
    })
    .await;
    for _ in 0..5 {
        let response = app
            .http
            .post(app.url("/v1/sessions"))
            .bearer_auth("backend-key")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

/// A writer that falls behind sheds load instead of queueing it: with a
/// commit per chunk and a 1 ms `--max-writer-lag`, a burst leaves the server
/// turning a new connection away (or closing the bursting one) with 4429
/// `server_overloaded` and a retry hint, and every chunk acknowledged
/// before that is stored.
#[tokio::test]
async fn a_writer_that_falls_behind_sheds_load_with_a_retry_hint() {
    let app = spawn_app_with(|c| {
        c.max_writer_lag = Duration::from_millis(1);
        c.one_chunk_per_commit = true;
        c.max_chunks_per_second = 0;
    })
    .await;
    let burst = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &burst).await;
    let mut sent = 0;
    while sent < 600 && ws.try_send_chunk(sent, &[7; 2048]).await {
        sent += 1;
    }

    let late = app.create_session().await;
    let mut refused = app.connect(&late).await;
    let first = refused.recv_json().await;
    let late_closed = if first["type"] == "error" {
        let code = refused.closed().await.code;
        Some(Closed {
            code,
            error: Some(first),
        })
    } else {
        None
    };
    let (acked, burst_closed) = ws.acks_until(i64::from(sent)).await;

    let shed: Vec<Closed> = [late_closed, burst_closed].into_iter().flatten().collect();
    assert!(
        !shed.is_empty(),
        "neither the new connection nor the burst was shed ({acked} of {sent} acked)"
    );
    for closed in &shed {
        let error = closed.error.as_ref().expect("an error before the close");
        assert_eq!(closed.code, 4429, "{error}");
        assert_eq!(error["code"], "server_overloaded", "{error}");
        assert_eq!(error["retryable"], true, "{error}");
        assert!(error["retry_after_ms"].as_u64().unwrap() >= 1000, "{error}");
    }
    let db = Inspect::open(&app.db_path()).await;
    let seq = db.seq(&burst.id).await.unwrap();
    assert!(
        db.chunks_of(seq).await >= acked,
        "an acknowledged chunk is missing"
    );
}
