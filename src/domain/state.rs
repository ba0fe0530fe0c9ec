//! The session life cycle: recording → finishing → ready | failed.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Accepting chunks.
    Recording,
    /// Finish received (or idle limit passed): waiting for missing chunks or the finalize job.
    Finishing,
    /// The recording is durable and served.
    Ready,
    /// Finalize gave up; `failure_reason` says why.
    Failed,
}

impl SessionState {
    pub fn parse(raw: &str) -> Result<Self, UnknownState> {
        match raw {
            "recording" => Ok(Self::Recording),
            "finishing" => Ok(Self::Finishing),
            "ready" => Ok(Self::Ready),
            "failed" => Ok(Self::Failed),
            _ => Err(UnknownState(raw.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Finishing => "finishing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    /// Can chunks still be added in this state?
    pub fn accepts_chunks(self) -> bool {
        matches!(self, Self::Recording | Self::Finishing)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown session state {0:?}")]
pub struct UnknownState(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_state() {
        for s in [
            SessionState::Recording,
            SessionState::Finishing,
            SessionState::Ready,
            SessionState::Failed,
        ] {
            assert_eq!(SessionState::parse(s.as_str()).unwrap(), s);
        }
        assert!(SessionState::parse("Ready").is_err());
    }
}
