//! Why a socket closes: the `error` message and close code of each reason.

use crate::api::ServerMessage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// After `finalized`.
    Finished,
    /// The client closed the socket: nothing to tell it.
    ClientGone,
    /// The connection broke without a closing handshake (a reset, a lost
    /// network): nothing can be told, and nothing was malformed.
    Dropped,
    GoingAway,
    Malformed(String),
    Unauthorized,
    UnknownSession,
    Idle,
    Conflict(u32),
    NotAccepting(String),
    TooLarge(String),
    TooFast(String),
    Superseded,
    /// `--max-connections` sockets are open already.
    Busy(u32),
    /// The writer is behind: come back after `retry_after` (see `overload`).
    Overloaded {
        lag: std::time::Duration,
        retry_after: std::time::Duration,
    },
    /// A message began but did not arrive whole in time.
    SlowMessage,
    Internal,
}

impl CloseReason {
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Finished | Self::ClientGone | Self::Dropped => 1000,
            Self::GoingAway => 1001,
            Self::Internal => 1011,
            Self::Malformed(_) => 4400,
            Self::Unauthorized => 4401,
            Self::UnknownSession => 4404,
            Self::Idle | Self::SlowMessage => 4408,
            Self::Conflict(_) => 4409,
            Self::NotAccepting(_) => 4410,
            Self::TooLarge(_) => 4413,
            Self::TooFast(_) | Self::Busy(_) | Self::Overloaded { .. } => 4429,
            Self::Superseded => 4499,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::ClientGone => "client_gone",
            Self::Dropped => "dropped",
            Self::GoingAway => "going_away",
            Self::Internal => "internal",
            Self::Malformed(_) => "malformed",
            Self::Unauthorized => "unauthorized",
            Self::UnknownSession => "unknown_session",
            Self::Idle => "idle_timeout",
            Self::SlowMessage => "message_timeout",
            Self::Busy(_) => "server_busy",
            Self::Overloaded { .. } => "server_overloaded",
            Self::Conflict(_) => "chunk_conflict",
            Self::NotAccepting(_) => "session_closed",
            Self::TooLarge(_) => "chunk_too_large",
            Self::TooFast(_) => "too_fast",
            Self::Superseded => "superseded",
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::GoingAway
                | Self::Idle
                | Self::SlowMessage
                | Self::TooFast(_)
                | Self::Busy(_)
                | Self::Overloaded { .. }
                | Self::Internal
        )
    }

    pub fn message(&self) -> String {
        match self {
            Self::Finished => "the recording is finalized".into(),
            Self::ClientGone => "the client closed the connection".into(),
            Self::Dropped => "the connection dropped without a closing handshake".into(),
            Self::GoingAway => "the server is shutting down; reconnect".into(),
            Self::Internal => "the server failed to store data; reconnect and resend".into(),
            Self::Unauthorized => "missing or wrong token".into(),
            Self::UnknownSession => "no such session".into(),
            Self::Idle => "nothing received for too long".into(),
            Self::SlowMessage => format!(
                "a message took over {} s to arrive whole",
                super::slow_message::PARTIAL_MESSAGE_LIMIT.as_secs()
            ),
            Self::Busy(limit) => {
                format!("the server has {limit} connections open, its limit; retry later")
            }
            Self::Overloaded { lag, retry_after } => format!(
                "the server is {} ms behind storing chunks; retry in {} s",
                lag.as_millis(),
                retry_after.as_secs()
            ),
            Self::Conflict(index) => format!("chunk {index} is already stored with other bytes"),
            Self::Superseded => "a newer connection for this session took over".into(),
            Self::Malformed(m) | Self::NotAccepting(m) | Self::TooLarge(m) | Self::TooFast(m) => {
                m.clone()
            }
        }
    }

    /// The `error` message sent before the close (none before a normal close).
    pub fn error_message(&self) -> Option<String> {
        (!matches!(self, Self::Finished | Self::ClientGone | Self::Dropped)).then(|| {
            ServerMessage::Error {
                code: self.code(),
                message: &self.message(),
                retryable: self.retryable(),
                retry_after_ms: match self {
                    Self::Overloaded { retry_after, .. } => Some(retry_after.as_millis() as u64),
                    _ => None,
                },
            }
            .to_json()
        })
    }

    /// The code logged: 1006 (abnormal closure) for a dropped connection,
    /// which never sees a close frame; the close code otherwise.
    pub fn log_code(&self) -> u16 {
        match self {
            Self::Dropped => 1006,
            other => other.close_code(),
        }
    }

    /// Close frame reasons are limited to 123 bytes.
    pub fn close_text(&self) -> String {
        let mut text = self.message();
        if text.len() > 120 {
            let mut cut = 120;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_messages_carry_code_and_retryable() {
        let msg: serde_json::Value = serde_json::from_str(
            &CloseReason::TooFast("slow down".into())
                .error_message()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            msg,
            json!({"type": "error", "code": "too_fast", "message": "slow down", "retryable": true})
        );
        let overloaded = CloseReason::Overloaded {
            lag: std::time::Duration::from_millis(300),
            retry_after: std::time::Duration::from_millis(2_400),
        };
        let msg: serde_json::Value =
            serde_json::from_str(&overloaded.error_message().unwrap()).unwrap();
        assert_eq!(msg["code"], "server_overloaded");
        assert_eq!(msg["retry_after_ms"], 2_400);
        assert_eq!(overloaded.close_code(), 4429);
        assert!(CloseReason::Finished.error_message().is_none());
        assert!(CloseReason::ClientGone.error_message().is_none());
        assert!(!CloseReason::Superseded.retryable());
    }

    #[test]
    fn close_text_fits_a_close_frame() {
        assert!(CloseReason::Malformed("é".repeat(200)).close_text().len() <= 123);
    }
}
