//! Downloading a recording: Range, HEAD, ETag and headers.

use reqwest::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, RANGE,
};
use serde_json::json;

use crate::helpers::{Created, TestApp, Ws, payloads, spawn_app};

/// A ready session whose recording is `payloads(20, seed)` joined.
async fn ready_recording(app: &TestApp) -> (Created, Vec<u8>) {
    let session = app
        .create_session_with(json!({"mime_type": "audio/webm;codecs=opus"}))
        .await;
    let chunks = payloads(20, 7);
    let (mut ws, _) = Ws::ready(app, &session).await;
    ws.send_all(&chunks, 0).await;
    ws.wait_ack(20).await;
    ws.send_json(json!({"type": "finish", "chunks": 20})).await;
    assert_eq!(app.wait_finalized(&session).await["state"], "ready");
    (session, chunks.concat())
}

async fn get_range(app: &TestApp, session: &Created, range: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/v1/sessions/{}/recording", session.id)))
        .bearer_auth(&session.token)
        .header(RANGE, range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn byte_ranges_are_served_with_206() {
    let app = spawn_app().await;
    let (session, file) = ready_recording(&app).await;
    let len = file.len();
    let cases = [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=-500", len - 500, len - 1),
        ("bytes=2000-", 2000, len - 1),
        ("bytes=0-", 0, len - 1),
        (
            &format!("bytes={}-{}", len - 10, len + 1000),
            len - 10,
            len - 1,
        ),
    ];
    for (range, start, end) in cases {
        let response = get_range(&app, &session, range).await;
        assert_eq!(response.status(), 206, "{range}");
        assert_eq!(
            response.headers()[CONTENT_RANGE],
            format!("bytes {start}-{end}/{len}").as_str(),
            "{range}"
        );
        assert_eq!(
            response.headers()[CONTENT_LENGTH],
            (end - start + 1).to_string().as_str()
        );
        assert!(
            response.bytes().await.unwrap()[..] == file[start..=end],
            "{range}: wrong bytes"
        );
    }
}

#[tokio::test]
async fn a_range_past_the_end_is_416() {
    let app = spawn_app().await;
    let (session, file) = ready_recording(&app).await;
    for range in [
        format!("bytes={}-", file.len()),
        format!("bytes={}-{}", file.len() + 5, file.len() + 9),
        "bytes=-0".into(),
    ] {
        let response = get_range(&app, &session, &range).await;
        assert_eq!(response.status(), 416, "{range}");
        assert_eq!(
            response.headers()[CONTENT_RANGE],
            format!("bytes */{}", file.len()).as_str()
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "range_not_satisfiable");
    }
}

#[tokio::test]
async fn full_download_and_head_carry_the_same_headers() {
    let app = spawn_app().await;
    let (session, file) = ready_recording(&app).await;
    let url = app.url(&format!(
        "/v1/sessions/{}/recording?token={}",
        session.id, session.token
    ));
    let get = app.http.get(&url).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let head = app.http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    for name in [
        CONTENT_TYPE,
        CONTENT_LENGTH,
        ETAG,
        ACCEPT_RANGES,
        CONTENT_DISPOSITION,
    ] {
        assert_eq!(
            get.headers().get(&name),
            head.headers().get(&name),
            "{name}"
        );
    }
    let headers = get.headers().clone();
    assert_eq!(headers[CONTENT_TYPE], "audio/webm;codecs=opus");
    assert_eq!(headers[ACCEPT_RANGES], "bytes");
    assert_eq!(headers[CONTENT_LENGTH], file.len().to_string().as_str());
    assert_eq!(
        headers[CONTENT_DISPOSITION],
        format!("inline; filename=\"{}.webm\"", session.id).as_str()
    );
    assert!(get.bytes().await.unwrap()[..] == file[..]);
    assert!(head.bytes().await.unwrap().is_empty());

    let head_range = app
        .http
        .head(&url)
        .header(RANGE, "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(head_range.status(), 206);
    assert_eq!(head_range.headers()[CONTENT_LENGTH], "10");

    let etag = headers[ETAG].to_str().unwrap();
    let cached = app
        .http
        .get(&url)
        .header(IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
}
