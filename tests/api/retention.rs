//! `--keep-recordings`: recordings older than the limit lose their file and
//! answer 410; their sessions stay `ready` and say when; younger ones stay.

use std::time::Duration;

use crate::helpers::{Created, TestApp, spawn_app_with, spawn_in, stored_recording};

async fn ready_session(app: &TestApp, payload: &[u8]) -> Created {
    app.record("audio/webm;codecs=opus", &[payload.to_vec()])
        .await
        .0
}

#[tokio::test]
async fn retention_deletes_exactly_the_recordings_past_the_limit() {
    let keep = Duration::from_secs(3);
    let app = spawn_app_with(|c| c.keep_recordings = Some(keep)).await;
    let data_dir = app.data_dir.clone();
    let old = ready_session(&app, b"old recording").await;
    tokio::time::sleep(keep + Duration::from_millis(500)).await;
    let young = ready_session(&app, b"young recording").await;
    let _dir = app.stop_keeping_dir().await;

    // The sweep's start-up pass applies retention.
    let app = spawn_in(data_dir.clone(), |c| c.keep_recordings = Some(keep)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let status = app.get_session(&old).await;
        if !status["recording"]["expired_at"].is_null() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never expired: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(expired["state"], "ready");
    assert!(
        expired["recording"]["expired_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let gone = app
        .http
        .get(app.url(&format!("/v1/sessions/{}/recording", old.id)))
        .bearer_auth(&old.token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
    let body: serde_json::Value = gone.json().await.unwrap();
    assert_eq!(body["error"]["code"], "recording_expired");
    assert!(stored_recording(&data_dir, &old.id).await.is_none());

    assert_eq!(app.download(&young).await, b"young recording");
    assert!(app.get_session(&young).await["recording"]["expired_at"].is_null());
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("spool_recordings_expired_total 1"),
        "{metrics}"
    );
}
