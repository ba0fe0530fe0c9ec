//! The admin page, used as an operator would: sign in (a wrong token first),
//! read the totals, watch a live session grow, filter and page, open a
//! session and listen to it, finalize one and delete one behind their
//! confirmation steps, at desktop and phone widths.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::browser;
use super::cdp::Page;
use crate::helpers::{Created, TestApp, Ws, spawn_app_with};

const ADMIN: &str = "admin-secret";

/// A page-side string literal.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts")
        .join(name)
}

/// `seconds` of a 440 Hz tone as 8 kHz mono 16-bit PCM WAV: a file any browser plays.
fn tone_wav(seconds: u32) -> Vec<u8> {
    let rate = 8000u32;
    let samples = rate * seconds;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend(b"RIFF");
    out.extend((36 + data_len).to_le_bytes());
    out.extend(b"WAVEfmt ");
    out.extend(16u32.to_le_bytes());
    out.extend(1u16.to_le_bytes()); // PCM
    out.extend(1u16.to_le_bytes()); // mono
    out.extend(rate.to_le_bytes());
    out.extend((rate * 2).to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(16u16.to_le_bytes());
    out.extend(b"data");
    out.extend(data_len.to_le_bytes());
    for i in 0..samples {
        let t = i as f32 / rate as f32;
        let v = ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16;
        out.extend(v.to_le_bytes());
    }
    out
}

async fn admin_request(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = app
        .http
        .request(method, app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends `chunks` as indexes 0.. and declares them all: the session ends `ready`.
async fn upload_complete(app: &TestApp, session: &Created, chunks: &[Vec<u8>]) -> Value {
    let (mut ws, _) = Ws::ready(app, session).await;
    ws.send_all(chunks, 0).await;
    ws.send_json(json!({"type": "finish", "chunks": chunks.len()}))
        .await;
    let ready = app.wait_finalized(session).await;
    assert_eq!(ready["state"], "ready", "{ready}");
    ready
}

async fn type_into(page: &mut Page, selector: &str, text: &str) {
    page.eval(&format!(
        "(() => {{ const e = document.querySelector({0}); e.value = ''; e.focus(); }})()",
        js(selector)
    ))
    .await;
    page.call("Input.insertText", json!({ "text": text })).await;
}

async fn click(page: &mut Page, selector: &str) {
    page.eval(&format!(
        "(() => {{ const e = document.querySelector({0}); if (!e) throw new Error('no ' + {0}); e.click(); }})()",
        js(selector)
    ))
    .await;
}

/// The ids of the rows shown, in order.
async fn rows(page: &mut Page) -> Vec<String> {
    let shown = page
        .eval("[...document.querySelectorAll('#sessions [data-id]')].map((r) => r.dataset.id)")
        .await;
    serde_json::from_value(shown).unwrap()
}

/// Waits until the rows shown are exactly `ids` (in order) and nothing is loading.
async fn wait_rows(page: &mut Page, ids: &[&str]) {
    let expected = serde_json::to_string(ids).unwrap();
    wait(page, &format!(
        "!window.spoolAdmin.busy && JSON.stringify([...document.querySelectorAll('#sessions [data-id]')].map((r) => r.dataset.id)) === {}",
        js(&expected)
    ))
    .await;
}

/// Opens `id` from its row and waits for the full detail.
async fn open_detail(page: &mut Page, id: &str) {
    click(page, &format!("#sessions [data-id=\"{id}\"]")).await;
    wait(page, &format!(
        "document.querySelector('#detail').open && window.spoolAdmin.lastDetail?.id === {} && !window.spoolAdmin.busy",
        js(id)
    ))
    .await;
}

async fn close_detail(page: &mut Page) {
    click(page, "#close-detail").await;
    wait(page, "!document.querySelector('#detail').open").await;
}

/// Like `Page::wait_for`, but on a timeout says what the page shows.
async fn wait(page: &mut Page, condition: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while page.eval(&format!("!!({condition})")).await != true {
        if tokio::time::Instant::now() > deadline {
            let state = page
                .eval(
                    "JSON.stringify({ admin: window.spoolAdmin, busy: window.spoolAdmin?.busy, \
                     message: document.querySelector('#message')?.textContent, \
                     detailMessage: document.querySelector('#detail-message')?.textContent, \
                     detailOpen: document.querySelector('#detail')?.open })",
                )
                .await;
            panic!("timed out waiting for: {condition}\npage: {state}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn viewport(page: &mut Page, width: u32, height: u32, mobile: bool) {
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_admin_page_lists_filters_plays_finalizes_and_deletes() {
    let Some(browser) = browser().await else {
        return;
    };
    let app = spawn_app_with(|c| {
        c.admin_token = Some(ADMIN.into());
        c.max_sessions_per_minute = 0;
    })
    .await;

    // Oldest first: a playable WAV, one to delete (with metadata that would be
    // markup if it were ever parsed), one that failed, and a live one with a gap.
    let playable = app
        .create_session_with(
            json!({"mime_type": "audio/wav", "metadata": {"team": "b", "source": "test tone"}}),
        )
        .await;
    let wav = tone_wav(2);
    let chunks: Vec<Vec<u8>> = wav.chunks(wav.len() / 4 + 1).map(<[u8]>::to_vec).collect();
    let ready = upload_complete(&app, &playable, &chunks).await;
    assert_eq!(ready["recording"]["complete"], true, "{ready}");

    let doomed = app
        .create_session_with(json!({
            "mime_type": "audio/webm",
            "metadata": {"team": "c", "note": "<img src=x onerror=\"window.pwned=1\"><b>bold</b>"}
        }))
        .await;
    upload_complete(&app, &doomed, &[b"chunk 0".to_vec()]).await;

    let failed = app
        .create_session_with(json!({"mime_type": "audio/webm", "metadata": {"team": "d"}}))
        .await;
    {
        let (mut ws, _) = Ws::ready(&app, &failed).await;
        ws.send_chunk(1, b"chunk 1").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = admin_request(
        &app,
        reqwest::Method::POST,
        &format!("/v1/admin/sessions/{}/finalize", failed.id),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(app.wait_finalized(&failed).await["state"], "failed");

    let gap = app
        .create_session_with(json!({"mime_type": "audio/webm", "metadata": {"team": "a"}}))
        .await;
    let (mut live_ws, _) = Ws::ready(&app, &gap).await;
    live_ws.send_chunk(0, b"chunk 0").await;
    live_ws.send_chunk(1, b"chunk 1").await;
    live_ws.wait_ack(2).await;

    let all = [
        gap.id.as_str(),
        failed.id.as_str(),
        doomed.id.as_str(),
        playable.id.as_str(),
    ];

    let mut page = browser.page().await;
    viewport(&mut page, 1280, 900, false).await;
    page.goto(&app.url("/admin")).await;
    wait(
        &mut page,
        "!!window.spoolAdmin && !document.querySelector('#login').hidden",
    )
    .await;
    let hint = page
        .eval("document.querySelector('#login').textContent")
        .await;
    assert!(
        hint.as_str().unwrap().contains("<data-dir>/admin-token"),
        "{hint}"
    );

    // A wrong token is refused and not kept.
    type_into(&mut page, "#token", "not-the-token").await;
    click(&mut page, "#sign-in").await;
    wait(
        &mut page,
        "!document.querySelector('#login-message').hidden && !window.spoolAdmin.busy",
    )
    .await;
    let refused = page
        .eval("({ text: document.querySelector('#login-message').textContent, kept: sessionStorage.getItem('spool-admin-token') })")
        .await;
    assert!(
        refused["text"]
            .as_str()
            .unwrap()
            .contains("That token was refused"),
        "{refused}"
    );
    assert_eq!(refused["kept"], Value::Null);

    // The right one: totals and every session, newest first.
    type_into(&mut page, "#token", ADMIN).await;
    click(&mut page, "#sign-in").await;
    wait_rows(&mut page, &all).await;
    let shown = page
        .eval(
            r#"(() => {
                const stat = (k) => document.querySelector(`#stats [data-stat="${k}"]`).textContent;
                return {
                    recording: stat("recording"), ready: stat("ready"), failed: stat("failed"),
                    chunks: stat("chunks_stored"), bytes: stat("chunk_bytes_stored"),
                    recordings: stat("recordings_bytes"),
                    kept: sessionStorage.getItem("spool-admin-token"),
                    login: document.querySelector('#login').hidden,
                    signOut: document.querySelector('#sign-out').hidden,
                };
            })()"#,
        )
        .await;
    assert_eq!(shown["recording"], "1", "{shown}");
    assert_eq!(shown["ready"], "2", "{shown}");
    assert_eq!(shown["failed"], "1", "{shown}");
    let (_, stats) = admin_request(&app, reqwest::Method::GET, "/v1/admin/stats").await;
    assert_eq!(
        shown["chunks"],
        stats["chunks_stored"].to_string(),
        "{shown} {stats}"
    );
    assert!(
        shown["recordings"].as_str().unwrap().ends_with("KB"),
        "{shown}"
    );
    assert_eq!(shown["kept"], ADMIN);
    assert_eq!(shown["login"], true);
    assert_eq!(shown["signOut"], false);

    // Metadata is text, never markup.
    let meta = page
        .eval(&format!(
            "(() => {{ const row = document.querySelector('#sessions [data-id=\"{}\"]');
                return {{ text: row.querySelector('.meta-summary').textContent,
                          markup: !!document.querySelector('#sessions img, #sessions b'),
                          pwned: window.pwned ?? null }}; }})()",
            doomed.id
        ))
        .await;
    assert!(
        meta["text"].as_str().unwrap().contains("<img src=x"),
        "{meta}"
    );
    assert_eq!(meta["markup"], false, "{meta}");
    assert_eq!(meta["pwned"], Value::Null, "{meta}");

    // Live: the recording session's row follows its chunks while the page watches.
    let gap_row = format!("#sessions [data-id=\"{}\"]", gap.id);
    wait(&mut page, &format!(
        "window.spoolAdmin.polling && document.querySelector('{gap_row} td:nth-child(4)').textContent === '2'"
    ))
    .await;
    live_ws.send_chunk(3, b"chunk 3").await;
    wait(
        &mut page,
        &format!("document.querySelector('{gap_row} td:nth-child(4)').textContent === '3'"),
    )
    .await;
    let seen = page
        .eval(&format!(
            "document.querySelector('{gap_row} td:nth-child(6)').textContent"
        ))
        .await;
    assert!(
        seen.as_str().unwrap().ends_with("s ago") || seen == "just now",
        "{seen}"
    );
    let (_, stats) = admin_request(&app, reqwest::Method::GET, "/v1/admin/stats").await;
    wait(
        &mut page,
        &format!(
            "document.querySelector('#stats [data-stat=\"chunks_stored\"]').textContent === '{}'",
            stats["chunks_stored"]
        ),
    )
    .await;

    // A hidden tab stops polling; visible again, it resumes.
    page.eval(
        "Object.defineProperty(document, 'hidden', { value: true, configurable: true });
         document.dispatchEvent(new Event('visibilitychange'));",
    )
    .await;
    wait(&mut page, "!window.spoolAdmin.busy").await;
    page.eval("window.before = window.spoolAdmin.lastList")
        .await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let paused = page
        .eval("({ same: window.spoolAdmin.lastList === window.before, polling: window.spoolAdmin.polling })")
        .await;
    assert_eq!(paused, json!({"same": true, "polling": false}));
    page.eval("delete document.hidden; document.dispatchEvent(new Event('visibilitychange'));")
        .await;
    wait(
        &mut page,
        "window.spoolAdmin.lastList !== window.before && window.spoolAdmin.polling",
    )
    .await;

    page.screenshot(&artifact("admin.png")).await;

    // Filters: by state, by metadata, by time; then cleared.
    page.eval("document.querySelector('#filter-state').value = 'ready'")
        .await;
    click(&mut page, "#apply").await;
    wait_rows(&mut page, &[doomed.id.as_str(), playable.id.as_str()]).await;
    let states = page
        .eval("[...document.querySelectorAll('#sessions [data-id]')].every((r) => r.dataset.state === 'ready')")
        .await;
    assert_eq!(states, true);
    click(&mut page, "#clear").await;
    wait_rows(&mut page, &all).await;

    type_into(&mut page, "#filter-meta-key", "team").await;
    type_into(&mut page, "#filter-meta-value", "a").await;
    click(&mut page, "#apply").await;
    wait_rows(&mut page, &[gap.id.as_str()]).await;
    page.eval("document.querySelector('#filter-complete').value = 'false'")
        .await;
    click(&mut page, "#apply").await;
    wait_rows(&mut page, &[]).await;
    assert_eq!(
        page.eval("document.querySelector('#empty').hidden").await,
        false
    );
    click(&mut page, "#clear").await;
    wait_rows(&mut page, &all).await;

    page.eval(
        r#"(() => {
            const pad = (n) => String(n).padStart(2, "0");
            const local = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
            document.querySelector('#filter-since').value = local(new Date(Date.now() + 3600e3));
        })()"#,
    )
    .await;
    click(&mut page, "#apply").await;
    wait_rows(&mut page, &[]).await;
    let since = page.eval("window.spoolAdmin.filters.since").await;
    assert!(since.as_str().unwrap().ends_with('Z'), "{since}");
    click(&mut page, "#clear").await;
    wait_rows(&mut page, &all).await;

    // A bad filter answer shows the server's message.
    page.eval("document.querySelector('#filter-limit').value = '9999'")
        .await;
    click(&mut page, "#apply").await;
    wait(&mut page, "!document.querySelector('#message').hidden").await;
    click(&mut page, "#clear").await;
    wait_rows(&mut page, &all).await;

    // Paging: three per page, then the rest, then back.
    type_into(&mut page, "#filter-limit", "3").await;
    click(&mut page, "#apply").await;
    wait_rows(&mut page, &all[..3]).await;
    assert_eq!(
        page.eval(
            "[document.querySelector('#prev').disabled, document.querySelector('#next').disabled]"
        )
        .await,
        json!([true, false])
    );
    click(&mut page, "#next").await;
    wait_rows(&mut page, &all[3..]).await;
    assert_eq!(
        page.eval("[document.querySelector('#prev').disabled, document.querySelector('#next').disabled, document.querySelector('#page').textContent]").await,
        json!([false, true, "Page 2"])
    );
    click(&mut page, "#prev").await;
    wait_rows(&mut page, &all[..3]).await;
    click(&mut page, "#clear").await;
    wait_rows(&mut page, &all).await;

    // The playable recording: a player with the token in its URL that loads, and a download.
    open_detail(&mut page, &playable.id).await;
    wait(&mut page, "!!document.querySelector('#player').src && document.querySelector('#player').readyState >= 1")
        .await;
    let detail = page
        .eval(
            r#"({
                src: document.querySelector('#player').src,
                download: document.querySelector('#download').href,
                metadata: document.querySelector('#detail-metadata').textContent,
                finalize: document.querySelector('#finalize').hidden,
                duration: document.querySelector('#player').duration,
                text: document.querySelector('#detail').textContent,
            })"#,
        )
        .await;
    let expected_src = format!(
        "{}?token={ADMIN}",
        ready["recording"]["url"].as_str().unwrap()
    );
    assert_eq!(detail["src"], expected_src.as_str(), "{detail}");
    assert_eq!(detail["download"], expected_src.as_str(), "{detail}");
    assert!(
        detail["metadata"]
            .as_str()
            .unwrap()
            .contains("\"source\": \"test tone\""),
        "{detail}"
    );
    assert_eq!(
        detail["finalize"], true,
        "a ready session cannot be finalized"
    );
    let duration = detail["duration"].as_f64().unwrap();
    assert!((duration - 2.0).abs() < 0.1, "{detail}");
    assert!(
        detail["text"].as_str().unwrap().contains("127.0.0.1:"),
        "the client's address: {detail}"
    );
    page.screenshot(&artifact("admin-detail.png")).await;
    close_detail(&mut page).await;

    // The failed one says why.
    open_detail(&mut page, &failed.id).await;
    let reason = page
        .eval("document.querySelector('#detail-fields').textContent")
        .await;
    assert!(
        reason.as_str().unwrap().contains("Failure reason"),
        "{reason}"
    );
    assert_eq!(
        page.eval("document.querySelector('#recording').hidden && !document.querySelector('#player').getAttribute('src')").await,
        true
    );
    close_detail(&mut page).await;

    // Finalize the live one with its gap: a confirmation first, Cancel does nothing.
    open_detail(&mut page, &gap.id).await;
    assert_eq!(
        page.eval("window.spoolAdmin.lastDetail.missing").await,
        json!([[2, 2]])
    );
    let fields = page
        .eval("document.querySelector('#detail-fields').textContent")
        .await;
    assert!(fields.as_str().unwrap().contains("2 (1 chunk)"), "{fields}");
    click(&mut page, "#finalize").await;
    page.screenshot(&artifact("admin-confirm.png")).await;
    assert_eq!(
        page.eval("[document.querySelector('#confirm-box').hidden, document.querySelector('#actions').hidden, document.querySelector('#confirm').textContent]").await,
        json!([false, true, "Yes, finalize now"])
    );
    click(&mut page, "#cancel").await;
    assert_eq!(
        page.eval("[document.querySelector('#confirm-box').hidden, window.spoolAdmin.pending]")
            .await,
        json!([true, null])
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get_session(&gap).await["state"], "recording");
    click(&mut page, "#finalize").await;
    click(&mut page, "#confirm").await;
    wait(
        &mut page,
        "window.spoolAdmin.lastAction?.kind === 'finalize'",
    )
    .await;
    assert_eq!(
        page.eval("window.spoolAdmin.lastAction.ok").await,
        true,
        "{}",
        page.eval("JSON.stringify(window.spoolAdmin.lastAction)")
            .await
    );
    let finalized = app.wait_finalized(&gap).await;
    assert_eq!(finalized["state"], "ready", "{finalized}");
    assert_eq!(finalized["recording"]["complete"], false, "{finalized}");
    // Only the unbroken prefix is joined: chunk 3 is left out with the gap.
    assert_eq!(finalized["recording"]["missing"], json!([[2, 3]]));
    // The open detail follows it to ready and offers the file.
    wait(&mut page,
        "window.spoolAdmin.lastDetail?.state === 'ready' && !!document.querySelector('#player').src && document.querySelector('#finalize').hidden",
    )
    .await;
    assert!(
        page.eval("document.querySelector('#detail-message').textContent")
            .await
            .as_str()
            .unwrap()
            .starts_with("Finalized"),
    );
    drop(live_ws);
    close_detail(&mut page).await;
    wait(
        &mut page,
        &format!("document.querySelector('{gap_row}')?.dataset.state === 'ready'"),
    )
    .await;

    // Delete one: a confirmation, then it is gone from the page and the API.
    open_detail(&mut page, &doomed.id).await;
    let untouched = page
        .eval("({ metadata: document.querySelector('#detail-metadata').textContent, markup: !!document.querySelector('#detail img, #detail b'), pwned: window.pwned ?? null })")
        .await;
    assert!(
        untouched["metadata"]
            .as_str()
            .unwrap()
            .contains("<img src=x"),
        "{untouched}"
    );
    assert_eq!(untouched["markup"], false);
    assert_eq!(untouched["pwned"], Value::Null);
    click(&mut page, "#delete").await;
    assert_eq!(
        page.eval("document.querySelector('#confirm').textContent")
            .await,
        "Really delete?"
    );
    click(&mut page, "#confirm").await;
    wait(&mut page, "window.spoolAdmin.lastAction?.kind === 'delete' && !document.querySelector('#detail').open")
        .await;
    assert_eq!(page.eval("window.spoolAdmin.lastAction.ok").await, true);
    wait_rows(
        &mut page,
        &[gap.id.as_str(), failed.id.as_str(), playable.id.as_str()],
    )
    .await;
    let (status, _) = admin_request(
        &app,
        reqwest::Method::GET,
        &format!("/v1/admin/sessions/{}", doomed.id),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin_request(
        &app,
        reqwest::Method::GET,
        &format!("/v1/sessions/{}", doomed.id),
    )
    .await;
    assert_eq!(status, 404);

    // Nothing is live any more: polling stops.
    wait(&mut page, "!window.spoolAdmin.polling && !window.spoolAdmin.busy && document.querySelector('#live').hidden")
        .await;

    // On a phone (and a reload keeps the sign-in for this tab): no sideways
    // scrolling, the filters folded, rows as cards, the detail full screen.
    viewport(&mut page, 390, 844, true).await;
    page.reload().await;
    wait_rows(
        &mut page,
        &[gap.id.as_str(), failed.id.as_str(), playable.id.as_str()],
    )
    .await;
    assert_eq!(
        page.eval("document.querySelector('#filter-box').open")
            .await,
        false
    );
    let phone = page
        .eval(
            r#"({
                overflow: document.documentElement.scrollWidth - window.innerWidth,
                row: getComputedStyle(document.querySelector('#sessions tr')).display,
            })"#,
        )
        .await;
    assert_eq!(phone["overflow"], 0, "{phone}");
    assert_eq!(phone["row"], "block", "{phone}");
    page.screenshot(&artifact("admin-phone.png")).await;
    page.eval("document.querySelector('#sessions-title').scrollIntoView()")
        .await;
    page.screenshot(&artifact("admin-phone-sessions.png")).await;
    open_detail(&mut page, &playable.id).await;
    wait(
        &mut page,
        "document.querySelector('#player').readyState >= 1",
    )
    .await;
    let width = page
        .eval("document.querySelector('#detail').getBoundingClientRect().width - window.innerWidth")
        .await;
    assert_eq!(width.as_f64(), Some(0.0), "the detail fills the screen");
    page.screenshot(&artifact("admin-phone-detail.png")).await;
    close_detail(&mut page).await;

    // Sign out: back to the prompt, the token forgotten.
    click(&mut page, "#sign-out").await;
    let out = page
        .eval("({ login: document.querySelector('#login').hidden, kept: sessionStorage.getItem('spool-admin-token'), rows: document.querySelectorAll('#sessions [data-id]').length })")
        .await;
    assert_eq!(out, json!({"login": false, "kept": null, "rows": 0}));
    assert_eq!(rows(&mut page).await.len(), 0);

    println!(
        "admin page screenshots: {}",
        artifact("admin*.png").display()
    );
    browser.close().await;
}
