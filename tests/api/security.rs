//! Open doors the audit found: empty secrets, stored XSS through the declared
//! type, log injection, and the small auth and Range parsing holes.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ServerProcess, Ws, eventually, spawn_app_with};

#[tokio::test]
async fn empty_or_blank_secrets_are_refused_at_start_up() {
    for blank in ["", "  "] {
        for configure in [
            (|c: &mut spool::Config, s: &str| c.admin_token = Some(s.into())) as fn(&mut _, &_),
            |c, s| c.api_key = Some(s.into()),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut config = spool::Config::with_data_dir(dir.path());
            config.listen = "127.0.0.1:0".parse().unwrap();
            configure(&mut config, blank);
            let Err(error) = spool::App::build(config).await else {
                panic!("a server started with a blank secret");
            };
            assert!(format!("{error:#}").contains("empty or blank"), "{error:#}");
        }
    }
    // The binary says so and exits, from the environment too.
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SPOOL_ADMIN_TOKEN", "")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SPOOL_ADMIN_TOKEN") && stderr.contains("empty or blank"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_basic_does_not_hide_the_query_token() {
    let app = spawn_app_with(|_| {}).await;
    let session = app.create_session().await;
    let path = app.url(&format!("/v1/sessions/{}", session.id));
    let lowercase = app
        .http
        .get(&path)
        .header("Authorization", format!("bearer {}", session.token))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), 200);
    let basic_and_query = app
        .http
        .get(format!("{path}?token={}", session.token))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(basic_and_query.status(), 200);
}

#[tokio::test]
async fn only_audio_video_and_octet_stream_sessions_are_accepted() {
    let app = spawn_app_with(|_| {}).await;
    for refused in [
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/javascript",
    ] {
        let response = app
            .http
            .post(app.url("/v1/sessions"))
            .json(&json!({"mime_type": refused}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{refused}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_mime_type");
    }
    for accepted in [
        "audio/webm;codecs=opus",
        "video/mp4",
        "application/octet-stream",
    ] {
        app.create_session_with(json!({"mime_type": accepted}))
            .await;
    }
}

#[tokio::test]
async fn downloads_cannot_run_as_a_page_of_this_origin() {
    let app = spawn_app_with(|_| {}).await;
    // A comma in the parameters would make a browser read a second type.
    let session = app
        .create_session_with(json!({"mime_type": "audio/webm;a=,text/html"}))
        .await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, b"<script>alert(1)</script>").await;
    ws.send_json(json!({"type": "finish", "chunks": 1})).await;
    drop(ws);
    app.wait_finalized(&session).await;
    for range in [None, Some("bytes=0-3")] {
        let mut request = app
            .http
            .get(app.url(&format!("/v1/sessions/{}/recording", session.id)))
            .bearer_auth(&session.token);
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        let response = request.send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["content-security-policy"], "sandbox");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("audio/")
        );
    }
}

#[tokio::test]
async fn a_signed_range_is_not_a_range() {
    let app = spawn_app_with(|_| {}).await;
    let session = app.create_session().await;
    let (mut ws, _) = Ws::ready(&app, &session).await;
    ws.send_chunk(0, &[5; 100]).await;
    ws.send_json(json!({"type": "finish", "chunks": 1})).await;
    drop(ws);
    app.wait_finalized(&session).await;
    let response = app
        .http
        .get(app.url(&format!("/v1/sessions/{}/recording", session.id)))
        .bearer_auth(&session.token)
        .header("Range", "bytes=+1-+2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), 100);
}

#[tokio::test]
async fn client_text_never_reaches_the_log_unescaped_and_a_reset_is_a_drop() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let (id, token) = server.create_session().await;
    let mut ws = server.connect(&id, &token).await;
    assert_eq!(ws.recv_json().await["type"], "ready");
    ws.send_text("{\"type\":\"x\\nFAKE-LOG-LINE forged\\u001b[31m\"}")
        .await;
    assert_eq!(ws.closed().await.code, 4400);

    // A socket that vanishes without a closing handshake.
    let mut ws = server.connect(&id, &token).await;
    assert_eq!(ws.recv_json().await["type"], "ready");
    ws.reset();

    eventually("both closes are logged", || async {
        server
            .logs()
            .iter()
            .filter(|l| l.contains("connection closed"))
            .count()
            >= 2
    })
    .await;
    let logs = server.logs();
    for line in &logs {
        assert!(
            !line.starts_with("FAKE-LOG-LINE"),
            "a forged log line: {line:?}"
        );
        assert!(
            !line.contains('\u{1b}'),
            "a raw escape in the log: {line:?}"
        );
    }
    assert!(
        logs.iter()
            .any(|l| l.contains("FAKE-LOG-LINE") && l.contains("\\n"))
    );
    let reset = logs
        .iter()
        .filter(|l| l.contains("connection closed"))
        .nth(1)
        .unwrap();
    assert!(
        reset.contains("code=1006") && reset.contains("dropped"),
        "{reset}"
    );
    assert!(!reset.contains("4400"), "{reset}");
    server.kill9().await;
}
