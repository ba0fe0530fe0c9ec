//! Queries on the `sessions` table.

use sqlx::{SqliteConnection, SqlitePool};

use crate::domain::{MimeType, SessionId, SessionState, TokenHash};

/// A session as stored. Recording columns are `None` until it is ready.
/// `FromRow` lets listings select `*` (see [`super::admin`]); lookups by id
/// use the checked query below.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub seq: i64,
    pub public_id: SessionId,
    pub token_hash: Vec<u8>,
    pub state: SessionState,
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
    pub last_client_addr: Option<String>,
    pub last_user_agent: Option<String>,
    /// When retention deleted the recording's file.
    pub recording_expired_at: Option<i64>,
    /// The container was rewritten (WebM with Duration and Cues).
    pub recording_rewritten: Option<bool>,
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

/// The session with this public id, unless it does not exist or is deleted.
pub async fn find_session(pool: &SqlitePool, id: &SessionId) -> sqlx::Result<Option<SessionRow>> {
    let id = id.as_str();
    sqlx::query_as!(
        SessionRow,
        r#"SELECT seq AS "seq!", public_id AS "public_id: SessionId", token_hash,
                  state AS "state: SessionState", mime_type, metadata, expected_chunks,
                  committed, chunks_received, bytes_received, max_index, connections, created_at,
                  updated_at, last_seen_at, finalize_claimed_at, failure_reason, recording_bytes,
                  recording_sha256, recording_source_bytes, recording_source_sha256,
                  recording_duration_ms, recording_complete AS "recording_complete: bool",
                  recording_missing, last_client_addr, last_user_agent, recording_expired_at,
                  recording_rewritten AS "recording_rewritten: bool"
           FROM sessions WHERE public_id = ?1 AND state != 'deleted'"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// The session with this key, inside a transaction; `None` if deleted or gone.
pub async fn find_by_seq(
    conn: &mut SqliteConnection,
    seq: i64,
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as::<_, SessionRow>("SELECT * FROM sessions WHERE seq = ?1 AND state != 'deleted'")
        .bind(seq)
        .fetch_optional(conn)
        .await
}

/// Sessions seen by the writer's batch: new connections (counted, the last
/// one's client remembered) and quiet connections still open.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    pub seq: i64,
    pub connections: i64,
    pub addr: Option<String>,
    pub user_agent: Option<String>,
}

/// Marks every session in `seen` as seen now, in one statement: a reconnect
/// storm of thousands of sockets costs one statement per batch, not one each.
pub async fn record_seen(conn: &mut SqliteConnection, seen: &[Seen], now: i64) -> sqlx::Result<()> {
    if seen.is_empty() {
        return Ok(());
    }
    let rows = serde_json::to_string(seen).expect("plain values serialize");
    sqlx::query!(
        r#"UPDATE sessions SET connections = connections + v.new_connections,
                last_seen_at = MAX(last_seen_at, ?2),
                last_client_addr = CASE WHEN v.new_connections > 0 THEN v.addr ELSE last_client_addr END,
                last_user_agent = CASE WHEN v.new_connections > 0 THEN v.agent ELSE last_user_agent END
           FROM (SELECT value ->> 'seq' AS seen_seq, value ->> 'connections' AS new_connections,
                        value ->> 'addr' AS addr, value ->> 'user_agent' AS agent
                 FROM json_each(?1)) AS v
           WHERE sessions.seq = v.seen_seq"#,
        rows,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Who made a connection: its address, and its `User-Agent` (client text,
/// cut to [`ClientInfo::MAX_USER_AGENT`] characters).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub addr: String,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub const MAX_USER_AGENT: usize = 256;

    pub fn new(addr: std::net::SocketAddr, user_agent: Option<&str>) -> Self {
        Self {
            addr: addr.to_string(),
            user_agent: user_agent.map(|ua| ua.chars().take(Self::MAX_USER_AGENT).collect()),
        }
    }
}

/// Marks the session deleted: from this commit on it is invisible, takes no
/// chunk and cannot be finalized; [`crate::sweep`] then removes its data.
/// Returns false if it was already deleted or gone.
pub async fn mark_deleted(pool: &SqlitePool, seq: i64, now: i64) -> sqlx::Result<bool> {
    let marked = sqlx::query!(
        "UPDATE sessions SET state = 'deleted', updated_at = ?2, finalize_claimed_at = NULL
         WHERE seq = ?1 AND state != 'deleted'",
        seq,
        now
    )
    .execute(pool)
    .await?;
    Ok(marked.rows_affected() == 1)
}

/// Removes a deleted session's row: the last step, once its chunks and
/// recording are gone. Keys are never reused, so nothing can refer to it again.
pub async fn remove_deleted(pool: &SqlitePool, seq: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM sessions WHERE seq = ?1 AND state = 'deleted' AND first_block IS NULL",
        seq
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Sessions marked deleted whose data is still being removed, by key, after `after`.
pub async fn deleted_sessions(
    pool: &SqlitePool,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<(i64, String)>> {
    let rows = sqlx::query!(
        r#"SELECT seq AS "seq!", public_id FROM sessions WHERE state = 'deleted' AND seq > ?1
           ORDER BY seq LIMIT ?2"#,
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.seq, r.public_id)).collect())
}

/// What decides whether a session still needs its chunks.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChunkHolder {
    pub state: String,
    /// Chunks below this were acknowledged.
    pub committed: i64,
}

/// The state and `committed` of the session with this key, deleted
/// included; `None` if the row is gone.
pub async fn chunk_holder(pool: &SqlitePool, seq: i64) -> sqlx::Result<Option<ChunkHolder>> {
    sqlx::query_as!(
        ChunkHolder,
        "SELECT state, committed FROM sessions WHERE seq = ?1",
        seq
    )
    .fetch_optional(pool)
    .await
}

/// The state of the session with this public id, deleted included.
pub async fn state_by_public_id(
    pool: &SqlitePool,
    public_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT state FROM sessions WHERE public_id = ?1", public_id)
        .fetch_optional(pool)
        .await
}

/// What decides whether a recording file still has an owner.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileOwner {
    pub state: String,
    pub expired: bool,
}

pub async fn file_owner(pool: &SqlitePool, public_id: &str) -> sqlx::Result<Option<FileOwner>> {
    sqlx::query_as!(
        FileOwner,
        r#"SELECT state, recording_expired_at IS NOT NULL AS "expired!: bool"
           FROM sessions WHERE public_id = ?1"#,
        public_id
    )
    .fetch_optional(pool)
    .await
}

/// Ready sessions whose recording became ready before `cutoff` and still has its file.
pub async fn recordings_to_expire(
    pool: &SqlitePool,
    cutoff: i64,
    limit: i64,
) -> sqlx::Result<Vec<(i64, String)>> {
    let rows = sqlx::query!(
        r#"SELECT seq AS "seq!", public_id FROM sessions
           WHERE state = 'ready' AND recording_expired_at IS NULL AND ready_at < ?1
           ORDER BY ready_at LIMIT ?2"#,
        cutoff,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.seq, r.public_id)).collect())
}

/// Marks a recording expired (before its file is deleted, so a crash in
/// between leaves a file the sweep knows is garbage). False if it already was.
pub async fn mark_expired(pool: &SqlitePool, seq: i64, now: i64) -> sqlx::Result<bool> {
    let marked = sqlx::query!(
        "UPDATE sessions SET recording_expired_at = ?2
         WHERE seq = ?1 AND state = 'ready' AND recording_expired_at IS NULL",
        seq,
        now
    )
    .execute(pool)
    .await?;
    Ok(marked.rows_affected() == 1)
}
