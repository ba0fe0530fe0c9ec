//! Uploading, acknowledging and finalizing a recording.

use serde_json::json;

use crate::helpers::{Inspect, Ws, payloads, sha256_hex, spawn_app};

#[tokio::test]
async fn three_connections_out_of_order_with_duplicates_give_the_exact_recording() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let chunks = payloads(30, 1);
    let joined: Vec<u8> = chunks.concat();

    let (mut first, ready) = Ws::ready(&app, &session).await;
    assert_eq!(ready["committed"], 0);
    assert_eq!(ready["session"], session.id.as_str());
    assert_eq!(ready["max_chunk_bytes"], session.max_chunk_bytes);
    for i in [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 2] {
        first.send_chunk(i, &chunks[i as usize]).await;
    }
    assert_eq!(first.wait_ack(10).await, 10);

    // A second connection takes over from the first.
    let (mut second, ready) = Ws::ready(&app, &session).await;
    assert_eq!(ready["committed"], 10);
    let superseded = first.closed().await;
    assert_eq!(superseded.code, 4499);
    assert_eq!(superseded.error.unwrap()["code"], "superseded");
    for i in [
        25, 21, 29, 20, 22, 28, 23, 27, 24, 26, 12, 10, 5, 11, 13, 14, 12,
    ] {
        second.send_chunk(i, &chunks[i as usize]).await;
    }
    assert_eq!(second.wait_ack(15).await, 15);
    drop(second);

    let (mut third, ready) = Ws::ready(&app, &session).await;
    assert_eq!(ready["committed"], 15);
    for i in [19, 18, 17, 16, 15, 0, 1, 29] {
        third.send_chunk(i, &chunks[i as usize]).await;
    }
    assert_eq!(third.wait_ack(30).await, 30);
    third
        .send_json(json!({"type": "finish", "chunks": 30}))
        .await;
    let finishing = third.recv_json().await;
    assert_eq!(
        finishing,
        json!({"type": "finishing", "committed": 30, "chunks": 30})
    );
    let finalized = third.recv_json().await;
    assert_eq!(finalized["type"], "finalized", "{finalized}");
    assert_eq!(third.closed().await.code, 1000);

    let recording = &finalized["recording"];
    let expected_sha = sha256_hex(&joined);
    assert_eq!(recording["sha256"], expected_sha.as_str());
    assert_eq!(recording["source_sha256"], expected_sha.as_str());
    assert_eq!(recording["bytes"], joined.len());
    assert_eq!(recording["source_bytes"], joined.len());
    assert_eq!(recording["complete"], true);
    assert_eq!(recording["missing"], json!([]));
    assert_eq!(recording["mime_type"], "audio/webm;codecs=opus");

    let response = app
        .http
        .get(recording["url"].as_str().unwrap())
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["etag"],
        format!("\"{expected_sha}\"").as_str()
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), joined);

    let status = app.get_session(&session).await;
    assert_eq!(status["state"], "ready");
    assert_eq!(status["chunks_received"], 30);
    assert_eq!(status["bytes_received"], joined.len());
    assert_eq!(status["expected_chunks"], 30);
}

#[tokio::test]
async fn acks_are_cumulative_and_never_run_ahead_of_the_database() {
    let app = spawn_app().await;
    let session = app.create_session().await;
    let chunks = payloads(300, 2);
    let (mut ws, _) = Ws::ready(&app, &session).await;
    let db = Inspect::open(&app.db_path()).await;
    let seq = db.seq(&session.id).await.unwrap();

    // Chunk 1 alone leaves a gap at 0: nothing may be acknowledged.
    ws.send_chunk(1, &chunks[1]).await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.recv_json().await, json!({"type": "pong"}));
    ws.send_chunk(0, &chunks[0]).await;
    assert_eq!(ws.recv_json().await, json!({"type": "ack", "committed": 2}));

    ws.send_all(&chunks, 2).await;
    let mut last = 2;
    while last < 300 {
        let ack = ws.recv_json().await;
        assert_eq!(ack["type"], "ack");
        let committed = ack["committed"].as_i64().unwrap();
        assert!(
            committed > last,
            "acks only move forward: {committed} after {last}"
        );
        let stored = db.chunks_below(seq, committed).await;
        assert_eq!(
            stored, committed,
            "ack {committed} ran ahead of the database"
        );
        last = committed;
    }
    assert_eq!(last, 300);
}

#[tokio::test]
async fn a_connected_quiet_client_is_not_finalized_as_idle_until_it_leaves() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.idle_finalize_after = std::time::Duration::from_secs(1)
    })
    .await;
    let session = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, b"paused after this").await;
    assert_eq!(ws.wait_ack(1).await, 1);
    // Three idle limits of pings only, as a paused recorder sends.
    for _ in 0..15 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        ws.send_json(json!({"type": "ping"})).await;
        assert_eq!(ws.recv_json().await, json!({"type": "pong"}));
    }
    assert_eq!(app.get_session(&session).await["state"], "recording");
    drop(ws);
    let status = app.wait_finalized(&session).await;
    assert_eq!(status["state"], "ready");
    assert_eq!(status["recording"]["complete"], false);
}
