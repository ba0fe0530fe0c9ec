//! Webhooks: a receiver in the test checks the signature, fails the first
//! deliveries, sees the retries carry the same id, and gets an event made
//! before a restart delivered after it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, Ws, eventually, spawn_app_with, spawn_in};

const SECRET: &str = "whsec-test";

#[derive(Clone, Default)]
struct Receiver {
    /// Every delivery: (event id header, signature header, body).
    deliveries: Arc<Mutex<Vec<(String, String, String)>>>,
    /// Deliveries to refuse (500) before accepting.
    refuse: Arc<Mutex<u32>>,
}

impl Receiver {
    async fn start(refuse: u32) -> (Self, String) {
        let receiver = Self::default();
        *receiver.refuse.lock().unwrap() = refuse;
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn deliveries(&self) -> Vec<(String, String, String)> {
        self.deliveries.lock().unwrap().clone()
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/json");
    let body = String::from_utf8(body.to_vec()).unwrap();
    receiver.deliveries.lock().unwrap().push((
        header("spool-event-id"),
        header("spool-signature"),
        body,
    ));
    let mut refuse = receiver.refuse.lock().unwrap();
    if *refuse > 0 {
        *refuse -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// What a receiver does: recompute the HMAC over "<t>.<body>" and check the time.
fn verify(signature: &str, body: &str) {
    let (t, v1) = signature
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("malformed signature {signature:?}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        v1,
        "bad signature"
    );
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((-5..300).contains(&age), "timestamp {t} is {age} s old");
}

async fn webhook_app(url: &str) -> TestApp {
    let url = url.to_owned();
    spawn_app_with(move |c| {
        c.webhook_url = Some(url);
        c.webhook_secret = Some(SECRET.into());
        c.idle_finalize_after = Duration::from_secs(1);
    })
    .await
}

#[tokio::test]
async fn a_ready_session_is_announced_signed_and_retried_with_the_same_id() {
    let (receiver, url) = Receiver::start(2).await;
    let app = webhook_app(&url).await;
    let session = app
        .create_session_with(json!({"mime_type": "audio/webm", "metadata": {"call": "7"}}))
        .await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, b"hello").await;
    ws.send_json(json!({"type": "finish", "chunks": 1})).await;
    drop(ws);
    eventually("the third delivery succeeds", || async {
        receiver.deliveries().len() >= 3
    })
    .await;

    let deliveries = receiver.deliveries();
    let event: Value = serde_json::from_str(&deliveries[0].2).unwrap();
    assert_eq!(event["type"], "session.ready");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert!(event["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(event["session"]["id"], session.id.as_str());
    assert_eq!(event["session"]["state"], "ready");
    assert_eq!(event["session"]["metadata"], json!({"call": "7"}));
    assert_eq!(event["session"]["recording"]["bytes"], 5);
    assert!(event["session"]["last_seen_at"].is_string());
    for (id, signature, body) in &deliveries {
        assert_eq!(
            id,
            event["id"].as_str().unwrap(),
            "a retry changed the event id"
        );
        assert_eq!(body, &deliveries[0].2, "a retry changed the body");
        verify(signature, body);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.deliveries().len(),
        3,
        "a delivered event was sent again"
    );
}

#[tokio::test]
async fn a_failed_session_is_announced() {
    let (receiver, url) = Receiver::start(0).await;
    let app = webhook_app(&url).await;
    let session = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(1, b"no chunk 0").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(ws);
    eventually("the failure is announced", || async {
        !receiver.deliveries().is_empty()
    })
    .await;
    let event: Value = serde_json::from_str(&receiver.deliveries()[0].2).unwrap();
    assert_eq!(event["type"], "session.failed");
    assert_eq!(event["session"]["state"], "failed");
}

#[tokio::test]
async fn an_event_made_before_a_restart_is_delivered_after_it() {
    let (receiver, url) = Receiver::start(u32::MAX).await;
    let app = webhook_app(&url).await;
    let data_dir = app.data_dir.clone();
    let session = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, b"before the restart").await;
    ws.send_json(json!({"type": "finish", "chunks": 1})).await;
    drop(ws);
    eventually("a first, refused delivery", || async {
        !receiver.deliveries().is_empty()
    })
    .await;
    let _dir = app.stop_keeping_dir().await;

    *receiver.refuse.lock().unwrap() = 0;
    let refused = receiver.deliveries().len();
    let _app = spawn_in(data_dir, |c| {
        c.webhook_url = Some(url.clone());
        c.webhook_secret = Some(SECRET.into());
    })
    .await;
    eventually("the event is delivered after the restart", || async {
        receiver.deliveries().len() > refused
    })
    .await;
    let deliveries = receiver.deliveries();
    assert_eq!(
        deliveries.last().unwrap().0,
        deliveries[0].0,
        "the id changed across the restart"
    );
}
