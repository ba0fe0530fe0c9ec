//! The session life cycle: recording → finishing → ready | failed, and
//! `deleted` from any state until the sweep has removed the session's data.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Accepting chunks.
    Recording,
    /// Finish received (or idle limit passed): waiting for missing chunks or the finalize job.
    Finishing,
    /// The recording is durable and served.
    Ready,
    /// Nothing could be joined (chunk 0 never arrived); `failure_reason` says why.
    Failed,
    /// Deleted: invisible to every API; its chunks, recording and row are
    /// being removed (by the delete request, or by the sweep after a crash).
    Deleted,
}

impl SessionState {
    pub fn parse(raw: &str) -> Result<Self, UnknownState> {
        match raw {
            "recording" => Ok(Self::Recording),
            "finishing" => Ok(Self::Finishing),
            "ready" => Ok(Self::Ready),
            "failed" => Ok(Self::Failed),
            "deleted" => Ok(Self::Deleted),
            _ => Err(UnknownState(raw.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Finishing => "finishing",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
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

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

stored_as_parsed_text!(SessionState);

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
            SessionState::Deleted,
        ] {
            assert_eq!(SessionState::parse(s.as_str()).unwrap(), s);
        }
        assert!(SessionState::parse("Ready").is_err());
    }
}
