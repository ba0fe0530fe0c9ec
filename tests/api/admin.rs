//! The admin API: who may use it, listing with filters and paging, one
//! session in full, finalize now, totals.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Created, TestApp, Ws, spawn_app_with};

const ADMIN: &str = "admin-secret";

async fn admin_app() -> TestApp {
    spawn_app_with(|c| {
        c.admin_token = Some(ADMIN.into());
        c.max_sessions_per_minute = 0;
    })
    .await
}

async fn admin_get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .http
        .get(app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Uploads `count` chunks (skipping `skip`) and, if `finish`, declares `total`.
async fn upload(app: &TestApp, session: &Created, indexes: &[u32], finish: Option<u32>) {
    let (mut ws, _) = Ws::ready(app, session).await;
    for &index in indexes {
        ws.send_chunk(index, format!("chunk {index}").as_bytes())
            .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(total) = finish {
        ws.send_json(json!({"type": "finish", "chunks": total}))
            .await;
        loop {
            let message = ws.recv_json().await;
            if message["type"] == "finishing" {
                break;
            }
        }
    }
}

#[tokio::test]
async fn every_admin_route_needs_the_admin_token() {
    let app = admin_app().await;
    let session = app.create_session().await;
    let detail = format!("/v1/admin/sessions/{}", session.id);
    let finalize = format!("/v1/admin/sessions/{}/finalize", session.id);
    let routes = [
        (Method::GET, "/v1/admin/sessions".to_owned()),
        (Method::GET, detail),
        (Method::POST, finalize),
        (Method::GET, "/v1/admin/stats".to_owned()),
    ];
    for (method, path) in &routes {
        for token in [None, Some("wrong"), Some(session.token.as_str())] {
            let mut request = app.http.request(method.clone(), app.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn without_a_configured_token_one_is_created_private_and_works() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app_with(|_| {}).await;
    let path = app.data_dir.join("admin-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(token.len() >= 32);
    let unauthorized = app
        .http
        .get(app.url("/v1/admin/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let response = app
        .http
        .get(app.url("/v1/admin/stats"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_list_filters_by_state_completeness_metadata_and_time() {
    let app = admin_app().await;
    let before = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(5)).await; // times are stored in ms
    let recording = app
        .create_session_with(
            json!({"mime_type": "audio/webm", "metadata": {"call": 42, "team": "a"}}),
        )
        .await;
    upload(&app, &recording, &[0, 1], None).await;
    let complete = app
        .create_session_with(json!({"mime_type": "audio/webm", "metadata": {"team": "b"}}))
        .await;
    upload(&app, &complete, &[0, 1, 2], Some(3)).await;
    app.wait_finalized(&complete).await;
    let cut_short = app
        .create_session_with(json!({"mime_type": "audio/webm", "metadata": {"team": "a"}}))
        .await;
    upload(&app, &cut_short, &[0, 1, 3], None).await;
    let (status, _) = finalize(&app, &cut_short).await;
    assert_eq!(status, 202);
    let finished = app.wait_finalized(&cut_short).await;
    assert_eq!(finished["recording"]["complete"], false, "{finished}");
    assert_eq!(finished["recording"]["missing"], json!([[2, 3]]));

    // One more in each of the other states.
    let finishing = app.create_session().await;
    upload(&app, &finishing, &[0, 1], Some(3)).await;
    let failed = app.create_session().await;
    upload(&app, &failed, &[1], None).await;
    assert_eq!(finalize(&app, &failed).await.0, 202);
    assert_eq!(app.wait_finalized(&failed).await["state"], "failed");
    for (state, expected) in [
        ("recording", &recording),
        ("finishing", &finishing),
        ("failed", &failed),
    ] {
        let (_, listed) = admin_get(&app, &format!("/v1/admin/sessions?state={state}")).await;
        assert_eq!(ids(&listed), [expected.id.as_str()], "state={state}");
    }

    let (_, all) = admin_get(&app, "/v1/admin/sessions").await;
    assert_eq!(
        ids(&all),
        [
            failed.id.as_str(),
            finishing.id.as_str(),
            cut_short.id.as_str(),
            complete.id.as_str(),
            recording.id.as_str()
        ],
        "newest first"
    );
    let entry = &all["sessions"][4];
    assert_eq!(entry["state"], "recording");
    assert!(
        entry["last_seen_at"].as_str().is_some() && entry["connections"] == 1,
        "{entry}"
    );
    let (_, ready) = admin_get(&app, "/v1/admin/sessions?state=ready").await;
    assert_eq!(ids(&ready), [cut_short.id.as_str(), complete.id.as_str()]);
    let (_, incomplete) = admin_get(&app, "/v1/admin/sessions?complete=false").await;
    assert_eq!(ids(&incomplete), [cut_short.id.as_str()]);
    let (_, team_a) = admin_get(&app, "/v1/admin/sessions?meta.team=a").await;
    assert_eq!(ids(&team_a), [cut_short.id.as_str(), recording.id.as_str()]);
    let (_, call) = admin_get(&app, "/v1/admin/sessions?meta.call=42&meta.team=a").await;
    assert_eq!(ids(&call), [recording.id.as_str()]);
    let since = url_escape(&before);
    let (_, recent) = admin_get(&app, &format!("/v1/admin/sessions?since={since}")).await;
    assert_eq!(ids(&recent).len(), 5);
    let (_, none) = admin_get(&app, &format!("/v1/admin/sessions?until={since}")).await;
    assert!(ids(&none).is_empty());
    assert_eq!(none["next_cursor"], Value::Null);

    for (query, named) in [
        ("state=done", "state"),
        ("limit=9999", "limit"),
        ("since=today", "since"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = admin_get(&app, &format!("/v1/admin/sessions?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["code"], "invalid_filter");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(named),
            "{body}"
        );
    }
}

#[tokio::test]
async fn paging_never_repeats_or_skips_while_sessions_are_created() {
    let app = admin_app().await;
    let mut existing = HashSet::new();
    for _ in 0..23 {
        existing.insert(app.create_session().await.id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/admin/sessions?limit=5&cursor={cursor}"),
            None => "/v1/admin/sessions?limit=5".to_owned(),
        };
        let (status, page) = admin_get(&app, &path).await;
        assert_eq!(status, 200, "{page}");
        for session in page["sessions"].as_array().unwrap() {
            seen.push(session["id"].as_str().unwrap().to_owned());
        }
        // New sessions arrive while paging: they are newer than the cursor.
        app.create_session().await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a session was listed twice");
    assert_eq!(unique, existing, "paging skipped or invented sessions");
}

async fn finalize(app: &TestApp, session: &Created) -> (u16, Value) {
    let response = app
        .http
        .post(app.url(&format!("/v1/admin/sessions/{}/finalize", session.id)))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_detail_shows_missing_ranges_and_the_client() {
    let app = admin_app().await;
    let session = app.create_session().await;
    upload(&app, &session, &[0, 1, 4, 5, 8], None).await;
    let (status, detail) = admin_get(&app, &format!("/v1/admin/sessions/{}", session.id)).await;
    assert_eq!(status, 200);
    assert_eq!(detail["missing"], json!([[2, 3], [6, 7]]), "{detail}");
    assert_eq!(detail["committed"], 2);
    assert_eq!(detail["connections"], 1);
    assert!(
        detail["client"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{detail}"
    );
    assert!(detail["last_seen_at"].as_str().unwrap().ends_with('Z'));
    let (status, _) = admin_get(&app, "/v1/admin/sessions/00000000000000000000000000000000").await;
    assert_eq!(status, 404);

    // Finalize now: ready with the prefix, the rest honestly missing; twice is a conflict.
    let (status, accepted) = finalize(&app, &session).await;
    assert_eq!(status, 202, "{accepted}");
    let ready = app.wait_finalized(&session).await;
    assert_eq!(ready["state"], "ready");
    assert_eq!(ready["recording"]["complete"], false);
    assert_eq!(ready["recording"]["missing"], json!([[2, 8]]));
    assert_eq!(app.download(&session).await, b"chunk 0chunk 1");
    let (status, again) = finalize(&app, &session).await;
    assert_eq!(status, 409, "{again}");
}

#[tokio::test]
async fn stats_count_sessions_by_state_and_bytes() {
    let app = admin_app().await;
    let done = app.create_session().await;
    upload(&app, &done, &[0, 1], Some(2)).await;
    app.wait_finalized(&done).await;
    let live = app.create_session().await;
    upload(&app, &live, &[0], None).await;
    let (status, stats) = admin_get(&app, "/v1/admin/stats").await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["sessions"],
        json!({"recording": 1, "finishing": 0, "ready": 1, "failed": 0})
    );
    assert_eq!(stats["chunks_stored"], 3);
    assert_eq!(stats["chunk_bytes_stored"], "chunk 0chunk 1chunk 0".len());
    assert_eq!(stats["recordings_bytes"], "chunk 0chunk 1".len());
    assert!(
        stats["chunks_per_second_1m"].as_f64().unwrap() > 0.0,
        "{stats}"
    );
}

/// The ids of a listing, in order.
fn ids(body: &Value) -> Vec<&str> {
    body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

fn url_escape(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}
