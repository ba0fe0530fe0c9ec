//! The HTTP surface: its errors, who may call what, finish over HTTP,
//! deletion, health and metrics, and the idle finalize.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::helpers::{
    Created, TestApp, Ws, sha256_hex, spawn_app, spawn_app_with, stored_recording,
};

/// Checks the status and the `{"error": {"code", "message"}}` body.
async fn assert_error(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "{:?}", response.headers());
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "error bodies are JSON, not {content_type}"
    );
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 1, "only `error`: {body}");
    body
}

fn session_path(id: &str, rest: &str) -> String {
    format!("/v1/sessions/{id}{rest}")
}

/// A session joined byte for byte.
async fn plain_session(app: &TestApp) -> Created {
    app.create_session_with(json!({"mime_type": "application/octet-stream"}))
        .await
}

/// Uploads `chunks` over a WebSocket and waits until all are acked.
async fn upload(app: &TestApp, session: &Created, chunks: &[&[u8]]) {
    let (mut ws, _) = Ws::ready(app, session).await;
    for (i, chunk) in chunks.iter().enumerate() {
        ws.send_chunk(i as u32, chunk).await;
    }
    assert_eq!(ws.wait_ack(chunks.len() as i64).await, chunks.len() as i64);
}

/// A session whose recording is `chunks` joined, ready to download.
async fn ready_session(app: &TestApp, chunks: &[&[u8]]) -> Created {
    let session = plain_session(app).await;
    upload(app, &session, chunks).await;
    let response = finish(app, &session, chunks.len() as u64).await;
    assert_eq!(response.status(), 202);
    assert_eq!(app.wait_finalized(&session).await["state"], "ready");
    session
}

async fn finish(app: &TestApp, session: &Created, chunks: u64) -> Response {
    app.http
        .post(app.url(&session_path(&session.id, "/finish")))
        .bearer_auth(&session.token)
        .json(&json!({"chunks": chunks}))
        .send()
        .await
        .unwrap()
}

async fn post_sessions(app: &TestApp, content_type: &str, body: &'static str) -> Response {
    app.http
        .post(app.url("/v1/sessions"))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

// ---- creating sessions -----------------------------------------------------

#[tokio::test]
async fn create_session_refuses_malformed_json_with_400_invalid_json() {
    let app = spawn_app().await;
    let response = post_sessions(&app, "application/json", "{\"mime_type\": ").await;
    assert_error(response, 400, "invalid_json").await;
}

#[tokio::test]
async fn create_session_refuses_an_unknown_field_with_400() {
    let app = spawn_app().await;
    let response = post_sessions(&app, "application/json", r#"{"mime": "audio/ogg"}"#).await;
    assert_error(response, 400, "invalid_json").await;
}

#[tokio::test]
async fn create_session_refuses_an_invalid_mime_type_with_400_invalid_mime_type() {
    let app = spawn_app().await;
    for mime in ["audio", "audio webm", "audio/webm\r\nX-Evil: 1", ""] {
        let response = app
            .http
            .post(app.url("/v1/sessions"))
            .json(&json!({"mime_type": mime}))
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_mime_type").await;
    }
}

#[tokio::test]
async fn create_session_refuses_metadata_that_is_not_an_object_with_400_invalid_metadata() {
    let app = spawn_app().await;
    for metadata in [json!([1, 2]), json!("a string"), json!(3)] {
        let response = app
            .http
            .post(app.url("/v1/sessions"))
            .json(&json!({"metadata": metadata}))
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "invalid_metadata").await;
    }
}

#[tokio::test]
async fn create_session_with_an_empty_body_gives_201_and_usable_defaults() {
    let app = spawn_app().await;
    let response = app.http.post(app.url("/v1/sessions")).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        body["ws_url"],
        format!("{}/v1/sessions/{id}/ws", app.base.replacen("http", "ws", 1)).as_str()
    );
    assert!(body["max_chunk_bytes"].as_u64().unwrap() > 0);

    let session = Created {
        id: id.into(),
        token: body["token"].as_str().unwrap().into(),
        ws_url: body["ws_url"].as_str().unwrap().into(),
        max_chunk_bytes: body["max_chunk_bytes"].as_u64().unwrap(),
    };
    let status = app.get_session(&session).await;
    assert_eq!(status["state"], "recording");
    assert_eq!(status["metadata"], json!({}));
    assert_eq!(status["recording"], Value::Null);
}

#[tokio::test]
async fn metadata_round_trips_into_the_session() {
    let app = spawn_app().await;
    let metadata = json!({"user": "ada", "take": 3, "tags": ["a", "b"], "nested": {"x": null}});
    let session = app
        .create_session_with(json!({"mime_type": "audio/ogg;codecs=opus", "metadata": metadata}))
        .await;
    let status = app.get_session(&session).await;
    assert_eq!(status["metadata"], metadata);
    assert_eq!(status["mime_type"], "audio/ogg;codecs=opus");
    assert_eq!(status["id"], session.id.as_str());
}

// ---- routing -----------------------------------------------------------------

#[tokio::test]
async fn an_unknown_route_is_404_with_a_json_error() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/v1/nothing")).send().await.unwrap();
    assert_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn a_wrong_method_is_405_with_a_json_error() {
    let app = spawn_app().await;
    let response = app.http.put(app.url("/v1/sessions")).send().await.unwrap();
    assert_error(response, 405, "method_not_allowed").await;
    let session = plain_session(&app).await;
    let response = app
        .http
        .post(app.url(&session_path(&session.id, "/recording")))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "method_not_allowed").await;
}

// ---- auth --------------------------------------------------------------------

/// Each request of the session API, built for `token` (`None`: no credential).
fn session_requests(app: &TestApp, id: &str, token: Option<&str>) -> Vec<(String, RequestBuilder)> {
    let requests = [
        (Method::GET, ""),
        (Method::GET, "/recording"),
        (Method::HEAD, "/recording"),
        (Method::DELETE, ""),
    ];
    requests
        .into_iter()
        .map(|(method, rest)| {
            let name = format!("{method} {rest}");
            let mut request = app.http.request(method, app.url(&session_path(id, rest)));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            (name, request)
        })
        .collect()
}

#[tokio::test]
async fn every_session_endpoint_refuses_a_missing_or_wrong_token_with_401() {
    let app = spawn_app().await;
    let session = ready_session(&app, &[b"secret audio"]).await;
    let other = plain_session(&app).await;

    for token in [None, Some(other.token.as_str()), Some("not-a-token")] {
        for (name, request) in session_requests(&app, &session.id, token) {
            let response = request.send().await.unwrap();
            if name.starts_with("HEAD") {
                assert_eq!(response.status(), 401, "{name} with {token:?}");
            } else {
                let body = assert_error(response, 401, "unauthorized").await;
                assert!(!body.to_string().contains(&session.token));
            }
        }
        // A token in the query is checked the same way.
        if let Some(token) = token {
            let response = app
                .http
                .get(app.url(&format!(
                    "{}?token={token}",
                    session_path(&session.id, "/recording")
                )))
                .send()
                .await
                .unwrap();
            assert_error(response, 401, "unauthorized").await;
        }
    }
    // Nothing was deleted.
    assert_eq!(app.get_session(&session).await["state"], "ready");
    assert_eq!(app.download(&session).await, b"secret audio");
}

#[tokio::test]
async fn finish_refuses_a_missing_or_wrong_token_with_401_and_changes_nothing() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    upload(&app, &session, &[b"one"]).await;
    let other = plain_session(&app).await;

    let url = app.url(&session_path(&session.id, "/finish"));
    let responses = [
        app.http.post(&url).json(&json!({"chunks": 1})),
        app.http
            .post(&url)
            .bearer_auth(&other.token)
            .json(&json!({"chunks": 1})),
        app.http
            .post(format!("{url}?token={}", other.token))
            .json(&json!({"chunks": 1})),
    ];
    for request in responses {
        assert_error(request.send().await.unwrap(), 401, "unauthorized").await;
    }
    let status = app.get_session(&session).await;
    assert_eq!(status["state"], "recording", "{status}");
    assert_eq!(status["expected_chunks"], Value::Null, "{status}");
}

#[tokio::test]
async fn the_websocket_refuses_a_missing_or_wrong_token_with_4401() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    let other = plain_session(&app).await;
    for url in [
        session.ws_url.clone(),
        format!("{}?token=", session.ws_url),
        format!("{}?token={}", session.ws_url, other.token),
    ] {
        let mut ws = Ws::connect(&url).await;
        let closed = ws.closed().await;
        assert_eq!(closed.code, 4401, "{url}");
        assert_eq!(closed.error.unwrap()["code"], "unauthorized");
    }
}

#[tokio::test]
async fn a_token_in_the_query_works_for_download_and_finish() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    upload(&app, &session, &[b"by ", b"query"]).await;

    // As navigator.sendBeacon would: no header, text/plain body.
    let response = app
        .http
        .post(app.url(&format!(
            "{}?token={}",
            session_path(&session.id, "/finish"),
            session.token
        )))
        .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(r#"{"chunks": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(app.wait_finalized(&session).await["state"], "ready");

    // As <audio src> would.
    let url = app.url(&format!(
        "{}?token={}",
        session_path(&session.id, "/recording"),
        session.token
    ));
    let response = app.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"by query");
    let response = app.http.head(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "8");
}

#[tokio::test]
async fn with_an_api_key_creating_a_session_needs_it() {
    let app = spawn_app_with(|c| c.api_key = Some("k".into())).await;
    let url = app.url("/v1/sessions");
    let without = app.http.post(&url).json(&json!({})).send().await.unwrap();
    assert_error(without, 401, "unauthorized").await;
    let wrong = app
        .http
        .post(&url)
        .bearer_auth("not-k")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(wrong, 401, "unauthorized").await;
    let right = app
        .http
        .post(&url)
        .bearer_auth("k")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 201);
    let body: Value = right.json().await.unwrap();

    // The session is then used with its own token, not the API key.
    let id = body["id"].as_str().unwrap();
    let response = app
        .http
        .get(app.url(&session_path(id, "")))
        .bearer_auth(body["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .http
        .get(app.url(&session_path(id, "")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn the_admin_token_can_read_download_and_delete_any_session() {
    let app = spawn_app_with(|c| c.admin_token = Some("adm".into())).await;
    let session = ready_session(&app, &[b"admin ", b"sees this"]).await;

    let response = app
        .http
        .get(app.url(&session_path(&session.id, "")))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], session.id.as_str());
    assert_eq!(body["state"], "ready");

    let response = app
        .http
        .get(app.url(&session_path(&session.id, "/recording")))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"admin sees this");

    let response = app
        .http
        .delete(app.url(&session_path(&session.id, "")))
        .bearer_auth("adm")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .http
        .get(app.url(&session_path(&session.id, "")))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn without_an_admin_token_configured_no_bearer_acts_as_admin() {
    let app = spawn_app().await;
    let session = ready_session(&app, &[b"private"]).await;
    for bearer in ["adm", "", "null"] {
        for (name, request) in session_requests(&app, &session.id, Some(bearer)) {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{name} with {bearer:?}");
        }
    }
    assert_eq!(app.download(&session).await, b"private");
}

// ---- finish over HTTP ------------------------------------------------------

#[tokio::test]
async fn finish_over_http_with_a_text_plain_body_is_202_then_ready() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    upload(&app, &session, &[b"sent ", b"by ", b"beacon"]).await;

    let response = app
        .http
        .post(app.url(&session_path(&session.id, "/finish")))
        .bearer_auth(&session.token)
        .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(r#"{"chunks": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], session.id.as_str());
    assert!(
        body["state"] == "finishing" || body["state"] == "ready",
        "{body}"
    );
    assert_eq!(body["expected_chunks"], 3);
    assert_eq!(body["committed"], 3);

    let ready = app.wait_finalized(&session).await;
    assert_eq!(ready["state"], "ready", "{ready}");
    let recording = &ready["recording"];
    assert_eq!(recording["complete"], true);
    assert_eq!(recording["bytes"], b"sent by beacon".len());
    assert_eq!(recording["sha256"], sha256_hex(b"sent by beacon").as_str());
    assert_eq!(app.download(&session).await, b"sent by beacon");

    // The same count again is fine; another is a conflict; zero is invalid.
    let again = finish(&app, &session, 3).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.unwrap()["state"], "ready");
    assert_error(finish(&app, &session, 4).await, 409, "chunk_count_mismatch").await;
    assert_error(finish(&app, &session, 2).await, 409, "chunk_count_mismatch").await;
    assert_error(finish(&app, &session, 0).await, 400, "invalid_chunk_count").await;
}

#[tokio::test]
async fn finish_over_http_refuses_zero_or_too_few_chunks_with_400() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    upload(&app, &session, &[b"a", b"b", b"c"]).await;
    assert_error(finish(&app, &session, 0).await, 400, "invalid_chunk_count").await;
    // Index 2 was received, so there are at least 3 chunks.
    assert_error(finish(&app, &session, 2).await, 400, "invalid_chunk_count").await;
    let status = app.get_session(&session).await;
    assert_eq!(status["state"], "recording", "{status}");
    assert_eq!(status["expected_chunks"], Value::Null, "{status}");
    let response = app
        .http
        .post(app.url(&session_path(&session.id, "/finish")))
        .bearer_auth(&session.token)
        .header(CONTENT_TYPE, "text/plain")
        .body("{\"chunks\": three}")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_json").await;
}

// ---- downloads and deletion -------------------------------------------------

#[tokio::test]
async fn downloading_before_ready_is_409_not_ready() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    upload(&app, &session, &[b"not yet"]).await;
    let url = app.url(&session_path(&session.id, "/recording"));
    let response = app
        .http
        .get(&url)
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_error(response, 409, "not_ready").await;
    let response = app
        .http
        .head(&url)
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
}

#[tokio::test]
async fn delete_is_204_and_removes_the_session_and_its_recording_file() {
    let app = spawn_app().await;
    let session = ready_session(&app, &[b"delete ", b"me"]).await;
    assert_eq!(
        stored_recording(&app.data_dir, &session.id).await.unwrap(),
        b"delete me"
    );

    let url = app.url(&session_path(&session.id, ""));
    let response = app
        .http
        .delete(&url)
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());

    let response = app
        .http
        .get(&url)
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    let response = app
        .http
        .get(app.url(&session_path(&session.id, "/recording")))
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    assert!(
        stored_recording(&app.data_dir, &session.id).await.is_none(),
        "the recording is still stored"
    );
    let response = app
        .http
        .delete(&url)
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn an_unknown_or_malformed_session_id_is_404() {
    let app = spawn_app().await;
    let session = plain_session(&app).await;
    for path in [
        "/v1/sessions/not-a-session",
        &format!("/v1/sessions/{}", session.id.to_uppercase()),
        "/v1/sessions/0123456789abcdef0123456789abcdef/recording",
    ] {
        let response = app
            .http
            .get(app.url(path))
            .bearer_auth(&session.token)
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "not_found").await;
    }
}

// ---- health and metrics -----------------------------------------------------

#[tokio::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

async fn chunks_stored_metric(app: &TestApp) -> u64 {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let line = text
        .lines()
        .find(|line| line.starts_with("spool_chunks_stored_total "))
        .unwrap_or_else(|| panic!("no spool_chunks_stored_total in:\n{text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn metrics_count_the_chunks_stored() {
    let app = spawn_app().await;
    let before = chunks_stored_metric(&app).await;
    let session = plain_session(&app).await;
    upload(&app, &session, &[b"one", b"two", b"three"]).await;
    let after = chunks_stored_metric(&app).await;
    assert_eq!(after, before + 3);
}

// ---- idle finalize ------------------------------------------------------------

#[tokio::test]
async fn an_abandoned_session_is_finalized_with_its_contiguous_prefix() {
    let app = spawn_app_with(|c| c.idle_finalize_after = Duration::from_secs(1)).await;
    let session = plain_session(&app).await;
    let chunks: [&[u8]; 4] = [b"zero ", b"one ", b"two ", b"five"];
    let (mut ws, _) = Ws::ready(&app, &session).await;
    // Chunk 5 first, so the ack for 3 means it is stored too.
    ws.send_chunk(5, chunks[3]).await;
    for (i, chunk) in chunks[..3].iter().enumerate() {
        ws.send_chunk(i as u32, chunk).await;
    }
    assert_eq!(ws.wait_ack(3).await, 3);
    drop(ws);

    let status = app.wait_finalized(&session).await;
    assert_eq!(status["state"], "ready", "{status}");
    assert_eq!(status["chunks_received"], 4, "{status}");
    assert_eq!(status["expected_chunks"], Value::Null, "{status}");
    let recording = &status["recording"];
    let prefix = b"zero one two ";
    assert_eq!(recording["complete"], false, "{recording}");
    assert_eq!(recording["missing"], json!([[3, 5]]), "{recording}");
    assert_eq!(recording["bytes"], prefix.len(), "{recording}");
    assert_eq!(recording["sha256"], sha256_hex(prefix).as_str());
    assert_eq!(recording["source_bytes"], prefix.len());
    assert_eq!(app.download(&session).await, prefix);
}
