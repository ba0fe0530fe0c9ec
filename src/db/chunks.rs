//! Queries on the `chunks` table and the session counters they move.
//! The writer runs these inside its batch transaction.

use std::collections::HashMap;

use futures_util::Stream;
use sqlx::{SqliteConnection, SqlitePool};

use crate::domain::{ChunkFrame, SessionState};

/// What the writer needs to know about a session before storing into it.
#[derive(Debug, Clone)]
pub struct Gate {
    pub state: SessionState,
    pub expected_chunks: Option<i64>,
    pub max_index: Option<i64>,
    /// Every index below this is stored.
    pub committed: i64,
    /// The finalize job has taken the session: no chunk may be added.
    pub claimed: bool,
}

/// The gates of `seqs` (sessions that do not exist are absent), in one query.
pub async fn session_gates(
    conn: &mut SqliteConnection,
    seqs: &[i64],
) -> sqlx::Result<HashMap<i64, Gate>> {
    let seqs = serde_json::to_string(seqs).expect("integers serialize");
    let rows = sqlx::query!(
        r#"SELECT seq AS "seq!", state AS "state: SessionState", expected_chunks, max_index,
                  committed, finalize_claimed_at
           FROM sessions WHERE seq IN (SELECT value FROM json_each(?1))"#,
        seqs
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let gate = Gate {
                state: r.state,
                expected_chunks: r.expected_chunks,
                max_index: r.max_index,
                committed: r.committed,
                claimed: r.finalize_claimed_at.is_some(),
            };
            (r.seq, gate)
        })
        .collect())
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

/// What one batch did to a session's counters.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Added {
    pub seq: i64,
    pub committed: i64,
    pub chunks: i64,
    pub bytes: i64,
    pub max_index: Option<i64>,
}

/// Moves the counters of every session in `added` in one statement.
pub async fn apply_added(
    conn: &mut SqliteConnection,
    added: &[Added],
    now: i64,
) -> sqlx::Result<()> {
    if added.is_empty() {
        return Ok(());
    }
    let rows = serde_json::to_string(added).expect("counters serialize");
    sqlx::query!(
        r#"UPDATE sessions SET committed = v.new_committed,
                chunks_received = chunks_received + v.new_chunks,
                bytes_received = bytes_received + v.new_bytes,
                max_index = CASE WHEN v.new_max IS NULL THEN max_index
                                 ELSE MAX(COALESCE(max_index, -1), v.new_max) END,
                updated_at = ?2, last_seen_at = MAX(last_seen_at, ?2)
           FROM (SELECT value ->> 'seq' AS added_seq, value ->> 'committed' AS new_committed,
                        value ->> 'chunks' AS new_chunks, value ->> 'bytes' AS new_bytes,
                        value ->> 'max_index' AS new_max
                 FROM json_each(?1)) AS v
           WHERE sessions.seq = v.added_seq"#,
        rows,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
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
