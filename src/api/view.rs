//! The session JSON of the protocol, built from a stored row.

use serde::Serialize;
use serde_json::Value;

use crate::api::BaseUrl;
use crate::db::sessions::SessionRow;
use crate::domain::{SessionId, SessionState};

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: SessionId,
    pub state: SessionState,
    pub mime_type: String,
    pub created_at: String,
    pub updated_at: String,
    pub committed: i64,
    pub chunks_received: i64,
    pub bytes_received: i64,
    pub expected_chunks: Option<i64>,
    pub metadata: Value,
    pub recording: Option<RecordingView>,
    /// Why the session failed; only present when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordingView {
    pub url: String,
    pub bytes: i64,
    pub sha256: String,
    pub duration_ms: Option<i64>,
    pub mime_type: String,
    pub complete: bool,
    pub missing: Value,
    pub source_bytes: i64,
    pub source_sha256: String,
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
        })
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC, e.g. `2026-11-23T22:27:48.123Z`.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
