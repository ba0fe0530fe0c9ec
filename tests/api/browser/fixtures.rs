//! Makes the committed MediaRecorder fixtures under `tests/fixtures/mediarecorder/`:
//! real recordings from headless Chromium through the public `Recorder`,
//! with the chunk boundaries and flags kept. Not part of the suite (it
//! rewrites files in the repository); run it on purpose when the browser
//! changes:
//!
//! ```text
//! cargo test --test api record_mediarecorder_fixtures -- --ignored
//! ```

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use serde_json::json;

use super::browser;
use crate::helpers::spawn_app;

/// (fixture name, MIME type asked of MediaRecorder, restart the input midway).
const FIXTURES: [(&str, &str, bool); 3] = [
    ("chromium-opus-webm", "audio/webm;codecs=opus", false),
    (
        "chromium-opus-webm-restarted",
        "audio/webm;codecs=opus",
        true,
    ),
    ("chromium-opus-mp4", "audio/mp4;codecs=opus", false),
];

#[tokio::test]
#[ignore = "rewrites tests/fixtures; run on purpose with --ignored"]
async fn record_mediarecorder_fixtures() {
    let Some(browser) = browser().await else {
        panic!("Chromium is needed to record fixtures");
    };
    let app = spawn_app().await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mediarecorder");
    std::fs::create_dir_all(&dir).unwrap();
    let version = browser.page().await.eval("navigator.userAgent").await;
    for (name, mime_type, restart) in FIXTURES {
        let mut page = browser.open(&app.url("/healthz")).await;
        page.eval(&format!(
            r#"(async () => {{
                const {{ Recorder }} = await import("/client/spool.js");
                window.chunks = [];
                const rec = new Recorder({{ server: location.origin, timeslice: 250, mimeType: "{mime_type}" }});
                rec.addEventListener("chunk", (e) => {{ window.chunks[e.detail.index] = e.detail; }});
                window.rec = rec;
                await rec.start();
            }})()"#
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(1_800)).await;
        if restart {
            page.eval(super::END_THE_MIC_TRACK).await;
            page.wait_for("window.rec.progress.restarts === 1").await;
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(1_200)).await;
        }
        let recording = page.eval("window.rec.stop()").await;
        let chunks = page
            .eval(
                r#"(async () => Promise.all(window.chunks.map(async (c) => ({
                    new_stream: c.newStream,
                    base64: btoa(String.fromCharCode(...new Uint8Array(await c.data.arrayBuffer()))),
                }))))()"#,
            )
            .await;
        let mut bytes = Vec::new();
        let mut index = Vec::new();
        for chunk in chunks.as_array().unwrap() {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(chunk["base64"].as_str().unwrap())
                .unwrap();
            index.push(json!({ "bytes": payload.len(), "new_stream": chunk["new_stream"] }));
            bytes.extend(payload);
        }
        let description = json!({
            "browser": version,
            "mime_type": recording["mime_type"],
            "timeslice_ms": 250,
            "chunks": index,
        });
        std::fs::write(dir.join(format!("{name}.bin")), &bytes).unwrap();
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_string_pretty(&description).unwrap() + "\n",
        )
        .unwrap();
        eprintln!("{name}: {} bytes in {} chunks", bytes.len(), index.len());
    }
    browser.close().await;
}
