//! A protocol v1 client: create a session over HTTP, then speak the
//! WebSocket protocol (chunk frames, acks, finish, ping). The load tool
//! (`spool load`), the benchmarks and the tests drive the server through it,
//! so the protocol is spoken by one piece of Rust code besides the browser's.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::domain::ChunkFrame;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("creating a session: {status} {body}")]
    Refused { status: u16, body: String },
    #[error("WebSocket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server said something unexpected: {0}")]
    Unexpected(String),
    #[error("the socket closed ({code}) before {what}")]
    Closed { code: u16, what: &'static str },
    /// The server refused the connection with an `error` message.
    #[error("refused: {code}")]
    Rejected {
        code: String,
        retryable: bool,
        retry_after: Option<Duration>,
    },
}

/// A Spool server, by its base URL (`http://host:port`).
#[derive(Clone)]
pub struct Server {
    base: String,
    http: reqwest::Client,
    api_key: Option<String>,
}

/// A session as `POST /v1/sessions` answers it.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    pub id: String,
    pub token: String,
    pub ws_url: String,
    pub max_chunk_bytes: usize,
}

impl Server {
    /// `api_key` is sent when creating sessions (a server with `--api-key`
    /// requires it; with it, creation is not rate limited).
    pub fn new(base: &str, api_key: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .expect("a reqwest client builds");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            api_key,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn create_session(&self, mime_type: &str) -> Result<Session, ClientError> {
        let mut request = self
            .http
            .post(self.url("/v1/sessions"))
            .json(&json!({ "mime_type": mime_type }));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = response.status();
        if status != reqwest::StatusCode::CREATED {
            let body = response.text().await.unwrap_or_default();
            return Err(ClientError::Refused {
                status: status.as_u16(),
                body,
            });
        }
        Ok(response.json().await?)
    }

    /// `GET /v1/sessions/{id}` with the session's token.
    pub async fn status(&self, session: &Session) -> Result<Value, ClientError> {
        let response = self
            .http
            .get(self.url(&format!("/v1/sessions/{}", session.id)))
            .bearer_auth(&session.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }
}

/// What the server said on the socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Every index below `committed` is durable.
    Ack {
        committed: i64,
    },
    Finishing {
        committed: i64,
        chunks: i64,
    },
    Finalized {
        recording: Value,
    },
    Pong,
    /// Sent before the server closes the socket.
    Error {
        code: String,
        message: String,
        retryable: bool,
        /// An overloaded server's hint: come back after this long.
        retry_after: Option<Duration>,
    },
    /// The socket closed (1006 when it ended without a close frame).
    Closed {
        code: u16,
        reason: String,
    },
}

/// One open WebSocket of a session, after its `ready`.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// `committed` as the `ready` message said.
    pub ready_committed: i64,
    pub max_chunk_bytes: usize,
    /// The server's close frame, once it came.
    closed: Option<CloseFrame>,
}

impl Connection {
    /// Connects and reads `ready`.
    pub async fn open(session: &Session) -> Result<Self, ClientError> {
        let url = format!("{}?token={}", session.ws_url, session.token);
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let mut connection = Self {
            ws,
            ready_committed: 0,
            max_chunk_bytes: session.max_chunk_bytes,
            closed: None,
        };
        match connection.next_message().await? {
            Some(ready) if ready["type"] == "ready" => {
                connection.ready_committed = ready["committed"].as_i64().unwrap_or(0);
                if let Some(max) = ready["max_chunk_bytes"].as_u64() {
                    connection.max_chunk_bytes = max as usize;
                }
                Ok(connection)
            }
            Some(error) if error["type"] == "error" => Err(ClientError::Rejected {
                code: error["code"].as_str().unwrap_or_default().to_owned(),
                retryable: error["retryable"].as_bool().unwrap_or(false),
                retry_after: error["retry_after_ms"].as_u64().map(Duration::from_millis),
            }),
            Some(other) => Err(ClientError::Unexpected(other.to_string())),
            None => Err(ClientError::Closed {
                code: connection.close_code(),
                what: "ready",
            }),
        }
    }

    /// Sends a chunk; chunk 0 is always flagged as a new stream.
    pub async fn send_chunk(
        &mut self,
        index: u32,
        new_stream: bool,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let frame = ChunkFrame::encode(index, new_stream || index == 0, payload);
        self.ws.send(Message::Binary(frame.into())).await?;
        Ok(())
    }

    pub async fn finish(&mut self, chunks: u32) -> Result<(), ClientError> {
        self.send_json(json!({ "type": "finish", "chunks": chunks }))
            .await
    }

    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.send_json(json!({ "type": "ping" })).await
    }

    async fn send_json(&mut self, value: Value) -> Result<(), ClientError> {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await?;
        Ok(())
    }

    /// The next thing the server says. After `Closed`, there is nothing more.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        let Some(message) = self.next_message().await? else {
            return Ok(Event::Closed {
                code: self.close_code(),
                reason: self.close_reason(),
            });
        };
        let number = |key: &str| message[key].as_i64().unwrap_or(0);
        Ok(match message["type"].as_str() {
            Some("ack") => Event::Ack {
                committed: number("committed"),
            },
            Some("finishing") => Event::Finishing {
                committed: number("committed"),
                chunks: number("chunks"),
            },
            Some("finalized") => Event::Finalized {
                recording: message["recording"].clone(),
            },
            Some("pong") => Event::Pong,
            Some("error") => Event::Error {
                code: message["code"].as_str().unwrap_or_default().to_owned(),
                message: message["message"].as_str().unwrap_or_default().to_owned(),
                retryable: message["retryable"].as_bool().unwrap_or(false),
                retry_after: message["retry_after_ms"]
                    .as_u64()
                    .map(Duration::from_millis),
            },
            _ => return Err(ClientError::Unexpected(message.to_string())),
        })
    }

    /// The close code the server sent; 1006 if the socket ended without one.
    fn close_code(&self) -> u16 {
        self.closed.as_ref().map_or(1006, |frame| frame.code.into())
    }

    fn close_reason(&self) -> String {
        self.closed
            .as_ref()
            .map(|frame| frame.reason.to_string())
            .unwrap_or_default()
    }

    /// Closes the socket politely (1000).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The next text message as JSON, or `None` once the socket closed.
    async fn next_message(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {
                    return Ok(None);
                }
                Some(Err(e)) if self.closed.is_some() => {
                    tracing::trace!(error = %e, "after close");
                    return Ok(None);
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text)
                        .map(Some)
                        .map_err(|_| ClientError::Unexpected(text.to_string()));
                }
                Some(Ok(Message::Close(frame))) => {
                    // Known now: waiting for the stream's end would leave the
                    // caller free to send on a closing socket meanwhile.
                    self.closed = Some(frame.unwrap_or(CloseFrame {
                        code: 1005.into(),
                        reason: "".into(),
                    }));
                    return Ok(None);
                }
                Some(Ok(_)) => {} // pings are answered by tungstenite
            }
        }
    }
}
