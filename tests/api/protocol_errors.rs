//! Every way the server ends a WebSocket: the `error` message (code and
//! retryable) it sends first and the close code, each with the input that
//! triggers it.

use std::time::Duration;

use serde_json::{Value, json};
use spool::domain::ChunkFrame;

use crate::helpers::{Created, TestApp, WAIT, Ws, sha256_hex, spawn_app, spawn_app_with};

/// Reads until the server closes and checks the close code and the `error` before it.
async fn assert_refused(ws: &mut Ws, close_code: u16, code: &str, retryable: bool) -> Value {
    let closed = ws.closed().await;
    let error = closed
        .error
        .unwrap_or_else(|| panic!("close {} came without an error message", closed.code));
    assert_eq!(closed.code, close_code, "{error}");
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], code, "{error}");
    assert_eq!(error["retryable"], retryable, "{error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "the error explains itself: {error}"
    );
    error
}

/// A session whose recording is joined byte for byte.
async fn plain_session(app: &TestApp) -> Created {
    app.create_session_with(json!({"mime_type": "application/octet-stream"}))
        .await
}

/// The WebSocket URL of any session id, with an optional token.
fn ws_url(app: &TestApp, id: &str, token: Option<&str>) -> String {
    let base = app.base.replacen("http://", "ws://", 1);
    match token {
        Some(token) => format!("{base}/v1/sessions/{id}/ws?token={token}"),
        None => format!("{base}/v1/sessions/{id}/ws"),
    }
}

/// Sends `frame` as the first thing on a fresh connection and expects 4400.
async fn assert_frame_is_malformed(frame: Vec<u8>) {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_binary(frame).await;
    assert_refused(&mut ws, 4400, "malformed", false).await;
    let status = app.get_session(&session).await;
    assert_eq!(status["chunks_received"], 0, "nothing stored: {status}");
    assert_eq!(status["committed"], 0, "{status}");
}

// ---- 4400: malformed frames and messages -------------------------------

#[tokio::test]
async fn a_frame_with_an_unknown_version_byte_closes_4400() {
    let mut frame = ChunkFrame::encode(0, true, b"abc");
    frame[0] = 2;
    assert_frame_is_malformed(frame).await;
}

#[tokio::test]
async fn a_frame_shorter_than_the_ten_byte_header_closes_4400() {
    let frame = ChunkFrame::encode(0, true, b"abc")[..9].to_vec();
    assert_eq!(frame.len(), 9);
    assert_frame_is_malformed(frame).await;
}

#[tokio::test]
async fn a_frame_whose_crc_does_not_match_its_payload_closes_4400() {
    let mut frame = ChunkFrame::encode(0, true, b"abc");
    let last = frame.len() - 1;
    frame[last] ^= 0x01;
    assert_frame_is_malformed(frame).await;
}

#[tokio::test]
async fn a_frame_with_an_empty_payload_closes_4400() {
    let frame = ChunkFrame::encode(0, true, b"");
    assert_eq!(frame.len(), 10);
    assert_frame_is_malformed(frame).await;
}

#[tokio::test]
async fn chunk_zero_without_the_new_stream_flag_closes_4400() {
    assert_frame_is_malformed(ChunkFrame::encode(0, false, b"abc")).await;
}

#[tokio::test]
async fn a_frame_with_unknown_flag_bits_closes_4400() {
    let mut frame = ChunkFrame::encode(0, true, b"abc");
    frame[1] = 0b0000_0011;
    assert_frame_is_malformed(frame).await;
}

#[tokio::test]
async fn malformed_json_text_closes_4400() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_text("{\"type\": \"finish\", ").await;
    assert_refused(&mut ws, 4400, "malformed", false).await;
}

#[tokio::test]
async fn an_unknown_message_type_closes_4400() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_json(json!({"type": "dance"})).await;
    assert_refused(&mut ws, 4400, "malformed", false).await;
}

#[tokio::test]
async fn finish_with_zero_chunks_closes_4400_and_leaves_the_session_recording() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_json(json!({"type": "finish", "chunks": 0})).await;
    assert_refused(&mut ws, 4400, "malformed", false).await;
    let status = app.get_session(&session).await;
    assert_eq!(status["state"], "recording", "{status}");
    assert_eq!(status["expected_chunks"], Value::Null, "{status}");
}

#[tokio::test]
async fn finishing_again_with_another_count_closes_4400() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_json(json!({"type": "finish", "chunks": 3})).await;
    assert_eq!(
        ws.recv_json().await,
        json!({"type": "finishing", "committed": 0, "chunks": 3})
    );
    // The same count again is fine.
    ws.send_json(json!({"type": "finish", "chunks": 3})).await;
    assert_eq!(
        ws.recv_json().await,
        json!({"type": "finishing", "committed": 0, "chunks": 3})
    );
    ws.send_json(json!({"type": "finish", "chunks": 4})).await;
    assert_refused(&mut ws, 4400, "malformed", false).await;
    let status = app.get_session(&session).await;
    assert_eq!(
        status["expected_chunks"], 3,
        "the first count stands: {status}"
    );
}

#[tokio::test]
async fn finish_with_a_count_not_above_a_received_index_closes_4400() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    // Chunk 5 first, so that the ack for 1 proves it is stored too.
    ws.send_chunk(5, b"five").await;
    ws.send_chunk(0, b"zero").await;
    assert_eq!(ws.wait_ack(1).await, 1);
    // Index 5 was received, so the recording has at least 6 chunks.
    ws.send_json(json!({"type": "finish", "chunks": 5})).await;
    assert_refused(&mut ws, 4400, "malformed", false).await;
    let status = app.get_session(&session).await;
    assert_eq!(status["state"], "recording", "{status}");
    assert_eq!(status["expected_chunks"], Value::Null, "{status}");
}

#[tokio::test]
async fn a_chunk_at_or_past_the_declared_count_closes_4400() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_json(json!({"type": "finish", "chunks": 2})).await;
    assert_eq!(ws.recv_json().await["type"], "finishing");
    ws.send_chunk(2, b"one too many").await;
    assert_refused(&mut ws, 4400, "malformed", false).await;
    let status = app.get_session(&session).await;
    assert_eq!(status["chunks_received"], 0, "{status}");
}

// ---- 4401: token -------------------------------------------------------

#[tokio::test]
async fn a_connection_without_a_token_closes_4401() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let mut ws = Ws::connect(&ws_url(&app, &session.id, None)).await;
    assert_refused(&mut ws, 4401, "unauthorized", false).await;
}

#[tokio::test]
async fn a_connection_with_another_sessions_token_closes_4401() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let other = plain_session(&app).await;
    let mut ws = Ws::connect(&ws_url(&app, &session.id, Some(&other.token))).await;
    assert_refused(&mut ws, 4401, "unauthorized", false).await;
}

// ---- 4404: unknown session ---------------------------------------------

#[tokio::test]
async fn a_well_formed_but_unknown_session_id_closes_4404() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_ne!(unknown, session.id);
    let mut ws = Ws::connect(&ws_url(&app, unknown, Some(&session.token))).await;
    assert_refused(&mut ws, 4404, "unknown_session", false).await;
}

#[tokio::test]
async fn a_malformed_session_id_closes_4404() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    for id in [
        "not-a-session",
        &session.id.to_uppercase(),
        &format!("{}0", session.id),
    ] {
        let mut ws = Ws::connect(&ws_url(&app, id, Some(&session.token))).await;
        assert_refused(&mut ws, 4404, "unknown_session", false).await;
    }
}

// ---- 4408: idle --------------------------------------------------------

#[tokio::test]
async fn a_connection_that_says_nothing_is_closed_4408_after_the_idle_timeout() {
    let app = spawn_app_with(|c| c.socket_idle_timeout = Duration::from_millis(300)).await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    let started = tokio::time::Instant::now();
    assert_refused(&mut ws, 4408, "idle_timeout", true).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );
}

#[tokio::test]
async fn pings_keep_an_otherwise_silent_connection_open() {
    let app = spawn_app_with(|c| c.socket_idle_timeout = Duration::from_millis(300)).await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    // Ten pings 100 ms apart span three idle timeouts.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ws.send_json(json!({"type": "ping"})).await;
        assert_eq!(ws.recv_json().await, json!({"type": "pong"}));
    }
    assert_refused(&mut ws, 4408, "idle_timeout", true).await;
}

// ---- 4409: conflict, and duplicates that are not ------------------------

#[tokio::test]
async fn the_same_index_with_other_bytes_closes_4409_and_overwrites_nothing() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, b"a").await;
    assert_eq!(ws.wait_ack(1).await, 1);
    ws.send_chunk(0, b"b").await;
    let error = assert_refused(&mut ws, 4409, "chunk_conflict", false).await;
    assert!(
        error["message"].as_str().unwrap().contains('0'),
        "names the index: {error}"
    );

    let (mut ws, ready) = Ws::ready(&app, &session).await;
    assert_eq!(ready["committed"], 1);
    ws.send_json(json!({"type": "finish", "chunks": 1})).await;
    assert_eq!(
        ws.recv_json().await,
        json!({"type": "finishing", "committed": 1, "chunks": 1})
    );
    let finalized = ws.recv_json().await;
    assert_eq!(finalized["type"], "finalized", "{finalized}");
    assert_eq!(finalized["recording"]["sha256"], sha256_hex(b"a").as_str());
    assert_eq!(ws.closed().await.code, 1000);
    assert_eq!(app.download(&session).await, b"a");
}

#[tokio::test]
async fn a_resent_chunk_with_the_same_bytes_is_acked_not_refused() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    // A duplicate before the original is acked, and one after.
    ws.send_chunk(0, b"a").await;
    ws.send_chunk(0, b"a").await;
    assert_eq!(ws.wait_ack(1).await, 1);
    ws.send_chunk(0, b"a").await;
    ws.send_chunk(1, b"b").await;
    ws.send_chunk(1, b"b").await;
    assert_eq!(ws.wait_ack(2).await, 2);
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.recv_json().await, json!({"type": "pong"}));

    // On a new connection too: what `ready` reports is already durable, so a
    // resend of it changes nothing and the connection goes on.
    drop(ws);
    let (mut ws, ready) = Ws::ready(&app, &session).await;
    assert_eq!(ready["committed"], 2);
    ws.send_chunk(1, b"b").await;
    ws.send_chunk(2, b"c").await;
    assert_eq!(ws.wait_ack(3).await, 3);

    let status = app.get_session(&session).await;
    assert_eq!(status["chunks_received"], 3, "{status}");
    assert_eq!(status["bytes_received"], 3, "{status}");
}

// ---- 4410: the session takes no more chunks -----------------------------

#[tokio::test]
async fn connecting_to_a_ready_session_closes_4410() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, b"all of it").await;
    ws.send_json(json!({"type": "finish", "chunks": 1})).await;
    assert_eq!(ws.closed().await.code, 1000);
    assert_eq!(app.wait_finalized(&session).await["state"], "ready");

    let mut late = app.connect(&session).await;
    assert_refused(&mut late, 4410, "session_closed", false).await;
}

#[tokio::test]
async fn deleting_a_session_closes_its_open_socket_4410() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, b"soon gone").await;
    assert_eq!(ws.wait_ack(1).await, 1);

    let response = app
        .http
        .delete(app.url(&format!("/v1/sessions/{}", session.id)))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_refused(&mut ws, 4410, "session_closed", false).await;
}

// ---- 4413: too large ---------------------------------------------------

#[tokio::test]
async fn a_payload_over_max_chunk_bytes_closes_4413() {
    let app = spawn_app_with(|c| c.max_chunk_bytes = 1024).await;
    let session = plain_session(&app).await;
    assert_eq!(session.max_chunk_bytes, 1024);
    let (mut ws, ready) = Ws::ready(&app, &session).await;
    assert_eq!(ready["max_chunk_bytes"], 1024);
    ws.send_chunk(0, &[7; 1025]).await;
    assert_refused(&mut ws, 4413, "chunk_too_large", false).await;
    assert_eq!(app.get_session(&session).await["chunks_received"], 0);
}

#[tokio::test]
async fn a_payload_of_exactly_max_chunk_bytes_is_stored() {
    let app = spawn_app_with(|c| c.max_chunk_bytes = 1024).await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, &[7; 1024]).await;
    assert_eq!(ws.wait_ack(1).await, 1);
    let status = app.get_session(&session).await;
    assert_eq!(status["bytes_received"], 1024, "{status}");
}

// ---- 4429: too fast ----------------------------------------------------

#[tokio::test]
async fn sending_far_over_the_chunk_rate_closes_4429_retryable() {
    let app = spawn_app_with(|c| c.max_chunks_per_second = 5).await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    for i in 0..40u32 {
        ws.send_chunk(i, format!("chunk {i}").as_bytes()).await;
    }
    assert_refused(&mut ws, 4429, "too_fast", true).await;

    // The burst (twice the rate) was taken; the flood was not.
    let deadline = tokio::time::Instant::now() + WAIT;
    let received = loop {
        let received = app.get_session(&session).await["chunks_received"]
            .as_i64()
            .unwrap();
        if received >= 10 || tokio::time::Instant::now() >= deadline {
            break received;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        (10..40).contains(&received),
        "{received} chunks stored from a burst of 40 at 5/s"
    );
}

// ---- 1001: server going away -------------------------------------------

#[tokio::test]
async fn a_graceful_stop_closes_open_sockets_1001_retryable() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    for i in 0..5u32 {
        ws.send_chunk(i, format!("chunk {i}").as_bytes()).await;
    }
    assert_eq!(ws.wait_ack(5).await, 5);

    let stopping = tokio::spawn(app.stop());
    assert_refused(&mut ws, 1001, "going_away", true).await;
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the server stops in time")
        .expect("the stop task")
        .expect("a clean stop");
}

// ---- ping ----------------------------------------------------------------

#[tokio::test]
async fn ping_is_answered_with_pong_and_the_connection_goes_on() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.recv_json().await, json!({"type": "pong"}));
    ws.send_chunk(0, b"still here").await;
    assert_eq!(ws.recv_json().await, json!({"type": "ack", "committed": 1}));
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.recv_json().await, json!({"type": "pong"}));
}
