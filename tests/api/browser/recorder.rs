//! The `Recorder` public API through faults.

use std::time::Duration;

use serde_json::{Value, json};

use super::proxy::Proxy;
use super::{
    END_THE_MIC_TRACK, assert_exact, browser, captured_digest, start_recording, stop_recording,
};
use crate::helpers::{ServerProcess, get_bytes, get_json, spawn_app};

#[tokio::test]
async fn a_five_second_recording_arrives_complete_and_exact_and_plays() {
    let Some(browser) = browser().await else {
        return;
    };
    let app = spawn_app().await;
    let mut page = browser.open(&app.url("/healthz")).await;

    let session = start_recording(&mut page).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let recording = stop_recording(&mut page).await;
    let captured = captured_digest(&mut page).await;
    assert_exact(&recording, &captured);
    assert_eq!(
        page.eval("window.errors.length").await,
        0,
        "{}",
        page.eval("JSON.stringify(window.errors)").await
    );
    assert!(
        recording["mime_type"]
            .as_str()
            .unwrap()
            .starts_with("audio/webm"),
        "{recording}"
    );

    // The server agrees, and the session carries the page's metadata.
    let token = session["token"].as_str().unwrap();
    let status = get_json(
        &app.url(&format!("/v1/sessions/{}", session["id"].as_str().unwrap())),
        token,
    )
    .await;
    assert_eq!(status["state"], "ready");
    assert_eq!(status["metadata"], json!({"test": true}));

    // An independent demuxer reads it as Opus audio.
    let file = get_bytes(recording["url"].as_str().unwrap(), token).await;
    if let Some(codec) = probe_audio_codec(&file) {
        assert_eq!(codec, "opus");
    }

    // The same browser plays it.
    let played = page
        .eval(
            r#"(async () => {
                const audio = document.createElement("audio");
                audio.src = window.rec.recording.url + "?token=" + encodeURIComponent(window.rec.session.token);
                document.body.append(audio);
                await audio.play();
                await new Promise((resolve) => setTimeout(resolve, 1500));
                return { time: audio.currentTime, error: audio.error && audio.error.message, paused: audio.paused };
            })()"#,
        )
        .await;
    assert!(
        played["time"].as_f64().unwrap() > 0.5,
        "the recording did not play: {played}"
    );
    assert_eq!(played["error"], Value::Null);

    // Rewritten: the browser knows its length and seeks into the middle.
    assert_eq!(status["recording"]["rewritten"], true, "{status}");
    let duration_ms = status["recording"]["duration_ms"].as_i64().unwrap();
    assert!((4_000..=7_000).contains(&duration_ms), "{status}");
    let seek = page
        .eval(
            r#"(async () => {
                const audio = document.createElement("audio");
                audio.src = window.rec.recording.url + "?token=" + encodeURIComponent(window.rec.session.token);
                await new Promise((resolve, reject) => { audio.onloadedmetadata = resolve; audio.onerror = reject; });
                const duration = audio.duration;
                const target = duration / 2;
                audio.currentTime = target;
                await new Promise((resolve) => { audio.onseeked = resolve; });
                return { duration, target, landed: audio.currentTime };
            })()"#,
        )
        .await;
    let shown = seek["duration"].as_f64().unwrap();
    assert!(
        (shown * 1000.0 - duration_ms as f64).abs() <= 100.0,
        "<audio> says {shown} s, the server {duration_ms} ms"
    );
    let (target, landed) = (
        seek["target"].as_f64().unwrap(),
        seek["landed"].as_f64().unwrap(),
    );
    assert!(
        (landed - target).abs() <= 0.5,
        "seek to {target} landed at {landed}"
    );
    browser.close().await;
}

#[tokio::test]
async fn dropped_sockets_during_recording_lose_nothing() {
    let Some(browser) = browser().await else {
        return;
    };
    let app = spawn_app().await;
    let proxy = Proxy::start(app.url("").trim_start_matches("http://").parse().unwrap()).await;
    let mut page = browser.open(&format!("{}/healthz", proxy.origin())).await;

    start_recording(&mut page).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        proxy.cut();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let recording = stop_recording(&mut page).await;
    assert_exact(&recording, &captured_digest(&mut page).await);
    browser.close().await;
}

#[tokio::test]
async fn a_server_killed_and_restarted_during_recording_loses_nothing() {
    let Some(browser) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let proxy = Proxy::start(server.base.trim_start_matches("http://").parse().unwrap()).await;
    let mut page = browser.open(&format!("{}/healthz", proxy.origin())).await;

    start_recording(&mut page).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    server.kill9().await;
    proxy.cut();
    // Recording goes on while the server is down; chunks wait in IndexedDB.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = ServerProcess::start(dir.path(), &[]).await;
    proxy.point_at(server.base.trim_start_matches("http://").parse().unwrap());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let recording = stop_recording(&mut page).await;
    assert_exact(&recording, &captured_digest(&mut page).await);
    server.kill9().await;
    browser.close().await;
}

#[tokio::test]
async fn a_reload_mid_recording_is_resumed_with_everything_captured_before_it() {
    let Some(browser) = browser().await else {
        return;
    };
    let app = spawn_app().await;
    let mut page = browser.open(&app.url("/healthz")).await;

    let session = start_recording(&mut page).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_reload = captured_digest(&mut page).await;
    page.reload().await;

    let recordings = page
        .eval(
            r#"(async () => {
                const { Recorder } = await import("/client/spool.js");
                return Recorder.resumePending({ server: location.origin });
            })()"#,
        )
        .await;
    let recordings = recordings
        .as_array()
        .expect("resumePending resolves with an array");
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    let recording = &recordings[0];
    assert_eq!(recording["complete"], true, "{recording}");
    assert!(
        recording["url"]
            .as_str()
            .unwrap()
            .contains(session["id"].as_str().unwrap())
    );

    // Everything captured before the reload is the start of the recording.
    let prefix_bytes = before_reload["bytes"].as_u64().unwrap() as usize;
    let file = get_bytes(
        recording["url"].as_str().unwrap(),
        session["token"].as_str().unwrap(),
    )
    .await;
    assert!(
        file.len() >= prefix_bytes,
        "recording {} bytes < {prefix_bytes} captured before the reload",
        file.len()
    );
    assert_eq!(
        crate::helpers::sha256_hex(&file[..prefix_bytes]),
        before_reload["sha256"].as_str().unwrap()
    );
    assert_eq!(
        recording["source_sha256"],
        crate::helpers::sha256_hex(&file).as_str()
    );

    // Nothing is left pending in this browser.
    let again = page.eval(r#"import("/client/spool.js").then(({ Recorder }) => Recorder.resumePending({ server: location.origin }))"#).await;
    assert_eq!(again, json!([]));
    browser.close().await;
}

/// The first audio stream's codec per ffprobe, or `None` (said loudly) when
/// ffprobe is not installed outside CI.
fn probe_audio_codec(file: &[u8]) -> Option<String> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if std::process::Command::new("ffprobe")
        .arg("-version")
        .output()
        .is_err()
    {
        assert!(!in_ci, "CI=true but ffprobe is not installed");
        eprintln!(
            "\n*** ffprobe not installed: skipping the media check (apt-get install ffmpeg) ***\n"
        );
        return None;
    }
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), file).unwrap();
    let output = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(path.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffprobe cannot read the recording: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[tokio::test]
async fn with_an_api_key_the_page_uses_a_session_its_backend_created() {
    let Some(browser) = browser().await else {
        return;
    };
    let app = crate::helpers::spawn_app_with(|c| c.api_key = Some("backend-secret".into())).await;
    let mut page = browser.open(&app.url("/healthz")).await;

    // Without the key the server refuses, and the client says so.
    let refused = page
        .eval(
            r#"(async () => {
                const { Recorder } = await import("/client/spool.js");
                const rec = new Recorder({ server: location.origin });
                return rec.start().then(() => "started", (err) => err.code ?? String(err));
            })()"#,
        )
        .await;
    assert_eq!(refused, "unauthorized");

    // `createSession` stands in for the page's backend, which holds the key.
    let recording = page
        .eval(
            r#"(async () => {
                const { Recorder } = await import("/client/spool.js");
                const backend = async ({ mimeType, metadata }) => {
                    const response = await fetch("/v1/sessions", {
                        method: "POST",
                        headers: { authorization: "Bearer backend-secret", "content-type": "application/json" },
                        body: JSON.stringify({ mime_type: mimeType, metadata }),
                    });
                    return response.json();
                };
                const rec = new Recorder({ server: location.origin, createSession: backend });
                await rec.start();
                await new Promise((resolve) => setTimeout(resolve, 1500));
                return rec.stop();
            })()"#,
        )
        .await;
    assert_eq!(recording["complete"], true, "{recording}");
    browser.close().await;
}

#[tokio::test]
async fn a_page_on_another_origin_records_through_the_server() {
    let Some(browser) = browser().await else {
        return;
    };
    let app = spawn_app().await;
    let mut page = browser.page().await;
    // `localhost` and `127.0.0.1` are different origins.
    let port = app.url("").rsplit(':').next().unwrap().to_owned();
    page.goto(&format!("http://localhost:{port}/healthz")).await;
    let recording = page
        .eval(&format!(
            r#"(async () => {{
                const server = "http://127.0.0.1:{port}";
                const {{ Recorder }} = await import(server + "/client/spool.js");
                const rec = new Recorder({{ server }});
                await rec.start();
                await new Promise((resolve) => setTimeout(resolve, 1500));
                const recording = await rec.stop();
                const head = await fetch(recording.url, {{ headers: {{ authorization: "Bearer " + rec.session.token, range: "bytes=0-3" }} }});
                return {{ recording, status: head.status, range: head.headers.get("content-range") }};
            }})()"#
        ))
        .await;
    assert_eq!(recording["recording"]["complete"], true, "{recording}");
    assert_eq!(recording["status"], 206, "{recording}");
    assert!(
        recording["range"]
            .as_str()
            .unwrap()
            .starts_with("bytes 0-3/"),
        "{recording}"
    );
    browser.close().await;
}

#[tokio::test]
async fn an_input_that_ends_mid_recording_restarts_into_one_file() {
    // As when a headset is unplugged: the mic's track ends.
    restart_mid_recording(END_THE_MIC_TRACK).await;
}

/// Some systems keep a vanished microphone's track live but silent: the
/// `devicechange` event is the only sign. The client notices that the device
/// it records is no longer listed and goes on with the new input.
#[tokio::test]
async fn a_microphone_that_disappears_from_the_device_list_is_switched() {
    restart_mid_recording(
        r#"(() => {
            const devices = navigator.mediaDevices;
            devices.enumerateDevices = async () => [{ kind: "audioinput", deviceId: "another", groupId: "g", label: "" }];
            devices.dispatchEvent(new Event("devicechange"));
        })()"#,
    )
    .await;
}

/// Records ~2 s, runs `cause` (something that should make the client restart
/// its recorder), records ~2 s more: one exact file, rewritten, as long as both.
async fn restart_mid_recording(cause: &str) {
    let Some(browser) = browser().await else {
        return;
    };
    let app = spawn_app().await;
    let mut page = browser.open(&app.url("/healthz")).await;
    start_recording(&mut page).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    page.eval(cause).await;
    page.wait_for("window.rec.progress.restarts === 1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recording = stop_recording(&mut page).await;
    let captured = captured_digest(&mut page).await;
    assert_exact(&recording, &captured);
    assert_eq!(recording["rewritten"], true, "{recording}");
    let duration_ms = recording["duration_ms"].as_i64().unwrap();
    assert!((3_000..=6_000).contains(&duration_ms), "{recording}");
    assert_eq!(page.eval("JSON.stringify(window.errors)").await, "[]");
    browser.close().await;
}

/// stop() called while a restart is reopening the input: the old recorder's
/// last chunk is still counted (the recording is exact), and the microphone
/// reopened meanwhile is released, not left on.
#[tokio::test]
async fn stop_during_a_restart_keeps_the_last_chunk_and_releases_the_microphone() {
    let Some(browser) = browser().await else {
        return;
    };
    let app = spawn_app().await;
    let mut page = browser.open(&app.url("/healthz")).await;
    page.eval(
        r#"(() => {
            window.opened = [];
            const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
            navigator.mediaDevices.getUserMedia = async (constraints) => {
                await new Promise((r) => setTimeout(r, window.opened.length ? 300 : 0));
                const stream = await open(constraints);
                window.opened.push(stream);
                return stream;
            };
        })()"#,
    )
    .await;
    start_recording(&mut page).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let recording = page
        .eval(
            r#"(async () => {
                const track = window.rec.stream.getAudioTracks()[0];
                track.stop();
                track.dispatchEvent(new Event("ended"));
                return await window.rec.stop();
            })()"#,
        )
        .await;
    let captured = captured_digest(&mut page).await;
    assert_exact(&recording, &captured);
    page.wait_for("window.opened.length === 2").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live = page
        .eval("window.opened.flatMap((s) => s.getTracks()).filter((t) => t.readyState === 'live').length")
        .await;
    assert_eq!(live, 0, "a microphone track was left on");
    browser.close().await;
}
