//! Queries on the `chunks` table and the session counters they move.
//! The writer runs these inside its batch transaction.

use futures_util::Stream;
use sqlx::{SqliteConnection, SqlitePool};

use crate::domain::{ChunkFrame, SessionState};

/// What the writer needs to know about a session before storing into it.
#[derive(Debug, Clone)]
pub struct Gate {
    pub state: SessionState,
    pub expected_chunks: Option<i64>,
    pub max_index: Option<i64>,
    /// The finalize job has taken the session: no chunk may be added.
    pub claimed: bool,
}

pub async fn session_gate(conn: &mut SqliteConnection, seq: i64) -> sqlx::Result<Option<Gate>> {
    let row = sqlx::query!(
        r#"SELECT state AS "state: SessionState", expected_chunks, max_index, finalize_claimed_at
           FROM sessions WHERE seq = ?1"#,
        seq
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Gate {
        state: r.state,
        expected_chunks: r.expected_chunks,
        max_index: r.max_index,
        claimed: r.finalize_claimed_at.is_some(),
    }))
}

/// Stores the chunk unless `(session, index)` exists. Returns whether it was new.
pub async fn insert_chunk(
    conn: &mut SqliteConnection,
    seq: i64,
    chunk: &ChunkFrame,
) -> sqlx::Result<bool> {
    let (idx, crc, flags, payload) = (
        i64::from(chunk.index),
        i64::from(chunk.crc32c),
        i64::from(chunk.flags),
        &chunk.payload[..],
    );
    let result = sqlx::query!(
        "INSERT INTO chunks (session, idx, crc, flags, payload) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (session, idx) DO NOTHING",
        seq,
        idx,
        crc,
        flags,
        payload
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Rows per multi-row `INSERT`: one statement per row costs the driver more
/// than SQLite's work on a 2 KB row; 32 rows (160 bound values) was measured
/// as good as larger groups.
pub const ROWS_PER_INSERT: usize = 32;

/// Stores each `(session, chunk)` unless its `(session, index)` exists, in
/// multi-row statements. Returns the keys that were new; a key given twice
/// is stored once, from its first row.
pub async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &[(i64, &ChunkFrame)],
) -> sqlx::Result<std::collections::HashSet<(i64, u32)>> {
    let mut inserted = std::collections::HashSet::with_capacity(rows.len());
    for group in rows.chunks(ROWS_PER_INSERT) {
        // Not checked at compile time (the row count varies); the statement
        // text is the same for every full group, so it is prepared once.
        let mut insert =
            sqlx::QueryBuilder::new("INSERT INTO chunks (session, idx, crc, flags, payload) ");
        insert.push_values(group, |mut row, (session, chunk)| {
            row.push_bind(*session)
                .push_bind(i64::from(chunk.index))
                .push_bind(i64::from(chunk.crc32c))
                .push_bind(i64::from(chunk.flags))
                .push_bind(&chunk.payload[..]);
        });
        insert.push(" ON CONFLICT (session, idx) DO NOTHING RETURNING session, idx");
        let new: Vec<(i64, i64)> = insert.build_query_as().fetch_all(&mut *conn).await?;
        inserted.extend(new.into_iter().map(|(session, idx)| (session, idx as u32)));
    }
    Ok(inserted)
}

/// The CRC of the chunk already stored at `(session, index)`.
pub async fn stored_crc(
    conn: &mut SqliteConnection,
    seq: i64,
    index: u32,
) -> sqlx::Result<Option<u32>> {
    let idx = i64::from(index);
    let crc = sqlx::query_scalar!(
        "SELECT crc FROM chunks WHERE session = ?1 AND idx = ?2",
        seq,
        idx
    )
    .fetch_optional(conn)
    .await?;
    Ok(crc.map(|c| c as u32))
}

/// The end of the contiguous run of stored chunks that starts at `from`
/// (`from` itself if chunk `from` is absent). Reads only that run.
pub async fn contiguous_end(conn: &mut SqliteConnection, seq: i64, from: i64) -> sqlx::Result<i64> {
    let start_present = sqlx::query_scalar!(
        "SELECT 1 AS one FROM chunks WHERE session = ?1 AND idx = ?2",
        seq,
        from
    )
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if !start_present {
        return Ok(from);
    }
    let last = sqlx::query_scalar!(
        r#"SELECT c.idx AS "idx!" FROM chunks c
           WHERE c.session = ?1 AND c.idx >= ?2
             AND NOT EXISTS (SELECT 1 FROM chunks d WHERE d.session = ?1 AND d.idx = c.idx + 1)
           ORDER BY c.idx LIMIT 1"#,
        seq,
        from
    )
    .fetch_one(conn)
    .await?;
    Ok(last + 1)
}

/// What one batch added to a session.
#[derive(Debug, Default, Clone)]
pub struct Added {
    pub chunks: i64,
    pub bytes: i64,
    pub max_index: Option<i64>,
}

/// Moves the session's counters and returns its new `committed`.
pub async fn apply_added(
    conn: &mut SqliteConnection,
    seq: i64,
    added: &Added,
    now: i64,
) -> sqlx::Result<i64> {
    let current = sqlx::query_scalar!("SELECT committed FROM sessions WHERE seq = ?1", seq)
        .fetch_one(&mut *conn)
        .await?;
    let committed = contiguous_end(conn, seq, current).await?;
    sqlx::query!(
        "UPDATE sessions SET committed = ?2, chunks_received = chunks_received + ?3,
                bytes_received = bytes_received + ?4,
                max_index = CASE WHEN ?5 IS NULL THEN max_index ELSE MAX(COALESCE(max_index, -1), ?5) END,
                updated_at = ?6, last_seen_at = MAX(last_seen_at, ?6)
         WHERE seq = ?1",
        seq,
        committed,
        added.chunks,
        added.bytes,
        added.max_index,
        now
    )
    .execute(conn)
    .await?;
    Ok(committed)
}

/// Records the declared chunk count and moves `recording` to `finishing`.
pub async fn set_finished(
    conn: &mut SqliteConnection,
    seq: i64,
    chunks: i64,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sessions SET expected_chunks = ?2,
                state = CASE state WHEN 'recording' THEN 'finishing' ELSE state END,
                updated_at = ?3, last_seen_at = MAX(last_seen_at, ?3)
         WHERE seq = ?1",
        seq,
        chunks,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn committed(conn: &mut SqliteConnection, seq: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar!("SELECT committed FROM sessions WHERE seq = ?1", seq)
        .fetch_one(conn)
        .await
}

/// One stored chunk, as the finalize job reads it.
pub struct StoredChunk {
    pub idx: i64,
    /// The protocol's chunk flags (bit 0: a new recorder stream begins).
    pub flags: i64,
    pub payload: Vec<u8>,
}

/// Chunks `0..count` of a session in index order, streamed so a long
/// recording is never held in memory whole.
pub fn stream_prefix(
    pool: &SqlitePool,
    seq: i64,
    count: i64,
) -> impl Stream<Item = sqlx::Result<StoredChunk>> + '_ {
    sqlx::query_as!(
        StoredChunk,
        "SELECT idx, flags, payload FROM chunks WHERE session = ?1 AND idx < ?2 ORDER BY idx",
        seq,
        count
    )
    .fetch(pool)
}

/// Deletes up to `limit` of the session's chunks (the writer runs this in
/// its batch). Returns how many were deleted.
pub async fn delete_slice(conn: &mut SqliteConnection, seq: i64, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM chunks WHERE rowid IN (SELECT rowid FROM chunks WHERE session = ?1 LIMIT ?2)",
        seq,
        limit
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected())
}

/// The smallest session key above `after` that has any chunk: walking the
/// primary key this way visits each session once, without scanning chunks.
pub async fn next_session_with_chunks(pool: &SqlitePool, after: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        r#"SELECT MIN(session) AS "session: i64" FROM chunks WHERE session > ?1"#,
        after
    )
    .fetch_one(pool)
    .await
}
