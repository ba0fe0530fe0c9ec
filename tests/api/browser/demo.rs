//! The demo page, used as a person would: Record, Stop, listen.

use std::path::PathBuf;
use std::time::Duration;

use super::browser;
use crate::helpers::spawn_app;

#[tokio::test]
async fn the_demo_page_records_and_shows_the_recording() {
    let Some(browser) = browser().await else {
        return;
    };
    let app = spawn_app().await;
    let mut page = browser.open(&app.url("/")).await;
    page.wait_for(
        "document.querySelector('#record') && !document.querySelector('#record').disabled",
    )
    .await;

    page.eval("document.querySelector('#record').click()").await;
    page.wait_for("window.spoolDemo.recorder?.state === 'recording'")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    page.eval("document.querySelector('#stop').click()").await;
    page.wait_for("!!(window.spoolDemo.lastRecording && document.querySelector('#player').src)")
        .await;
    page.wait_for("document.querySelector('#player').readyState >= 1")
        .await;

    let shown = page
        .eval(
            r#"({
                state: document.querySelector('#state').textContent,
                captured: Number(document.querySelector('#captured').textContent),
                acked: Number(document.querySelector('#acked').textContent),
                download: document.querySelector('#download').href,
                recent: document.querySelectorAll('#recent li').length,
                bytes: window.spoolDemo.lastRecording.bytes,
            })"#,
        )
        .await;
    assert!(shown["captured"].as_u64().unwrap() > 0, "{shown}");
    assert_eq!(shown["captured"], shown["acked"], "{shown}");
    assert!(
        shown["download"].as_str().unwrap().contains("/recording"),
        "{shown}"
    );
    assert!(shown["recent"].as_u64().unwrap() >= 1, "{shown}");

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts/demo-after-recording.png");
    page.screenshot(&path).await;
    println!("demo page screenshot: {}", path.display());
    browser.close().await;
}
