//! The browser client in Debian's headless Chromium with a fake microphone,
//! against the real server: recording, network cuts, a killed server, a
//! reload, playback, and the demo page.

mod admin;
mod cdp;
mod demo;
mod fixtures;
mod proxy;
mod recorder;

use serde_json::Value;

use cdp::{Browser, Page};

/// Chromium and real-time recording are heavy for this machine's two cores:
/// one browser test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Ends the recording microphone's track, as unplugging a headset does.
const END_THE_MIC_TRACK: &str = r#"(() => {
    const track = window.rec.stream.getAudioTracks()[0];
    track.stop();
    track.dispatchEvent(new Event("ended"));
})()"#;

/// Starts a `Recorder` through the public API in the page and keeps every
/// captured chunk (by index) so the test can hash what was captured.
async fn start_recording(page: &mut Page) -> Value {
    page.eval(
        r#"(async () => {
            const { Recorder } = await import("/client/spool.js");
            window.captured = [];
            window.errors = [];
            const rec = new Recorder({ server: location.origin, timeslice: 250, metadata: { test: true } });
            rec.addEventListener("chunk", (e) => { window.captured[e.detail.index] = e.detail.data; });
            rec.addEventListener("error", (e) => { window.errors.push(e.detail); });
            window.rec = rec;
            await rec.start();
            return rec.session;
        })()"#,
    )
    .await
}

/// Stops the recorder and returns the `recording` it resolves with.
async fn stop_recording(page: &mut Page) -> Value {
    page.eval("window.rec.stop()").await
}

/// SHA-256, byte count and chunk count of the captured chunks joined in index order.
async fn captured_digest(page: &mut Page) -> Value {
    page.eval(
        r#"(async () => {
            const chunks = window.captured;
            if (chunks.some((c) => c === undefined)) throw new Error("a captured index is missing");
            const buffer = await new Blob(chunks).arrayBuffer();
            const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
            const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
            return { sha256: hex, bytes: buffer.byteLength, chunks: chunks.length };
        })()"#,
    )
    .await
}

/// The recording holds exactly what the page captured.
fn assert_exact(recording: &Value, captured: &Value) {
    assert_eq!(recording["complete"], true, "{recording}");
    assert_eq!(recording["missing"], serde_json::json!([]), "{recording}");
    assert_eq!(
        recording["source_sha256"], captured["sha256"],
        "recording {recording} vs captured {captured}"
    );
    assert_eq!(recording["source_bytes"], captured["bytes"]);
    assert!(
        captured["chunks"].as_u64().unwrap() >= 4,
        "too few chunks to mean anything: {captured}"
    );
}

/// A browser for one test, holding the one-at-a-time lock while it lives.
struct TestBrowser {
    browser: Browser,
    _one: tokio::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for TestBrowser {
    type Target = Browser;

    fn deref(&self) -> &Browser {
        &self.browser
    }
}

impl TestBrowser {
    async fn close(self) {
        self.browser.close().await;
    }
}

/// Waits for its turn and launches Chromium, or returns `None` when it is
/// missing outside CI.
async fn browser() -> Option<TestBrowser> {
    let one = ONE_AT_A_TIME.lock().await;
    let binary = cdp::require_chromium()?;
    Some(TestBrowser {
        browser: Browser::launch(&binary, None).await,
        _one: one,
    })
}
