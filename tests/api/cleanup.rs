//! Deleting sessions and releasing what failed or abandoned sessions hold:
//! nothing acknowledged is lost to another session's delete, and nothing
//! deleted is left behind, even across a restart or a crash.

use std::time::Duration;

use serde_json::json;
use spool::domain::MimeType;
use spool::storage::{S3Location, S3Recordings};

use crate::helpers::{
    Created, Inspect, ServerProcess, TestApp, Ws, eventually, payloads, recordings_of, sha256_hex,
    spawn_app_with, spawn_in, test_storage,
};

/// A server that lets one socket send chunks as fast as it can.
async fn unthrottled() -> TestApp {
    spawn_app_with(|c| c.max_chunks_per_second = 0).await
}

/// Uploads `count` tiny chunks to a new session and waits for the last ack.
async fn session_with_chunks(app: &TestApp, count: usize) -> Created {
    let session = app.create_session().await;
    let (mut ws, _) = Ws::ready(app, &session).await;
    let chunks: Vec<Vec<u8>> = (0..count)
        .map(|i| (i as u32).to_be_bytes().to_vec())
        .collect();
    ws.send_all(&chunks, 0).await;
    assert_eq!(ws.wait_ack(count as i64).await, count as i64);
    session
}

async fn delete(app: &TestApp, session: &Created) -> reqwest::StatusCode {
    app.http
        .delete(app.url(&format!("/v1/sessions/{}", session.id)))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_deleted_sessions_key_is_never_given_to_a_new_session() {
    let app = unthrottled().await;
    let db = Inspect::open(&app.db_path()).await;
    let first = app.create_session().await;
    let first_seq = db.seq(&first.id).await.unwrap();
    assert_eq!(delete(&app, &first).await, 204);
    let second = app.create_session().await;
    let second_seq = db.seq(&second.id).await.unwrap();
    assert!(
        second_seq > first_seq,
        "session key {first_seq} was reused as {second_seq}"
    );
}

#[tokio::test]
async fn a_delete_running_while_a_session_is_created_keeps_the_new_sessions_chunks() {
    let app = unthrottled().await;
    let db = Inspect::open(&app.db_path()).await;
    let doomed = session_with_chunks(&app, 20_000).await;
    let doomed_seq = db.seq(&doomed.id).await.unwrap();

    let deleting = {
        let (http, url, token) = (
            app.http.clone(),
            app.url(&format!("/v1/sessions/{}", doomed.id)),
            doomed.token.clone(),
        );
        tokio::spawn(async move { http.delete(url).bearer_auth(token).send().await })
    };
    // Created once the delete has begun (the row is marked or gone) and while
    // it removes chunks: the new session's acknowledged chunk must survive it.
    eventually("the delete begins", || async {
        db.state(&doomed.id)
            .await
            .is_none_or(|state| state == "deleted")
    })
    .await;
    let fresh = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &fresh).await;
    ws.send_chunk(0, b"the new session's first chunk").await;
    assert_eq!(ws.wait_ack(1).await, 1);
    assert_eq!(deleting.await.unwrap().unwrap().status(), 204);

    let fresh_seq = db.seq(&fresh.id).await.unwrap();
    assert_ne!(fresh_seq, doomed_seq);
    assert_eq!(
        db.chunks_of(fresh_seq).await,
        1,
        "an acked chunk was deleted"
    );
    assert_eq!(db.chunks_of(doomed_seq).await, 0);
    assert_eq!(
        db.seq(&doomed.id).await,
        None,
        "the deleted row is still there"
    );
    ws.send_json(json!({"type": "finish", "chunks": 1})).await;
    drop(ws);
    let status = app.wait_finalized(&fresh).await;
    assert_eq!(status["state"], "ready", "{status}");
    assert_eq!(app.download(&fresh).await, b"the new session's first chunk");
}

#[tokio::test]
async fn a_delete_abandoned_by_its_client_still_completes_and_survives_a_restart() {
    let app = unthrottled().await;
    let data_dir = app.data_dir.clone();
    let doomed = session_with_chunks(&app, 20_000).await;
    let db = Inspect::open(&app.db_path()).await;
    let doomed_seq = db.seq(&doomed.id).await.unwrap();
    let request = tokio::spawn(
        reqwest::Client::new()
            .delete(app.url(&format!("/v1/sessions/{}", doomed.id)))
            .bearer_auth(&doomed.token)
            .send(),
    );
    // The client hangs up once the delete has begun (a request dropped
    // before that may never take effect, which is fine).
    eventually("the delete begins", || async {
        db.state(&doomed.id)
            .await
            .is_none_or(|state| state == "deleted")
    })
    .await;
    request.abort();
    eventually("the abandoned delete finishes", || async {
        db.chunks_of(doomed_seq).await == 0 && db.seq(&doomed.id).await.is_none()
    })
    .await;

    // Across a restart, a new session gets a fresh key and exactly its own acks.
    let _keep_dir = app.stop_keeping_dir().await;
    let app = spawn_in(data_dir, |c| c.max_chunks_per_second = 0).await;
    let fresh = app.create_session().await;
    assert!(db.seq(&fresh.id).await.unwrap() > doomed_seq);
    let chunks = payloads(30, 7);
    let (mut ws, ready) = Ws::ready(&app, &fresh).await;
    assert_eq!(ready["committed"], 0);
    ws.send_all(&chunks, 0).await;
    assert_eq!(ws.wait_ack(30).await, 30);
    ws.send_json(json!({"type": "finish", "chunks": 30})).await;
    drop(ws);
    app.wait_finalized(&fresh).await;
    assert_eq!(app.download(&fresh).await, chunks.concat());
}

#[tokio::test]
async fn a_session_without_chunk_0_fails_with_the_truth_and_releases_its_chunks() {
    let app = spawn_app_with(|c| c.idle_finalize_after = Duration::from_secs(1)).await;
    let db = Inspect::open(&app.db_path()).await;
    let session = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    for index in 1..=200u32 {
        ws.send_chunk(index, &[7; 1000]).await;
    }
    // Acks cover only the prefix from chunk 0, which never came.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send_json(json!({"type": "finish", "chunks": 201})).await;
    assert_eq!(ws.recv_json().await["committed"], 0);
    drop(ws);
    let seq = db.seq(&session.id).await.unwrap();
    let status = app.wait_finalized(&session).await;
    assert_eq!(status["state"], "failed", "{status}");
    let reason = status["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("chunk 0 never arrived") && reason.contains("200"),
        "{reason}"
    );
    eventually("the failed session's chunks are released", || async {
        db.chunks_of(seq).await == 0
    })
    .await;
}

#[tokio::test]
async fn a_session_that_never_receives_a_chunk_is_removed_after_the_idle_limit() {
    let app = spawn_app_with(|c| c.idle_finalize_after = Duration::from_secs(1)).await;
    let db = Inspect::open(&app.db_path()).await;
    let session = app
        .create_session_with(json!({"metadata": {"x": "y"}}))
        .await;
    assert!(db.seq(&session.id).await.is_some());
    eventually("the abandoned session is removed", || async {
        db.seq(&session.id).await.is_none()
    })
    .await;
    let response = app
        .http
        .get(app.url(&format!("/v1/sessions/{}", session.id)))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// A crash inside a delete leaves the `deleted` mark with chunks and a
/// recording file, and a file with no session at all: the next start
/// removes them and nothing else.
#[tokio::test]
async fn the_start_up_sweep_finishes_what_a_crash_inside_a_delete_left() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let chunks = payloads(20, 11);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (id, token) = server.create_session().await;
        let mut ws = server.connect(&id, &token).await;
        assert_eq!(ws.recv_json().await["type"], "ready");
        ws.send_all(&chunks, 0).await;
        ws.send_json(json!({"type": "finish", "chunks": 20})).await;
        while ws.recv_json().await["type"] != "finalized" {}
        ids.push((id, token));
    }
    let (unfinished, unfinished_token) = server.create_session().await;
    let mut ws = server.connect(&unfinished, &unfinished_token).await;
    assert_eq!(ws.recv_json().await["type"], "ready");
    ws.send_all(&chunks[..5], 0).await;
    ws.wait_ack(5).await;
    server.kill9().await;

    // As a kill inside a delete leaves it: marked, chunks and file still there.
    let (kept, doomed) = (&ids[0].0, &ids[1].0);
    let db = Inspect::open(&dir.path().join("spool.db")).await;
    let doomed_seq = db.mark_deleted(doomed).await;
    db.plant_leftover_chunk(doomed_seq).await;
    db.close().await;
    let recordings = recordings_of(dir.path()).await;
    let stray = "0123456789abcdef0123456789abcdef";
    for (key, bytes) in [
        (stray, "no session owns this"),
        ("README.txt", "not spool's"),
    ] {
        let mut writer = recordings
            .create(key, &MimeType::octet_stream())
            .await
            .unwrap();
        writer.write_all(bytes.as_bytes()).await.unwrap();
        writer.commit().await.unwrap();
    }
    // In a bucket, an object below the prefix may be another database's,
    // under a longer prefix of its own.
    let deeper = match test_storage(dir.path()) {
        Some(at) => {
            let at = S3Location::parse(&format!("{at}/deeper")).unwrap();
            let deeper = S3Recordings::open(at).await.unwrap();
            let mut writer = deeper.create(stray, &MimeType::octet_stream());
            writer.write_all(b"another database's").await.unwrap();
            writer.commit().await.unwrap();
            Some(deeper)
        }
        None => None,
    };

    let server = ServerProcess::start(dir.path(), &[]).await;
    let db = Inspect::open(&dir.path().join("spool.db")).await;
    eventually("the sweep removes the deleted session", || async {
        db.seq(doomed).await.is_none()
            && recordings.len(doomed).await.unwrap().is_none()
            && recordings.len(stray).await.unwrap().is_none()
    })
    .await;
    assert_eq!(db.chunks_of(doomed_seq).await, 0);
    assert!(
        recordings.len("README.txt").await.unwrap().is_some(),
        "a file that is not Spool's was removed"
    );
    if let Some(deeper) = deeper {
        assert!(
            deeper.len(stray).await.unwrap().is_some(),
            "an object below the prefix was swept"
        );
    }
    let status = server.wait_ready(kept, &ids[0].1).await;
    assert_eq!(
        status["recording"]["sha256"],
        sha256_hex(&chunks.concat()).as_str()
    );
    // The unfinished session keeps every acknowledged chunk.
    let unfinished_seq = db.seq(&unfinished).await.unwrap();
    assert_eq!(db.chunks_of(unfinished_seq).await, 5);
    server.kill9().await;
}
