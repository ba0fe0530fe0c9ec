//! Queries on the `chunks` table and the session counters they move.
//! The writer runs these inside its batch transaction.
//!
//! Rows are indexed by *arrival block* — about 16 k consecutive arrivals —
//! then session and index, so each commit touches only the current block's
//! few index pages instead of one page per recording (see the migration
//! `chunks_by_arrival_block`). A session's rows lie in the blocks of its
//! [`BlockSpan`]; every read by session seeks each block of that span.

use std::collections::HashMap;

use futures_util::{Stream, TryStreamExt};
use sqlx::{SqliteConnection, SqlitePool};

use super::batch::Gate;
use crate::domain::{ChunkFrame, SessionState};

/// Arrivals per block. The block's slice of the index (~16 k entries, a few
/// dozen 16 KiB pages) is what every commit rewrites, so it stays small;
/// a session's reads cost one seek per block it spans.
pub const ROWS_PER_BLOCK: u64 = 16_384;

/// The blocks holding a session's rows: `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpan {
    pub first: i64,
    pub last: i64,
}

impl BlockSpan {
    /// `span` widened to take in `block` (the span of rows just stored there).
    pub fn including(span: Option<Self>, block: i64) -> Self {
        match span {
            Some(span) => Self {
                first: span.first.min(block),
                last: span.last.max(block),
            },
            None => Self {
                first: block,
                last: block,
            },
        }
    }

    fn from_columns(first: Option<i64>, last: Option<i64>) -> Option<Self> {
        Some(Self {
            first: first?,
            last: last?,
        })
    }
}

/// The block new rows go to; the writer moves it on as rows arrive.
#[derive(Debug)]
pub struct ArrivalBlock {
    current: i64,
    rows: u64,
}

impl ArrivalBlock {
    /// A fresh block after every block already used (the index's last entry).
    pub async fn resume(conn: &mut SqliteConnection) -> sqlx::Result<Self> {
        let last = sqlx::query_scalar!(r#"SELECT MAX(block) AS "block: i64" FROM chunks"#)
            .fetch_one(conn)
            .await?;
        Ok(Self {
            current: last.map_or(1, |block| block + 1),
            rows: 0,
        })
    }

    pub fn current(&self) -> i64 {
        self.current
    }

    /// Counts `rows` stored in the current block; a full block is left for
    /// the next (a batch never straddles two).
    pub fn stored(&mut self, rows: usize) {
        self.rows += rows as u64;
        if self.rows >= ROWS_PER_BLOCK {
            self.current += 1;
            self.rows = 0;
        }
    }
}

/// The gates of `seqs` (sessions that do not exist are absent) and where
/// the rows of those holding chunks are, in one query.
pub async fn session_gates(
    conn: &mut SqliteConnection,
    seqs: &[i64],
) -> sqlx::Result<(HashMap<i64, Gate>, HashMap<i64, BlockSpan>)> {
    let seqs = serde_json::to_string(seqs).expect("integers serialize");
    let rows = sqlx::query!(
        r#"SELECT seq AS "seq!", state AS "state: SessionState", expected_chunks, max_index,
                  committed, finalize_claimed_at, first_block, last_block
           FROM sessions WHERE seq IN (SELECT value FROM json_each(?1))"#,
        seqs
    )
    .fetch_all(conn)
    .await?;
    let mut gates = HashMap::with_capacity(rows.len());
    let mut spans = HashMap::new();
    for r in rows {
        let gate = Gate {
            state: r.state,
            expected_chunks: r.expected_chunks,
            max_index: r.max_index,
            committed: r.committed,
            claimed: r.finalize_claimed_at.is_some(),
        };
        gates.insert(r.seq, gate);
        if let Some(span) = BlockSpan::from_columns(r.first_block, r.last_block) {
            spans.insert(r.seq, span);
        }
    }
    Ok((gates, spans))
}

/// Where the session's rows are, if it holds any.
async fn block_span<'c, E>(executor: E, seq: i64) -> sqlx::Result<Option<BlockSpan>>
where
    E: sqlx::SqliteExecutor<'c>,
{
    let row = sqlx::query!(
        "SELECT first_block, last_block FROM sessions WHERE seq = ?1",
        seq
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.and_then(|r| BlockSpan::from_columns(r.first_block, r.last_block)))
}

/// Rows per multi-row `INSERT`: one statement per row costs the driver more
/// than SQLite's work on a 2 KB row; 32 rows (160 bound values) was measured
/// as good as larger groups.
pub const ROWS_PER_INSERT: usize = 32;

/// Stores each `(session, chunk)` in `block`, in multi-row statements. The
/// caller has made sure no key is stored already nor given twice.
pub async fn insert_rows(
    conn: &mut SqliteConnection,
    block: i64,
    rows: &[(i64, &ChunkFrame)],
) -> sqlx::Result<()> {
    for group in rows.chunks(ROWS_PER_INSERT) {
        // Not checked at compile time (the row count varies); the statement
        // text is the same for every full group, so it is prepared once.
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO chunks (block, session, idx, crc, flags, payload) ",
        );
        insert.push_values(group, |mut row, (session, chunk)| {
            row.push_bind(block)
                .push_bind(*session)
                .push_bind(i64::from(chunk.index))
                .push_bind(i64::from(chunk.crc32c))
                .push_bind(i64::from(chunk.flags))
                .push_bind(&chunk.payload[..]);
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The CRC of the chunk stored at `(session, index)`, if any. Looks from the
/// newest block back: a resend is usually of a recent chunk.
pub async fn stored_crc(
    conn: &mut SqliteConnection,
    seq: i64,
    blocks: BlockSpan,
    index: u32,
) -> sqlx::Result<Option<u32>> {
    let idx = i64::from(index);
    let crc = sqlx::query_scalar!(
        r#"WITH RECURSIVE span(block) AS (
               SELECT ?2 UNION ALL SELECT block - 1 FROM span WHERE block > ?3)
           SELECT c.crc AS "crc!" FROM span CROSS JOIN chunks c
           WHERE c.block = span.block AND c.session = ?1 AND c.idx = ?4
           LIMIT 1"#,
        seq,
        blocks.last,
        blocks.first,
        idx
    )
    .fetch_optional(conn)
    .await?;
    Ok(crc.map(|c| c as u32))
}

/// The session's stored indexes from `from` on, in order.
async fn indexes_from<'c, E>(
    executor: E,
    seq: i64,
    blocks: BlockSpan,
    from: i64,
) -> sqlx::Result<Vec<i64>>
where
    E: sqlx::SqliteExecutor<'c>,
{
    sqlx::query_scalar!(
        r#"WITH RECURSIVE span(block) AS (
               SELECT ?2 UNION ALL SELECT block + 1 FROM span WHERE block < ?3)
           SELECT c.idx AS "idx!" FROM span CROSS JOIN chunks c
           WHERE c.block = span.block AND c.session = ?1 AND c.idx >= ?4
           ORDER BY c.idx"#,
        seq,
        blocks.first,
        blocks.last,
        from
    )
    .fetch_all(executor)
    .await
}

/// Every index the session has stored, in order.
pub async fn stored_indexes(pool: &SqlitePool, seq: i64) -> sqlx::Result<Vec<i64>> {
    match block_span(pool, seq).await? {
        Some(blocks) => indexes_from(pool, seq, blocks, 0).await,
        None => Ok(Vec::new()),
    }
}

/// The end of the contiguous run of stored chunks that starts at `from`
/// (`from` itself if chunk `from` is absent).
pub async fn contiguous_end(
    conn: &mut SqliteConnection,
    seq: i64,
    blocks: BlockSpan,
    from: i64,
) -> sqlx::Result<i64> {
    let stored = indexes_from(conn, seq, blocks, from).await?;
    Ok(super::batch::run_end(from, &stored))
}

/// What one batch did to a session's counters.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Added {
    pub seq: i64,
    pub committed: i64,
    pub chunks: i64,
    pub bytes: i64,
    pub max_index: Option<i64>,
    /// The block its new rows went to.
    pub block: i64,
}

/// Moves the counters (and block spans) of every session in `added` in one statement.
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
                first_block = COALESCE(first_block, v.block),
                last_block = MAX(COALESCE(last_block, v.block), v.block),
                updated_at = ?2, last_seen_at = MAX(last_seen_at, ?2)
           FROM (SELECT value ->> 'seq' AS added_seq, value ->> 'committed' AS new_committed,
                        value ->> 'chunks' AS new_chunks, value ->> 'bytes' AS new_bytes,
                        value ->> 'max_index' AS new_max, value ->> 'block' AS block
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

/// Most chunks, and most payload bytes, read per statement when streaming a
/// session: large enough that the per-statement cost fades, small enough to
/// keep memory flat however big the chunks are.
pub(super) const READ_SLICE_ROWS: usize = 512;
pub(super) const READ_SLICE_BYTES: i64 = 4 << 20;

/// A stored chunk's row and payload size, as the read plans its slices.
pub(super) struct RowRef {
    pub(super) row: i64,
    pub(super) idx: i64,
    pub(super) bytes: i64,
}

/// Chunks `0..count` of a session in index order, streamed so a long
/// recording is never held in memory whole: first the keys (index and row
/// id, small), then the payloads a slice at a time.
pub fn stream_prefix(
    pool: &SqlitePool,
    seq: i64,
    count: i64,
) -> impl Stream<Item = sqlx::Result<StoredChunk>> + '_ {
    futures_util::stream::try_unfold(None, move |read: Option<(Vec<RowRef>, usize)>| async move {
        let (rows, at) = match read {
            Some(read) => read,
            None => (prefix_rows(pool, seq, count).await?, 0),
        };
        if at == rows.len() {
            return Ok::<_, sqlx::Error>(None);
        }
        let end = slice_end(&rows, at);
        let chunks = read_rows(pool, seq, &rows[at..end]).await?;
        let chunks = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, sqlx::Error>));
        Ok(Some((chunks, Some((rows, end)))))
    })
    .try_flatten()
}

/// The row ids of chunks `0..count`, in index order; were a key ever stored
/// twice, only its first row.
async fn prefix_rows(pool: &SqlitePool, seq: i64, count: i64) -> sqlx::Result<Vec<RowRef>> {
    let Some(blocks) = block_span(pool, seq).await? else {
        return Ok(Vec::new());
    };
    let keys = sqlx::query!(
        r#"WITH RECURSIVE span(block) AS (
               SELECT ?2 UNION ALL SELECT block + 1 FROM span WHERE block < ?3)
           SELECT c.idx AS "idx!", c.rowid AS "row!", length(c.payload) AS "bytes!: i64"
           FROM span CROSS JOIN chunks c
           WHERE c.block = span.block AND c.session = ?1 AND c.idx < ?4
           ORDER BY c.idx, c.rowid"#,
        seq,
        blocks.first,
        blocks.last,
        count
    )
    .fetch_all(pool)
    .await?;
    let mut rows = Vec::with_capacity(keys.len());
    let mut last_idx = None;
    for key in keys {
        if last_idx != Some(key.idx) {
            rows.push(RowRef {
                row: key.row,
                idx: key.idx,
                bytes: key.bytes,
            });
            last_idx = Some(key.idx);
        }
    }
    Ok(rows)
}

/// Where the slice that starts at `at` ends: at the row or byte bound, and
/// never empty.
pub(super) fn slice_end(rows: &[RowRef], at: usize) -> usize {
    let mut bytes = 0;
    let mut end = at;
    while end < rows.len() && end - at < READ_SLICE_ROWS {
        bytes += rows[end].bytes;
        if end > at && bytes > READ_SLICE_BYTES {
            break;
        }
        end += 1;
    }
    end
}

/// The chunks in `rows`, in that order. A row that is gone, or whose id now
/// holds another chunk (row ids of deleted rows are reused), is left out:
/// the reader then reports that chunk missing instead of joining another's.
async fn read_rows(pool: &SqlitePool, seq: i64, rows: &[RowRef]) -> sqlx::Result<Vec<StoredChunk>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.row).collect();
    let wanted = serde_json::to_string(&ids).expect("integers serialize");
    let found = sqlx::query!(
        r#"SELECT rowid AS "row!", idx, flags, payload FROM chunks
           WHERE rowid IN (SELECT value FROM json_each(?1)) AND session = ?2"#,
        wanted,
        seq
    )
    .fetch_all(pool)
    .await?;
    let mut by_row: HashMap<i64, StoredChunk> = found
        .into_iter()
        .map(|r| {
            let chunk = StoredChunk {
                idx: r.idx,
                flags: r.flags,
                payload: r.payload,
            };
            (r.row, chunk)
        })
        .collect();
    Ok(rows
        .iter()
        .filter_map(|r| by_row.remove(&r.row).filter(|chunk| chunk.idx == r.idx))
        .collect())
}

/// Deletes up to `limit` of the session's chunks (the writer runs this in
/// its batch); once none is left, the session holds no block. Returns how
/// many were deleted.
pub async fn delete_slice(conn: &mut SqliteConnection, seq: i64, limit: i64) -> sqlx::Result<u64> {
    let Some(blocks) = block_span(&mut *conn, seq).await? else {
        return Ok(0);
    };
    let deleted = sqlx::query!(
        r#"WITH RECURSIVE span(block) AS (
               SELECT ?2 UNION ALL SELECT block + 1 FROM span WHERE block < ?3)
           DELETE FROM chunks WHERE rowid IN (
               SELECT c.rowid FROM span CROSS JOIN chunks c
               WHERE c.block = span.block AND c.session = ?1 LIMIT ?4)"#,
        seq,
        blocks.first,
        blocks.last,
        limit
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if deleted < limit.max(0) as u64 {
        sqlx::query!(
            "UPDATE sessions SET first_block = NULL, last_block = NULL WHERE seq = ?1",
            seq
        )
        .execute(conn)
        .await?;
    }
    Ok(deleted)
}

/// The smallest session key above `after` whose session holds chunks.
pub async fn next_session_with_chunks(pool: &SqlitePool, after: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        r#"SELECT MIN(seq) AS "seq: i64" FROM sessions WHERE first_block IS NOT NULL AND seq > ?1"#,
        after
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row id that now holds another session's chunk (ids of deleted rows
    /// are reused) is never read as this session's.
    #[tokio::test]
    async fn a_reused_row_id_is_not_read_as_this_sessions_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::sqlite::open_pool(&dir.path().join("spool.db"))
            .await
            .unwrap();
        let row: i64 = sqlx::query_scalar(
            "INSERT INTO chunks (block, session, idx, crc, flags, payload)
             VALUES (1, 2, 0, 0, 0, x'00') RETURNING rowid",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let pool = &pool;
        let wanted = |session, idx| async move {
            let key = RowRef { row, idx, bytes: 1 };
            read_rows(pool, session, &[key]).await.unwrap().len()
        };
        assert_eq!(wanted(2, 0).await, 1);
        assert_eq!(wanted(1, 0).await, 0, "another session's row");
        assert_eq!(wanted(2, 5).await, 0, "another index's row");
    }

    #[test]
    fn a_read_slice_stops_at_its_row_or_byte_bound_and_is_never_empty() {
        let rows = |sizes: &[i64]| -> Vec<RowRef> {
            sizes
                .iter()
                .map(|&bytes| RowRef {
                    row: 0,
                    idx: 0,
                    bytes,
                })
                .collect()
        };
        assert_eq!(slice_end(&rows(&[10; 2000]), 0), READ_SLICE_ROWS);
        assert_eq!(slice_end(&rows(&[10; 2000]), 1900), 2000);
        let big = READ_SLICE_BYTES / 2 + 1;
        assert_eq!(slice_end(&rows(&[big, big, big]), 0), 1);
        assert_eq!(slice_end(&rows(&[READ_SLICE_BYTES * 3, 1]), 0), 1);
    }

    #[test]
    fn a_block_fills_before_the_next_begins() {
        let mut block = ArrivalBlock {
            current: 3,
            rows: 0,
        };
        block.stored(ROWS_PER_BLOCK as usize - 1);
        assert_eq!(block.current(), 3);
        block.stored(1000); // a batch is never split over two blocks
        assert_eq!(block.current(), 4);
        block.stored(1);
        assert_eq!(block.current(), 4);
    }
}
