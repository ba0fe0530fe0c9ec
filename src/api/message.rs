//! What the server says on a WebSocket (text messages); the client's side is
//! [`crate::domain::ClientMessage`].

use serde::Serialize;

use super::view::RecordingView;
use crate::domain::{SessionId, SessionState};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// The first message: every index below `committed` is durable.
    Ready {
        session: &'a SessionId,
        state: SessionState,
        committed: i64,
        max_chunk_bytes: usize,
    },
    /// Cumulative: every index below `committed` is durable.
    Ack {
        committed: i64,
    },
    Finishing {
        committed: i64,
        chunks: i64,
    },
    Finalized {
        recording: &'a RecordingView,
    },
    Pong,
    /// Sent before the server closes the socket.
    Error {
        code: &'a str,
        message: &'a str,
        retryable: bool,
        /// When to come back, for an overloaded server's 4429.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerMessage<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn messages_are_tagged_by_type() {
        let json = |m: ServerMessage| serde_json::from_str::<Value>(&m.to_json()).unwrap();
        assert_eq!(
            json(ServerMessage::Ack { committed: 3 }),
            json!({"type": "ack", "committed": 3})
        );
        assert_eq!(json(ServerMessage::Pong), json!({"type": "pong"}));
        let id = SessionId::generate();
        assert_eq!(
            json(ServerMessage::Ready {
                session: &id,
                state: SessionState::Recording,
                committed: 0,
                max_chunk_bytes: 10
            }),
            json!({"type": "ready", "session": id.as_str(), "state": "recording", "committed": 0, "max_chunk_bytes": 10})
        );
    }
}
