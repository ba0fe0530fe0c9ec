//! The session JSON of the protocol, built from a stored row.

use serde::Serialize;
use serde_json::Value;

use crate::api::BaseUrl;
use crate::db::sessions::SessionRow;
use crate::domain::{SessionId, SessionState};

/// A session, as `GET /v1/sessions/{id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    #[schema(value_type = String, example = "3f1c0d2e4b5a69788796a5b4c3d2e1f0")]
    pub id: SessionId,
    pub state: SessionState,
    pub mime_type: String,
    pub created_at: String,
    pub updated_at: String,
    pub committed: i64,
    pub chunks_received: i64,
    pub bytes_received: i64,
    pub expected_chunks: Option<i64>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub recording: Option<RecordingView>,
    /// Why the session failed; only present when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// The finished recording; null until the session is ready.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordingView {
    pub url: String,
    pub bytes: i64,
    pub sha256: String,
    pub duration_ms: Option<i64>,
    pub mime_type: String,
    pub complete: bool,
    /// Inclusive `[from, to]` index ranges left out.
    #[schema(value_type = Vec<Vec<i64>>)]
    pub missing: Value,
    pub source_bytes: i64,
    pub source_sha256: String,
    /// When `--keep-recordings` deleted the file (downloads then answer 410).
    pub expired_at: Option<String>,
    /// WebM rewritten with Duration and Cues; false: served as the chunks joined.
    pub rewritten: bool,
}

impl SessionView {
    pub fn new(row: &SessionRow, base: &BaseUrl) -> Self {
        Self {
            id: row.public_id.clone(),
            state: row.state,
            mime_type: row.mime_type.clone(),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
            committed: row.committed,
            chunks_received: row.chunks_received,
            bytes_received: row.bytes_received,
            expected_chunks: row.expected_chunks,
            metadata: serde_json::from_str(&row.metadata).unwrap_or(Value::Null),
            recording: RecordingView::new(row, base),
            failure_reason: row.failure_reason.clone(),
        }
    }
}

impl RecordingView {
    /// `None` until the session is ready.
    pub fn new(row: &SessionRow, base: &BaseUrl) -> Option<Self> {
        if row.state != SessionState::Ready {
            return None;
        }
        Some(Self {
            url: format!("{}/v1/sessions/{}/recording", base.http(), row.public_id),
            bytes: row.recording_bytes?,
            sha256: row.recording_sha256.clone()?,
            duration_ms: row.recording_duration_ms,
            mime_type: row.mime_type.clone(),
            complete: row.recording_complete?,
            missing: row
                .recording_missing
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or(Value::Array(vec![])),
            source_bytes: row.recording_source_bytes?,
            source_sha256: row.recording_source_sha256.clone()?,
            expired_at: row.recording_expired_at.map(rfc3339),
            rewritten: row.recording_rewritten.unwrap_or(false),
        })
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC, e.g. `2026-11-23T22:27:48.123Z`.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A session as the admin API lists it: the session JSON plus liveness.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminSessionView {
    #[serde(flatten)]
    pub session: SessionView,
    pub last_seen_at: String,
    /// WebSocket connections the session has had.
    pub connections: i64,
}

impl AdminSessionView {
    pub fn new(row: &SessionRow, base: &BaseUrl) -> Self {
        Self {
            session: SessionView::new(row, base),
            last_seen_at: rfc3339(row.last_seen_at),
            connections: row.connections,
        }
    }
}

/// One session in full, for the admin detail view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminSessionDetail {
    #[serde(flatten)]
    pub summary: AdminSessionView,
    /// Inclusive `[from, to]` index ranges that never arrived, below the
    /// highest index received (or declared by finish).
    pub missing: Vec<[i64; 2]>,
    /// The last connection's client; null if it never connected.
    pub client: Option<ClientView>,
}

/// The last connection's client.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientView {
    pub addr: String,
    pub user_agent: Option<String>,
}

impl AdminSessionDetail {
    /// `stored` are the indexes still in the chunk store, in order (none
    /// once a recording is ready: then its own `missing` is the answer).
    pub fn new(row: &SessionRow, base: &BaseUrl, stored: &[i64]) -> Self {
        let missing = match (&row.state, row.recording_missing.as_deref()) {
            (SessionState::Ready, Some(json)) => serde_json::from_str(json).unwrap_or_default(),
            _ => {
                let last = row.max_index.max(row.expected_chunks.map(|n| n - 1));
                gaps(stored, last)
            }
        };
        Self {
            summary: AdminSessionView::new(row, base),
            missing,
            client: row.last_client_addr.clone().map(|addr| ClientView {
                addr,
                user_agent: row.last_user_agent.clone(),
            }),
        }
    }
}

/// The inclusive ranges of `0..=last` absent from `stored` (sorted, unique).
pub fn gaps(stored: &[i64], last: Option<i64>) -> Vec<[i64; 2]> {
    let Some(last) = last else {
        return Vec::new();
    };
    let mut missing = Vec::new();
    let mut next = 0;
    for &index in stored.iter().filter(|&&i| i <= last) {
        if index > next {
            missing.push([next, index - 1]);
        }
        next = index + 1;
    }
    if next <= last {
        missing.push([next, last]);
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_inclusive_ranges_below_the_last_index() {
        assert_eq!(gaps(&[0, 1, 2], Some(2)), Vec::<[i64; 2]>::new());
        assert_eq!(gaps(&[1, 2, 5], Some(7)), vec![[0, 0], [3, 4], [6, 7]]);
        assert_eq!(gaps(&[], Some(3)), vec![[0, 3]]);
        assert_eq!(gaps(&[], None), Vec::<[i64; 2]>::new());
    }
}
