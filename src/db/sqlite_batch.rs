//! The writer's batch in SQLite: one `BEGIN IMMEDIATE` transaction that
//! stores every chunk it can, records finishes, moves each touched session's
//! counters and `committed`, and commits.
//!
//! SQLite's writer is the only inserter, so it decides duplicate, conflict
//! or new *before* inserting, looking a CRC up only when the index may be
//! stored already; the chunk index (by arrival block) is no help for that.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::{Connection, SqliteConnection};

use super::batch::{self, Committed, Decision, PrefixMove, Write};
use super::chunks::{Added, BlockSpan};
use super::finalize::{MarkedReady, RecordingFacts};
use super::webhooks::EventFor;

/// One transaction for the whole batch, in a handful of statements whatever
/// its size: the sessions' gates in one query, the chunks in multi-row
/// INSERTs, the counters in one UPDATE. (Each statement is a round trip to
/// SQLite's worker thread, which is what bounded throughput.)
pub async fn commit_batch(
    conn: &mut SqliteConnection,
    block: i64,
    writes: &[Write<'_>],
) -> anyhow::Result<Committed> {
    let now = super::now_ms();
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .context("beginning the batch")?;
    let mut seqs: Vec<i64> = writes.iter().filter_map(Write::gated_session).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let (mut gates, spans) = super::chunks::session_gates(&mut tx, &seqs)
        .await
        .context("reading the sessions' state")?;
    // As read, before this batch: where each session's stored chunks end.
    let before: HashMap<i64, (i64, Option<i64>)> = gates
        .iter()
        .map(|(seq, gate)| (*seq, (gate.committed, gate.max_index)))
        .collect();

    let mut decisions = Vec::with_capacity(writes.len());
    let mut accepted = Vec::new();
    let mut touched = Vec::new();
    for (position, write) in writes.iter().enumerate() {
        let decision = match write {
            Write::Chunk { session, chunk } => {
                match batch::gate_chunk(gates.get_mut(session), chunk) {
                    Some(refused) => refused,
                    None => {
                        accepted.push((position, *session, *chunk));
                        Decision::Stored // settled below
                    }
                }
            }
            Write::Finish { session, chunks } => {
                match batch::gate_finish(gates.get(session), *chunks) {
                    Some(decided) => decided,
                    None => {
                        super::chunks::set_finished(&mut tx, *session, *chunks, now)
                            .await
                            .context("recording finish")?;
                        if let Some(gate) = gates.get_mut(session) {
                            gate.expected_chunks = Some(*chunks);
                        }
                        Decision::Finished(*chunks)
                    }
                }
            }
            Write::DeleteChunks { session, limit } => {
                let deleted = super::chunks::delete_slice(&mut tx, *session, *limit)
                    .await
                    .context("deleting chunks")?;
                Decision::Deleted(deleted)
            }
            Write::MarkReady {
                session,
                claimed_at,
                facts,
                now,
                event,
            } => Decision::MarkedReady(
                mark_ready(&mut tx, *session, *claimed_at, facts, *now, *event).await?,
            ),
            Write::Touch { session, connected } => {
                touched.push((*session, *connected));
                Decision::Touched
            }
        };
        decisions.push(decision);
    }

    let mut added: HashMap<i64, Added> = HashMap::new();
    let mut new_indexes: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut new_rows = Vec::with_capacity(accepted.len());
    // The first request for a key in this batch is the one that stores it.
    let mut first_crc: HashMap<(i64, u32), u32> = HashMap::new();
    for (position, session, chunk) in accepted {
        let key = (session, chunk.index);
        let index = i64::from(chunk.index);
        let stored = match first_crc.get(&key) {
            Some(&crc) => Some(crc),
            None => match spans.get(&session) {
                Some(blocks) if batch::may_hold(before[&session], index) => {
                    super::chunks::stored_crc(&mut tx, session, *blocks, chunk.index)
                        .await
                        .context("reading a stored chunk's CRC")?
                }
                _ => None,
            },
        };
        decisions[position] = match stored {
            Some(crc) if crc == chunk.crc32c => Decision::Duplicate,
            Some(_) => Decision::Conflict,
            None => {
                first_crc.insert(key, chunk.crc32c);
                new_rows.push((session, chunk));
                let added = added.entry(session).or_insert_with(|| Added {
                    seq: session,
                    block,
                    ..Added::default()
                });
                added.chunks += 1;
                added.bytes += chunk.payload.len() as i64;
                added.max_index = added.max_index.max(Some(index));
                new_indexes.entry(session).or_default().push(index);
                Decision::Stored
            }
        };
    }
    super::chunks::insert_rows(&mut tx, block, &new_rows)
        .await
        .context("storing chunks")?;

    let mut committed = HashMap::new();
    let mut any_complete = false;
    for (session, gate) in &gates {
        let before = before[session];
        let value = match (added.get_mut(session), new_indexes.get_mut(session)) {
            (Some(added), Some(indexes)) => {
                indexes.sort_unstable();
                let value = match batch::prefix_move(before, indexes) {
                    PrefixMove::To(end) => end,
                    PrefixMove::AskTable => {
                        let blocks = BlockSpan::including(spans.get(session).copied(), block);
                        super::chunks::contiguous_end(&mut tx, *session, blocks, before.0)
                            .await
                            .context("reading the stored prefix")?
                    }
                };
                added.committed = value;
                value
            }
            _ => before.0,
        };
        any_complete |= gate.expected_chunks.is_some_and(|n| value >= n);
        committed.insert(*session, value);
    }
    let added: Vec<Added> = added.into_values().collect();
    super::chunks::apply_added(&mut tx, &added, now)
        .await
        .context("moving the sessions' counters")?;
    super::sessions::record_seen(&mut tx, &batch::seen(touched), now)
        .await
        .context("marking sessions seen")?;
    tx.commit().await.context("committing the batch")?;
    Ok(Committed {
        decisions,
        committed,
        any_complete,
        stored_rows: new_rows.len(),
    })
}

/// Marks the session ready and, if it became so, records its webhook event.
async fn mark_ready(
    tx: &mut SqliteConnection,
    session: i64,
    claimed_at: i64,
    facts: &RecordingFacts,
    now: i64,
    event: Option<&EventFor>,
) -> anyhow::Result<MarkedReady> {
    let marked = super::finalize::mark_ready(tx, session, claimed_at, facts, now)
        .await
        .context("marking a session ready")?;
    if marked == MarkedReady::Ready
        && let Some(event) = event
    {
        super::webhooks::enqueue_for(tx, session, event)
            .await
            .context("recording a webhook event")?;
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sessions::ClientInfo;
    use crate::domain::{ChunkFrame, MimeType, SessionId, Token};

    async fn session(pool: &sqlx::SqlitePool) -> i64 {
        let id = SessionId::generate();
        let new = crate::db::sessions::NewSession {
            id: &id,
            token_hash: &Token::generate().hash(),
            mime_type: &MimeType::octet_stream(),
            metadata_json: "{}",
        };
        crate::db::sessions::insert_session(pool, new, 0)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT seq FROM sessions WHERE public_id = ?1")
            .bind(id.as_str())
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// `(session, index, byte)` chunks of 16 bytes of `byte`.
    fn frames(specs: &[(i64, u32, u8)]) -> Vec<(i64, ChunkFrame)> {
        specs
            .iter()
            .map(|&(session, index, byte)| {
                let frame = ChunkFrame::encode(index, index == 0, &[byte; 16]);
                (session, ChunkFrame::parse(frame.into(), 16).unwrap())
            })
            .collect()
    }

    fn chunk_writes(frames: &[(i64, ChunkFrame)]) -> Vec<Write<'_>> {
        frames
            .iter()
            .map(|(session, chunk)| Write::Chunk {
                session: *session,
                chunk,
            })
            .collect()
    }

    fn kinds(decisions: &[Decision]) -> Vec<&'static str> {
        decisions
            .iter()
            .map(|d| match d {
                Decision::Stored => "stored",
                Decision::Duplicate => "duplicate",
                Decision::Conflict => "conflict",
                Decision::Unknown => "unknown",
                _ => "other",
            })
            .collect()
    }

    /// Repeats, conflicts, gaps and unknown sessions inside one batch and
    /// across batches: each request gets the answer a chunk-at-a-time writer
    /// would give, and `committed` is the stored prefix.
    #[tokio::test]
    async fn one_batch_decides_like_one_chunk_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let pool = crate::db::sqlite::open_pool(&path).await.unwrap();
        let (a, b) = (session(&pool).await, session(&pool).await);
        let mut conn = crate::db::sqlite::open_writer_connection(&path)
            .await
            .unwrap();

        let first = frames(&[
            (a, 0, 1),
            (a, 2, 1),
            (a, 0, 1),
            (a, 2, 9),
            (a, 1, 1),
            (b, 1, 1),
            (9_999, 0, 1),
        ]);
        let done = commit_batch(&mut conn, 1, &chunk_writes(&first))
            .await
            .unwrap();
        assert_eq!(
            kinds(&done.decisions),
            [
                "stored",
                "stored",
                "duplicate",
                "conflict",
                "stored",
                "stored",
                "unknown"
            ]
        );
        assert_eq!(done.committed[&a], 3);
        assert_eq!(done.committed[&b], 0, "chunk 0 of b is missing");

        // b's gap is filled; its chunk 1 comes again (stored earlier: a duplicate) and with other bytes.
        let client = |addr: &str| ClientInfo {
            addr: addr.into(),
            user_agent: Some(format!("agent of {addr}")),
        };
        let (one, two) = (client("10.0.0.1:1"), client("10.0.0.2:2"));
        let second = frames(&[(b, 0, 1), (b, 1, 1), (b, 1, 7), (a, 3, 1)]);
        let chunks = chunk_writes(&second);
        let mut writes = chunks.into_iter();
        let mut next = || writes.next().unwrap();
        let touch = |session, connected| Write::Touch { session, connected };
        let second = [
            next(),
            touch(b, Some(&one)),
            next(),
            next(),
            touch(b, Some(&two)),
            touch(b, None),
            next(),
        ];
        let done = commit_batch(&mut conn, 1, &second).await.unwrap();
        assert_eq!(
            kinds(&done.decisions),
            [
                "stored",
                "other",
                "duplicate",
                "conflict",
                "other",
                "other",
                "stored"
            ]
        );
        assert_eq!(done.committed[&b], 2);
        assert_eq!(done.committed[&a], 4);

        let counters: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT committed, chunks_received, bytes_received, max_index FROM sessions ORDER BY seq",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(counters, [(4, 4, 64, 3), (2, 2, 32, 1)]);
        let seen: (i64, String, String) = sqlx::query_as(
            "SELECT connections, last_client_addr, last_user_agent FROM sessions WHERE seq = ?1",
        )
        .bind(b)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(seen, (2, "10.0.0.2:2".into(), "agent of 10.0.0.2:2".into()));
    }

    /// A session whose chunks arrive in several arrival blocks: resends of
    /// chunks stored in earlier blocks are duplicates or conflicts, a gap
    /// filled later moves `committed`, the finalize read returns one row per
    /// index in order, and deleting walks every block and then forgets the span.
    #[tokio::test]
    async fn a_session_spread_over_blocks_behaves_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let pool = crate::db::sqlite::open_pool(&path).await.unwrap();
        let a = session(&pool).await;
        let mut conn = crate::db::sqlite::open_writer_connection(&path)
            .await
            .unwrap();

        let batch = frames(&[(a, 0, 1), (a, 1, 1), (a, 3, 1)]);
        let done = commit_batch(&mut conn, 1, &chunk_writes(&batch))
            .await
            .unwrap();
        assert_eq!(done.committed[&a], 2);
        assert_eq!(done.stored_rows, 3);
        let batch = frames(&[(a, 4, 1), (a, 1, 1), (a, 3, 2)]);
        let done = commit_batch(&mut conn, 2, &chunk_writes(&batch))
            .await
            .unwrap();
        assert_eq!(kinds(&done.decisions), ["stored", "duplicate", "conflict"]);
        assert_eq!(done.stored_rows, 1);
        assert_eq!(done.committed[&a], 2, "chunk 2 is still missing");
        let batch = frames(&[(a, 2, 1), (a, 0, 3)]);
        let done = commit_batch(&mut conn, 5, &chunk_writes(&batch))
            .await
            .unwrap();
        assert_eq!(kinds(&done.decisions), ["stored", "conflict"]);
        assert_eq!(
            done.committed[&a], 5,
            "the gap in block 1 was filled from block 5"
        );

        let span: (i64, i64) =
            sqlx::query_as("SELECT first_block, last_block FROM sessions WHERE seq = ?1")
                .bind(a)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(span, (1, 5));
        use futures_util::TryStreamExt;
        let read: Vec<(i64, u8)> = crate::db::chunks::stream_prefix(&pool, a, 5)
            .map_ok(|c| (c.idx, c.payload[0]))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            read,
            [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)],
            "first writes, in order"
        );
        assert_eq!(
            crate::db::chunks::stored_indexes(&pool, a).await.unwrap(),
            [0, 1, 2, 3, 4]
        );

        let mut delete = async |limit| {
            let write = [Write::DeleteChunks { session: a, limit }];
            match commit_batch(&mut conn, 5, &write).await.unwrap().decisions[0] {
                Decision::Deleted(n) => n,
                ref other => panic!("{other:?}"),
            }
        };
        assert_eq!(delete(2).await, 2);
        assert_eq!(delete(10).await, 3);
        assert_eq!(delete(10).await, 0);
        let span: (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT first_block, last_block FROM sessions WHERE seq = ?1")
                .bind(a)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(span, (None, None));
        assert_eq!(
            crate::db::chunks::next_session_with_chunks(&pool, 0)
                .await
                .unwrap(),
            None
        );
    }
}
