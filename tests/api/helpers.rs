//! Starting the real server on port 0 over a fresh data directory, and typed
//! clients for its HTTP API and WebSocket protocol.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use spool::domain::ChunkFrame;
use spool::storage::{LocalRecordings, Recordings, S3Location, S3Recordings};
use spool::{App, Config};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestApp {
    pub base: String,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_in(dir.path().to_path_buf(), configure).await;
    app._dir = Some(dir);
    app
}

/// Where a test server over `data_dir` keeps its recordings: with
/// `SPOOL_TEST_STORAGE=s3://bucket` (and the `AWS_*` variables) set, the
/// whole suite runs against object storage, each data directory under its
/// own prefix so servers never see each other's recordings; unset, the
/// default `<data-dir>/recordings`.
pub fn test_storage(data_dir: &std::path::Path) -> Option<S3Location> {
    let base = std::env::var("SPOOL_TEST_STORAGE").ok()?;
    let dir = data_dir.file_name().unwrap().to_string_lossy();
    Some(S3Location::parse(&format!("{}/{dir}", base.trim_end_matches('/'))).unwrap())
}

/// The database of a test server over `data_dir`: with
/// `SPOOL_TEST_DATABASE=postgres://…/postgres` set, the whole suite runs
/// against PostgreSQL, each data directory with a database of its own
/// (created here, named after the directory); unset, SQLite in the data
/// directory. Two servers given one data directory share its database.
pub async fn test_database(data_dir: &std::path::Path) -> Option<String> {
    let admin = std::env::var("SPOOL_TEST_DATABASE").ok()?;
    let name = test_database_name(data_dir);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("SPOOL_TEST_DATABASE answers");
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    if exists.is_none() {
        // Two servers starting together over one directory may race here.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await;
    }
    let base = admin.rsplit_once('/').expect("a database URL").0;
    Some(format!("{base}/{name}"))
}

/// `spool_` and the directory's name, lowercased, as a PostgreSQL name.
fn test_database_name(data_dir: &std::path::Path) -> String {
    let dir = data_dir.file_name().unwrap().to_string_lossy();
    let tail: String = dir
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("spool_{tail}")
}

/// Whether the suite runs against PostgreSQL (`SPOOL_TEST_DATABASE`).
pub fn on_postgres() -> bool {
    std::env::var_os("SPOOL_TEST_DATABASE").is_some()
}

/// For tests of SQLite's own files: says why it is skipped under PostgreSQL.
pub fn sqlite_only(why: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped against PostgreSQL: {why}");
        return false;
    }
    true
}

/// The recordings of a test server over `data_dir`, as that server stores them.
pub async fn recordings_of(data_dir: &std::path::Path) -> Recordings {
    match test_storage(data_dir) {
        None => Recordings::Local(
            LocalRecordings::open(data_dir.join("recordings"))
                .await
                .unwrap(),
        ),
        Some(at) => Recordings::S3 {
            objects: S3Recordings::open(at).await.unwrap(),
            scratch: LocalRecordings::open(data_dir.join("scratch"))
                .await
                .unwrap(),
        },
    }
}

/// The stored recording `key` of a test server over `data_dir`, if there is one.
pub async fn stored_recording(data_dir: &std::path::Path, key: &str) -> Option<Vec<u8>> {
    let recordings = recordings_of(data_dir).await;
    let len = recordings.len(key).await.unwrap()?;
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(
        &mut recordings.read_range(key, 0, len).await.unwrap(),
        &mut bytes,
    )
    .await
    .unwrap();
    Some(bytes)
}

/// Starts a server over an existing data directory (which the caller keeps).
pub async fn spawn_in(data_dir: PathBuf, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::with_data_dir(&data_dir);
    config.storage = test_storage(&data_dir);
    config.database_url = test_database(&data_dir)
        .await
        .map(|url| spool::config::DatabaseUrl::parse(&url).unwrap());
    // Tests not about load must not hang on this machine's commit latency.
    config.max_writer_lag = Duration::ZERO;
    configure(&mut config);
    let app = App::build(config).await.expect("the app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        data_dir,
        http: reqwest::Client::new(),
        stop: Some(stop),
        server: Some(server),
        _dir: None,
    }
}

#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub token: String,
    pub ws_url: String,
    pub max_chunk_bytes: u64,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("spool.db")
    }

    /// Graceful stop, as on SIGTERM; returns what `run_until_stopped` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().expect("running").send(());
        self.server
            .take()
            .expect("running")
            .await
            .expect("server task")
    }

    /// Graceful stop that keeps the data directory for another start; hold
    /// the returned guard for as long as the directory is needed.
    pub async fn stop_keeping_dir(mut self) -> Option<tempfile::TempDir> {
        let dir = self._dir.take();
        self.stop().await.expect("a clean stop");
        dir
    }

    pub async fn create_session(&self) -> Created {
        self.create_session_with(json!({"mime_type": "audio/webm;codecs=opus"}))
            .await
    }

    pub async fn create_session_with(&self, body: Value) -> Created {
        let response = self
            .http
            .post(self.url("/v1/sessions"))
            .json(&body)
            .send()
            .await
            .expect("POST /v1/sessions");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        let body: Value = response.json().await.unwrap();
        Created {
            id: body["id"].as_str().unwrap().into(),
            token: body["token"].as_str().unwrap().into(),
            ws_url: body["ws_url"].as_str().unwrap().into(),
            max_chunk_bytes: body["max_chunk_bytes"].as_u64().unwrap(),
        }
    }

    /// A session of `mime_type` with `chunks` uploaded and finished; returns
    /// it and its status once finalized.
    pub async fn record(&self, mime_type: &str, chunks: &[Vec<u8>]) -> (Created, Value) {
        let flagged: Vec<(Vec<u8>, bool)> = chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| (chunk.clone(), i == 0))
            .collect();
        self.record_flagged(mime_type, &flagged).await
    }

    /// As [`Self::record`], with each chunk's new-stream flag given.
    pub async fn record_flagged(
        &self,
        mime_type: &str,
        chunks: &[(Vec<u8>, bool)],
    ) -> (Created, Value) {
        let session = self
            .create_session_with(json!({ "mime_type": mime_type }))
            .await;
        let (mut ws, _) = Ws::ready(self, &session).await;
        for (i, (chunk, new_stream)) in chunks.iter().enumerate() {
            ws.send_binary(ChunkFrame::encode(i as u32, *new_stream, chunk))
                .await;
        }
        ws.send_json(json!({"type": "finish", "chunks": chunks.len()}))
            .await;
        // Closing with frames still unread would reset the connection and
        // discard them on the server's side too.
        let all = chunks.len() as i64;
        loop {
            let message = ws.recv_json().await;
            if message["type"] == "finalized" || message["committed"].as_i64() >= Some(all) {
                break;
            }
        }
        drop(ws);
        let status = self.wait_finalized(&session).await;
        (session, status)
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    pub async fn get_session(&self, session: &Created) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/v1/sessions/{}", session.id)))
            .bearer_auth(&session.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Polls the session until it is `ready` (or `failed`), for at most [`WAIT`].
    pub async fn wait_finalized(&self, session: &Created) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let body = self.get_session(session).await;
            if body["state"] == "ready" || body["state"] == "failed" {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "session never finalized: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn download(&self, session: &Created) -> Vec<u8> {
        let response = self
            .http
            .get(self.url(&format!("/v1/sessions/{}/recording", session.id)))
            .bearer_auth(&session.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap().to_vec()
    }

    pub async fn connect(&self, session: &Created) -> Ws {
        Ws::connect(&format!("{}?token={}", session.ws_url, session.token)).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// A protocol client over a real socket.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How the server ended a connection.
#[derive(Debug)]
pub struct Closed {
    pub code: u16,
    /// The `error` message sent before the close, if any.
    pub error: Option<Value>,
}

impl Ws {
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = connect_async(url).await.expect("WebSocket upgrade");
        Self { stream }
    }

    /// Connects and reads the `ready` message.
    pub async fn ready(app: &TestApp, session: &Created) -> (Self, Value) {
        let mut ws = app.connect(session).await;
        let ready = ws.recv_json().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        (ws, ready)
    }

    /// Writes bytes straight to the TCP stream, below the WebSocket codec.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        match self.stream.get_mut() {
            MaybeTlsStream::Plain(tcp) => tcp.write_all(bytes).await.expect("raw write"),
            _ => panic!("tests use plain TCP"),
        }
    }

    /// Drops the connection without a closing handshake, as a lost network does.
    pub fn reset(self) {
        drop(self.stream);
    }

    pub async fn send_chunk(&mut self, index: u32, payload: &[u8]) {
        self.send_binary(ChunkFrame::encode(index, index == 0, payload))
            .await;
    }

    /// As `send_chunk`; false once the server has closed the socket.
    pub async fn try_send_chunk(&mut self, index: u32, payload: &[u8]) -> bool {
        let frame = ChunkFrame::encode(index, index == 0, payload);
        self.stream
            .send(Message::Binary(frame.into()))
            .await
            .is_ok()
    }

    /// Reads acks until `committed >= target` or the server closes the
    /// socket: the highest ack seen, and the close if it came first.
    pub async fn acks_until(&mut self, target: i64) -> (i64, Option<Closed>) {
        let mut acked = 0;
        let mut error = None;
        while acked < target {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("an ack or a close in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    match value["type"].as_str() {
                        Some("ack") => acked = acked.max(value["committed"].as_i64().unwrap()),
                        Some("error") => error = Some(value),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    return (acked, Some(Closed { code, error }));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket failed before a close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
        (acked, None)
    }

    /// Sends chunks `from..` of `chunks`, in order.
    pub async fn send_all(&mut self, chunks: &[Vec<u8>], from: usize) {
        for (i, chunk) in chunks.iter().enumerate().skip(from) {
            self.send_chunk(i as u32, chunk).await;
        }
    }

    /// Declares `chunks` and waits for the `finalized` message; returns it.
    pub async fn finish_and_wait_finalized(&mut self, chunks: usize) -> Value {
        self.send_json(json!({"type": "finish", "chunks": chunks}))
            .await;
        loop {
            let message = self.recv_json().await;
            if message["type"] == "finalized" {
                return message;
            }
        }
    }

    pub async fn send_binary(&mut self, frame: Vec<u8>) {
        self.stream
            .send(Message::Binary(frame.into()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next text message as JSON; panics on close or after [`WAIT`].
    pub async fn recv_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a message in time");
            match message {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("JSON"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Reads acks until `committed >= target`, returning the last one seen.
    pub async fn wait_ack(&mut self, target: i64) -> i64 {
        loop {
            let message = self.recv_json().await;
            assert_eq!(message["type"], "ack", "{message}");
            let committed = message["committed"].as_i64().unwrap();
            if committed >= target {
                return committed;
            }
        }
    }

    /// Reads until the server closes; returns the close code and the `error` before it.
    pub async fn closed(&mut self) -> Closed {
        let (_, closed) = self.acks_until(i64::MAX).await;
        closed.expect("acks never reach i64::MAX: only a close ends the wait")
    }
}

/// Deterministic pseudo-random chunk payloads of varied sizes.
pub fn payloads(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    (0..count)
        .map(|_| (0..(100 + next() % 4000)).map(|_| next() as u8).collect())
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The real binary, started as a child process on port 0.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub base: String,
    /// Every line the server has logged so far.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    pub async fn start(data_dir: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_node(data_dir, data_dir, extra).await
    }

    /// A node over its own `data_dir` that shares the database and
    /// recordings of the servers over `shared`.
    pub async fn start_node(
        data_dir: &std::path::Path,
        shared: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        let mut backends = Vec::new();
        if let Some(at) = test_storage(shared) {
            backends.extend(["--storage".to_owned(), at.to_string()]);
        }
        if let Some(url) = test_database(shared).await {
            backends.extend(["--database-url".to_owned(), url]);
        }
        let mut args: Vec<&str> = backends.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        Self::start_plain(data_dir, &args).await
    }

    /// The single-node default (SQLite, local recordings) whatever the
    /// suite's backends, with `args`.
    pub async fn start_plain(data_dir: &std::path::Path, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_spool"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // As in `spawn_in`: no load shedding that a slow commit could set off.
            .env("SPOOL_MAX_WRITER_LAG", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the spool binary");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let base = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                logs.lock().unwrap().push(line.clone());
                if let Some(at) = line.find("address=http://") {
                    let address = line[at + "address=".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap();
                    return address.to_owned();
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server starts listening in time");
        // Keep draining its output so it never blocks on a full pipe.
        let collected = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        Self { child, base, logs }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Creates a session over HTTP; returns `(id, token)`.
    pub async fn create_session(&self) -> (String, String) {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/v1/sessions", self.base))
            .json(&json!({"mime_type": "audio/ogg;codecs=opus"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn connect(&self, id: &str, token: &str) -> Ws {
        Ws::connect(&format!(
            "{}/v1/sessions/{id}/ws?token={token}",
            self.base.replace("http://", "ws://")
        ))
        .await
    }

    /// Polls the session until it is `ready`, for at most [`WAIT`].
    pub async fn wait_ready(&self, id: &str, token: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = get_json(&format!("{}/v1/sessions/{id}", self.base), token).await;
            if status["state"] == "ready" {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never finalized: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reap");
    }
}

/// GET `url` with a bearer token, expecting 200; the body's bytes.
pub async fn get_bytes(url: &str, token: &str) -> Vec<u8> {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.bytes().await.unwrap().to_vec()
}

/// GET `url` with a bearer token, expecting 200; the body as JSON.
pub async fn get_json(url: &str, token: &str) -> Value {
    serde_json::from_slice(&get_bytes(url, token).await).expect("a JSON body")
}

/// Reads (and, to stage a crash's leftovers, writes) the database of a
/// running or stopped server directly, to check what is stored rather than
/// what the API says: SQLite or PostgreSQL, as the suite runs.
pub enum Inspect {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Runs the same query on either database: `?` placeholders become `$n`.
macro_rules! inspect_query {
    ($inspect:expr, $run:ident, $sql:expr $(, $bind:expr)*) => {
        match $inspect {
            Inspect::Sqlite(pool) => sqlx::$run(sqlx::AssertSqlSafe($sql.to_owned()))
                $(.bind($bind))*.fetch_optional(pool).await.unwrap(),
            Inspect::Postgres(pool) => sqlx::$run(sqlx::AssertSqlSafe(numbered($sql)))
                $(.bind($bind))*.fetch_optional(pool).await.unwrap(),
        }
    };
}

/// `?` placeholders as PostgreSQL's `$1`, `$2`, ….
fn numbered(sql: &str) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

impl Inspect {
    /// The database of the server whose SQLite file would be `db` (its
    /// data directory's `spool.db`).
    pub async fn open(db: &std::path::Path) -> Self {
        let data_dir = db.parent().expect("a file in the data directory");
        if let Some(url) = test_database(data_dir).await {
            return Self::Postgres(
                sqlx::PgPool::connect(&url)
                    .await
                    .expect("open the database"),
            );
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .busy_timeout(Duration::from_secs(10));
        Self::Sqlite(
            sqlx::SqlitePool::connect_with(options)
                .await
                .expect("open the database"),
        )
    }

    /// The session's key, whatever its state; `None` once its row is gone.
    pub async fn seq(&self, public_id: &str) -> Option<i64> {
        inspect_query!(
            self,
            query_scalar,
            "SELECT seq FROM sessions WHERE public_id = ?",
            public_id
        )
    }

    /// The session's state as stored (`deleted` included); `None` once its row is gone.
    pub async fn state(&self, public_id: &str) -> Option<String> {
        inspect_query!(
            self,
            query_scalar,
            "SELECT state FROM sessions WHERE public_id = ?",
            public_id
        )
    }

    /// Whether a finalize step holds a claim on the session.
    pub async fn finalize_claimed(&self, public_id: &str) -> bool {
        inspect_query!(
            self,
            query_scalar,
            "SELECT finalize_claimed_at IS NOT NULL FROM sessions WHERE public_id = ?",
            public_id
        )
        .unwrap_or(false)
    }

    pub async fn chunks_of(&self, seq: i64) -> i64 {
        inspect_query!(
            self,
            query_scalar,
            "SELECT COUNT(*) FROM chunks WHERE session = ?",
            seq
        )
        .unwrap_or(0)
    }

    /// The session's chunks below `end`.
    pub async fn chunks_below(&self, seq: i64, end: i64) -> i64 {
        inspect_query!(
            self,
            query_scalar,
            "SELECT COUNT(*) FROM chunks WHERE session = ? AND idx < ?",
            seq,
            end
        )
        .unwrap_or(0)
    }

    pub async fn all_chunks(&self) -> i64 {
        inspect_query!(self, query_scalar, "SELECT COUNT(*) FROM chunks").unwrap_or(0)
    }

    /// Marks the session deleted as a delete cut short by a crash leaves
    /// it (nothing removed yet); returns its key.
    pub async fn mark_deleted(&self, public_id: &str) -> i64 {
        inspect_query!(
            self,
            query_scalar,
            "UPDATE sessions SET state = 'deleted' WHERE public_id = ? RETURNING seq",
            public_id
        )
        .expect("the session exists")
    }

    /// Writes a stray chunk 0 for session `seq` straight into the database,
    /// as a process that died before deleting it would have left it.
    pub async fn plant_leftover_chunk(&self, seq: i64) {
        match self {
            Self::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO chunks (block, session, idx, crc, flags, payload) VALUES (0, ?, 0, 0, 1, x'00')",
                )
                .bind(seq)
                .execute(pool)
                .await
                .unwrap();
                sqlx::query("UPDATE sessions SET first_block = 0, last_block = MAX(COALESCE(last_block, 0), 0) WHERE seq = ?")
                    .bind(seq)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Self::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO chunks (session, idx, crc, flags, payload) VALUES ($1, 0, 0, 1, '\\x00')
                     ON CONFLICT DO NOTHING",
                )
                .bind(seq)
                .execute(pool)
                .await
                .unwrap();
            }
        }
    }

    pub async fn close(self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// Polls `check` until it holds, for at most [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
