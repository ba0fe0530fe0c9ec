//! A small Chrome DevTools Protocol driver for Debian's headless Chromium:
//! start the browser, open a page, evaluate JavaScript, take screenshots.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where Chromium is, or why the browser tests cannot run.
pub fn chromium_path() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Returns the browser binary, or `None` after saying loudly why the test is
/// skipped. Under CI a missing browser fails the test instead.
pub fn require_chromium() -> Option<PathBuf> {
    match chromium_path() {
        Some(path) => Some(path),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but Chromium is not installed")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED: browser test needs Debian's chromium (apt-get install chromium) ***\n"
            );
            None
        }
    }
}

pub struct Browser {
    child: tokio::process::Child,
    debugger_port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Headless Chromium with a fake microphone (a beep, or `audio_file`).
    pub async fn launch(binary: &Path, audio_file: Option<&Path>) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--mute-audio",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--remote-debugging-port=0",
                "--window-size=430,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()));
        if let Some(file) = audio_file {
            command.arg(format!(
                "--use-file-for-fake-audio-capture={}",
                file.display()
            ));
        }
        command.arg("about:blank");
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let debugger_port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("DevTools listening on ws://127.0.0.1:") {
                    return rest.split('/').next().unwrap().parse::<u16>().unwrap();
                }
            }
            panic!("chromium exited before its DevTools endpoint was up");
        })
        .await
        .expect("chromium starts in time");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            debugger_port,
            _profile: profile,
        }
    }

    /// The first page target.
    pub async fn page(&self) -> Page {
        let targets: Value =
            reqwest::get(format!("http://127.0.0.1:{}/json/list", self.debugger_port))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (socket, _) = connect_async(url)
            .await
            .expect("connect to the page's DevTools socket");
        let mut page = Page {
            socket,
            next_id: AtomicU64::new(1),
        };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }

    /// The first page, navigated to `url`.
    pub async fn open(&self, url: &str) -> Page {
        let mut page = self.page().await;
        page.goto(url).await;
        page
    }

    pub async fn close(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

pub struct Page {
    socket: Socket,
    next_id: AtomicU64,
}

impl Page {
    /// Sends a CDP command and waits for its result, skipping events.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::Text(request.to_string().into()))
            .await
            .expect("CDP send");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(120), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method} did not answer"))
                .expect("DevTools socket open")
                .expect("DevTools socket readable");
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == id {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed: {error}");
                }
                return value["result"].clone();
            }
        }
    }

    /// Navigates and waits for the load event.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete'").await;
    }

    /// Evaluates `expression` (awaiting a promise) and returns its JSON value;
    /// a thrown exception fails the test with the page's message.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call("Runtime.evaluate", json!({"expression": expression, "awaitPromise": true, "returnByValue": true, "userGesture": true}))
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            let text = exception["exception"]["description"]
                .as_str()
                .or(exception["text"].as_str())
                .unwrap_or("?");
            panic!("page threw: {text}\nwhile evaluating: {expression}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `condition` until it is true, for at most a minute.
    pub async fn wait_for(&mut self, condition: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let result = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": condition, "returnByValue": true}),
                )
                .await;
            if result["result"]["value"] == true {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {condition}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn reload(&mut self) {
        self.call("Page.reload", json!({})).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.wait_for("document.readyState === 'complete'").await;
    }

    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}
