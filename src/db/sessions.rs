//! Queries on the `sessions` table.

use sqlx::{SqliteConnection, SqlitePool};

use crate::domain::{MimeType, SessionId, TokenHash};

/// A session as stored. Recording columns are `None` until it is ready.
#[derive(Debug, Clone)]
pub struct SessionRow {
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
    pub finalize_claimed_at: Option<i64>,
    pub failure_reason: Option<String>,
    pub recording_bytes: Option<i64>,
    pub recording_sha256: Option<String>,
    pub recording_source_bytes: Option<i64>,
    pub recording_source_sha256: Option<String>,
    pub recording_duration_ms: Option<i64>,
    pub recording_complete: Option<bool>,
    pub recording_missing: Option<String>,
}

pub struct NewSession<'a> {
    pub id: &'a SessionId,
    pub token_hash: &'a TokenHash,
    pub mime_type: &'a MimeType,
    pub metadata_json: &'a str,
}

pub async fn insert_session(pool: &SqlitePool, new: NewSession<'_>, now: i64) -> sqlx::Result<()> {
    let (id, hash, mime) = (
        new.id.as_str(),
        new.token_hash.as_bytes(),
        new.mime_type.as_str(),
    );
    sqlx::query!(
        "INSERT INTO sessions (public_id, token_hash, mime_type, metadata, created_at, updated_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5)",
        id,
        hash,
        mime,
        new.metadata_json,
        now,
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn find_session(pool: &SqlitePool, id: &SessionId) -> sqlx::Result<Option<SessionRow>> {
    let id = id.as_str();
    sqlx::query_as!(
        SessionRow,
        r#"SELECT seq AS "seq!", public_id, token_hash, state, mime_type, metadata, expected_chunks,
                  committed, chunks_received, bytes_received, max_index, connections, created_at,
                  updated_at, last_seen_at, finalize_claimed_at, failure_reason, recording_bytes,
                  recording_sha256, recording_source_bytes, recording_source_sha256,
                  recording_duration_ms, recording_complete AS "recording_complete: bool", recording_missing
           FROM sessions WHERE public_id = ?1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// Counts a new WebSocket connection and marks the session as seen.
pub async fn record_connection(
    conn: &mut SqliteConnection,
    seq: i64,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sessions SET connections = connections + 1, last_seen_at = MAX(last_seen_at, ?2) WHERE seq = ?1",
        seq,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the session as seen (a ping or a connection still open), which
/// postpones idle finalization.
pub async fn touch_session(conn: &mut SqliteConnection, seq: i64, now: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sessions SET last_seen_at = MAX(last_seen_at, ?2) WHERE seq = ?1",
        seq,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the session row; its chunks are then garbage for
/// `chunks::delete_all`. Returns false if it was already gone.
pub async fn delete_session(pool: &SqlitePool, seq: i64) -> sqlx::Result<bool> {
    let deleted = sqlx::query!("DELETE FROM sessions WHERE seq = ?1", seq)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() == 1)
}
