//! Text (JSON) messages a client may send on the WebSocket.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The recording has `chunks` chunks in all (indexes `0..chunks`).
    Finish {
        chunks: u64,
    },
    Ping,
}

/// A declared chunk count: at least one chunk, and indexes fit in a u32.
pub fn finish_count(chunks: u64) -> Result<i64, String> {
    if (1..=1u64 << 32).contains(&chunks) {
        Ok(chunks as i64)
    } else {
        Err(format!(
            "chunks must be between 1 and 4294967296, not {chunks}"
        ))
    }
}

/// Largest control message accepted; anything longer is malformed.
const MAX_LEN: usize = 4096;

impl ClientMessage {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_LEN {
            return Err(format!("control message is over {MAX_LEN} bytes"));
        }
        serde_json::from_str(text).map_err(|e| format!("bad control message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_finish_and_ping() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"finish","chunks":3}"#),
            Ok(ClientMessage::Finish { chunks: 3 })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "{",
            r#"{"type":"finish"}"#,
            r#"{"type":"finish","chunks":-1}"#,
            r#"{"type":"dance"}"#,
            "[]",
        ] {
            assert!(ClientMessage::parse(bad).is_err(), "{bad:?}");
        }
    }
}
