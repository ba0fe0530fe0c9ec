//! Reading a SQLite database whole, for `spool migrate-to`: every column a
//! session carries to another database, and the webhook events still owed.

use sqlx::SqlitePool;

/// A session as it moves to another database (its key there will differ).
#[derive(Debug, Clone)]
pub struct ExportedSession {
    pub seq: i64,
    pub public_id: String,
    pub token_hash: Vec<u8>,
    pub state: String,
    pub mime_type: String,
    pub metadata: String,
    pub expected_chunks: Option<i64>,
    pub committed: i64,
    pub chunks_received: i64,
    pub bytes_received: i64,
    pub max_index: Option<i64>,
    pub connections: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_seen_at: i64,
    pub finalize_attempts: i64,
    pub failure_reason: Option<String>,
    pub recording_bytes: Option<i64>,
    pub recording_sha256: Option<String>,
    pub recording_source_bytes: Option<i64>,
    pub recording_source_sha256: Option<String>,
    pub recording_duration_ms: Option<i64>,
    pub recording_complete: Option<bool>,
    pub recording_missing: Option<String>,
    pub recording_rewritten: Option<bool>,
    pub last_client_addr: Option<String>,
    pub last_user_agent: Option<String>,
    pub ready_at: Option<i64>,
    pub recording_expired_at: Option<i64>,
}

/// Sessions after key `after`, in key order, deleted ones left out (they
/// are being removed and have nothing to keep).
pub async fn sessions_after(
    pool: &SqlitePool,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<ExportedSession>> {
    sqlx::query_as!(
        ExportedSession,
        r#"SELECT seq AS "seq!", public_id, token_hash, state, mime_type, metadata,
                  expected_chunks, committed, chunks_received, bytes_received, max_index,
                  connections, created_at, updated_at, last_seen_at, finalize_attempts,
                  failure_reason, recording_bytes, recording_sha256, recording_source_bytes,
                  recording_source_sha256, recording_duration_ms,
                  recording_complete AS "recording_complete: bool", recording_missing,
                  recording_rewritten AS "recording_rewritten: bool", last_client_addr,
                  last_user_agent, ready_at, recording_expired_at
           FROM sessions WHERE seq > ?1 AND state != 'deleted' ORDER BY seq LIMIT ?2"#,
        after,
        limit
    )
    .fetch_all(pool)
    .await
}

/// A webhook event not yet delivered.
#[derive(Debug, Clone)]
pub struct ExportedEvent {
    pub id: String,
    pub kind: String,
    pub created_at: i64,
    pub body: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

pub async fn undelivered_events(pool: &SqlitePool) -> sqlx::Result<Vec<ExportedEvent>> {
    sqlx::query_as!(
        ExportedEvent,
        r#"SELECT id AS "id!", type AS kind, created_at, body, attempts, next_attempt_at, last_error
           FROM webhook_events WHERE delivered_at IS NULL ORDER BY created_at"#
    )
    .fetch_all(pool)
    .await
}
