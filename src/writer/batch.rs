//! One batch: a single `BEGIN IMMEDIATE` transaction that stores every
//! chunk it can, records finishes, moves each touched session's counters and
//! `committed`, and commits; then each submitter gets its answer.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use sqlx::{Connection, SqliteConnection};

use super::{ChunkOutcome, FinishOutcome, Request, WriteError};
use crate::db::finalize::{MarkedReady, RecordingFacts};
use crate::db::sessions::{ClientInfo, Seen};
use crate::db::{self, chunks::Added, chunks::BlockSpan, chunks::Gate};
use crate::domain::{ChunkFrame, SessionState};
use crate::metrics::{Metrics, Refused};
use crate::webhooks::{EventKind, Events};

/// What the transaction decided for each request, before `committed` is known.
#[derive(Debug, Clone)]
pub(super) enum Decision {
    Stored,
    Duplicate,
    Conflict,
    NotAccepting(SessionState),
    BeyondFinish(i64),
    Unknown,
    Finished(i64),
    CountMismatch(i64),
    BelowReceived(i64),
    /// A touch: nothing to answer.
    Touched,
    /// This many chunks were deleted.
    Deleted(u64),
    MarkedReady(MarkedReady),
}

pub(super) struct Committed {
    pub(super) decisions: Vec<Decision>,
    pub(super) committed: HashMap<i64, i64>,
    pub(super) any_complete: bool,
    /// Chunk rows the batch stored.
    pub(super) stored_rows: usize,
}

/// A chunk that passed its session's gate, waiting for the batch's INSERTs.
struct Accepted<'a> {
    position: usize,
    session: i64,
    chunk: &'a ChunkFrame,
}

/// One transaction for the whole batch, in a handful of statements whatever
/// its size: the sessions' gates in one query, the chunks in multi-row
/// INSERTs, the counters in one UPDATE. (Each statement is a round trip to
/// SQLite's worker thread, which is what bounded throughput.)
pub(super) async fn commit_batch(
    conn: &mut SqliteConnection,
    block: i64,
    batch: &[Request],
) -> anyhow::Result<Committed> {
    let now = db::now_ms();
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .context("beginning the batch")?;
    let mut seqs: Vec<i64> = batch
        .iter()
        .filter_map(|request| match request {
            Request::Chunk { session, .. } | Request::Finish { session, .. } => Some(*session),
            Request::Touch { .. } | Request::MarkReady { .. } | Request::DeleteChunks { .. } => {
                None
            }
        })
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut gates = db::chunks::session_gates(&mut tx, &seqs)
        .await
        .context("reading the sessions' state")?;
    // As read, before this batch: where each session's stored chunks end.
    let before: HashMap<i64, (i64, Option<i64>)> = gates
        .iter()
        .map(|(seq, gate)| (*seq, (gate.committed, gate.max_index)))
        .collect();

    let mut decisions = Vec::with_capacity(batch.len());
    let mut accepted = Vec::new();
    let mut touched = Vec::new();
    for (position, request) in batch.iter().enumerate() {
        let decision = match request {
            Request::Chunk { session, chunk, .. } => {
                match gate_chunk(gates.get_mut(session), chunk) {
                    Some(refused) => refused,
                    None => {
                        accepted.push(Accepted {
                            position,
                            session: *session,
                            chunk,
                        });
                        Decision::Stored // settled below, once the INSERTs ran
                    }
                }
            }
            Request::Finish {
                session, chunks, ..
            } => decide_finish(&mut tx, *session, gates.get_mut(session), *chunks, now).await?,
            Request::DeleteChunks { session, limit, .. } => {
                let deleted = db::chunks::delete_slice(&mut tx, *session, *limit)
                    .await
                    .context("deleting chunks")?;
                Decision::Deleted(deleted)
            }
            Request::MarkReady {
                session,
                facts,
                now,
                events,
                ..
            } => Decision::MarkedReady(
                mark_ready(&mut tx, *session, facts, *now, events.as_ref()).await?,
            ),
            Request::Touch { session, connected } => {
                touched.push((*session, connected.as_ref()));
                Decision::Touched
            }
        };
        decisions.push(decision);
    }

    // Decide which accepted chunks are new before storing any: the writer
    // is the only inserter, so what it checks here is what the table holds.
    let mut added: HashMap<i64, Added> = HashMap::new();
    let mut new_indexes: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut new_rows: Vec<(i64, &ChunkFrame)> = Vec::with_capacity(accepted.len());
    // The first request for a key in this batch is the one that stores it.
    let mut first_crc: HashMap<(i64, u32), u32> = HashMap::new();
    for a in &accepted {
        let key = (a.session, a.chunk.index);
        let index = i64::from(a.chunk.index);
        let stored = match first_crc.get(&key) {
            Some(&crc) => Some(crc),
            None => match gates.get(&a.session).and_then(|gate| gate.blocks) {
                Some(blocks) if may_hold(before[&a.session], index) => {
                    db::chunks::stored_crc(&mut tx, a.session, blocks, a.chunk.index)
                        .await
                        .context("reading a stored chunk's CRC")?
                }
                _ => None,
            },
        };
        decisions[a.position] = match stored {
            Some(crc) if crc == a.chunk.crc32c => Decision::Duplicate,
            Some(_) => Decision::Conflict,
            None => {
                first_crc.insert(key, a.chunk.crc32c);
                new_rows.push((a.session, a.chunk));
                let added = added.entry(a.session).or_insert_with(|| Added {
                    seq: a.session,
                    block,
                    ..Added::default()
                });
                added.chunks += 1;
                added.bytes += a.chunk.payload.len() as i64;
                added.max_index = added.max_index.max(Some(index));
                new_indexes.entry(a.session).or_default().push(index);
                Decision::Stored
            }
        };
    }
    db::chunks::insert_rows(&mut tx, block, &new_rows)
        .await
        .context("storing chunks")?;

    let mut committed = HashMap::new();
    let mut any_complete = false;
    for (session, gate) in &gates {
        let (committed_before, max_before) = before[session];
        let value = match (added.get_mut(session), new_indexes.get_mut(session)) {
            (Some(added), Some(indexes)) => {
                // Nothing was stored past the prefix before this batch: the
                // prefix grows by this batch's run from its end. If chunks
                // past a gap were stored already, the prefix moves only when
                // this batch fills the gap's first index; then the table says
                // how far the run now reaches. (Asking it on every batch
                // would read the whole run past the gap each time.)
                let value = if max_before.is_none_or(|max| max < committed_before) {
                    indexes.sort_unstable();
                    db::chunks::run_end(committed_before, indexes)
                } else if !indexes.contains(&committed_before) {
                    committed_before
                } else {
                    let blocks = BlockSpan::including(gate.blocks, block);
                    db::chunks::contiguous_end(&mut tx, *session, blocks, committed_before)
                        .await
                        .context("reading the stored prefix")?
                };
                added.committed = value;
                value
            }
            _ => committed_before,
        };
        any_complete |= gate.expected_chunks.is_some_and(|n| value >= n);
        committed.insert(*session, value);
    }
    let added: Vec<Added> = added.into_values().collect();
    db::chunks::apply_added(&mut tx, &added, now)
        .await
        .context("moving the sessions' counters")?;
    db::sessions::record_seen(&mut tx, &seen(touched), now)
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
    facts: &RecordingFacts,
    now: i64,
    events: Option<&Events>,
) -> anyhow::Result<MarkedReady> {
    let marked = db::finalize::mark_ready(tx, session, facts, now)
        .await
        .context("marking a session ready")?;
    if marked == MarkedReady::Ready
        && let Some(events) = events
        && let Some(row) = db::sessions::find_by_seq(tx, session).await?
    {
        events
            .record(tx, EventKind::SessionReady, &row, now)
            .await
            .context("recording a webhook event")?;
    }
    Ok(marked)
}

/// The batch's touches, one row per session: connections counted, the
/// last one's client kept.
fn seen(touched: Vec<(i64, Option<&ClientInfo>)>) -> Vec<Seen> {
    let mut by_session: HashMap<i64, Seen> = HashMap::new();
    for (session, connected) in touched {
        let seen = by_session.entry(session).or_insert_with(|| Seen {
            seq: session,
            connections: 0,
            addr: None,
            user_agent: None,
        });
        if let Some(client) = connected {
            seen.connections += 1;
            seen.addr = Some(client.addr.clone());
            seen.user_agent = client.user_agent.clone();
        }
    }
    by_session.into_values().collect()
}

/// Whether a session whose stored chunks were `(committed, max_index)`
/// before this batch may hold chunk `index` already: below the prefix, or
/// among stored chunks past a gap. Anything else is certainly new.
fn may_hold((committed, max_index): (i64, Option<i64>), index: i64) -> bool {
    index < committed || max_index.is_some_and(|max| index <= max)
}

/// Why the session's gate refuses the chunk, or `None` if it may be stored.
fn gate_chunk(gate: Option<&mut Gate>, chunk: &ChunkFrame) -> Option<Decision> {
    let Some(gate) = gate else {
        return Some(Decision::Unknown);
    };
    let state = gate.state;
    if !state.accepts_chunks() || gate.claimed {
        return Some(Decision::NotAccepting(state));
    }
    let index = i64::from(chunk.index);
    if let Some(expected) = gate.expected_chunks.filter(|&n| index >= n) {
        return Some(Decision::BeyondFinish(expected));
    }
    // Stored now or already: either way a later finish in this batch must
    // not declare fewer chunks than this.
    gate.max_index = gate.max_index.max(Some(index));
    None
}

async fn decide_finish(
    tx: &mut SqliteConnection,
    session: i64,
    gate: Option<&mut Gate>,
    chunks: i64,
    now: i64,
) -> anyhow::Result<Decision> {
    let Some(gate) = gate else {
        return Ok(Decision::Unknown);
    };
    let state = gate.state;
    if let Some(expected) = gate.expected_chunks {
        return Ok(if expected == chunks {
            Decision::Finished(chunks)
        } else {
            Decision::CountMismatch(expected)
        });
    }
    // Claimed (by the idle finalizer): what goes in is already decided.
    if !state.accepts_chunks() || gate.claimed {
        return Ok(Decision::NotAccepting(state));
    }
    if let Some(max_index) = gate.max_index.filter(|&max| max >= chunks) {
        return Ok(Decision::BelowReceived(max_index));
    }
    db::chunks::set_finished(tx, session, chunks, now)
        .await
        .context("recording finish")?;
    gate.expected_chunks = Some(chunks);
    Ok(Decision::Finished(chunks))
}

pub(super) fn answer(
    batch: Vec<Request>,
    decisions: Vec<Decision>,
    committed: &HashMap<i64, i64>,
    metrics: &Metrics,
) {
    for (request, decision) in batch.into_iter().zip(decisions) {
        match request {
            Request::Chunk {
                session,
                chunk,
                reply,
                queued_at,
                ..
            } => {
                metrics.chunk_answered(queued_at.elapsed());
                let committed = committed.get(&session).copied().unwrap_or(0);
                let outcome = match decision {
                    Decision::Stored => ChunkOutcome::Stored { committed },
                    Decision::Duplicate => ChunkOutcome::Duplicate { committed },
                    Decision::Conflict => ChunkOutcome::Conflict { index: chunk.index },
                    Decision::NotAccepting(state) => ChunkOutcome::NotAccepting { state },
                    Decision::BeyondFinish(expected) => ChunkOutcome::BeyondFinish { expected },
                    _ => ChunkOutcome::UnknownSession,
                };
                count(metrics, &outcome, chunk.payload.len());
                let _ = reply.send(Ok(outcome)); // the connection may have gone; the chunk is stored all the same
            }
            Request::Finish { session, reply, .. } => {
                let committed = committed.get(&session).copied().unwrap_or(0);
                let outcome = match decision {
                    Decision::Finished(chunks) => FinishOutcome::Accepted { committed, chunks },
                    Decision::CountMismatch(expected) => FinishOutcome::CountMismatch { expected },
                    Decision::BelowReceived(max_index) => {
                        FinishOutcome::BelowReceived { max_index }
                    }
                    Decision::NotAccepting(state) => FinishOutcome::NotAccepting { state },
                    _ => FinishOutcome::UnknownSession,
                };
                let _ = reply.send(Ok(outcome));
            }
            Request::Touch { .. } => {}
            Request::MarkReady { reply, events, .. } => {
                if let Decision::MarkedReady(marked) = decision {
                    if let Some(events) = events {
                        events.committed(); // wakes the dispatcher
                    }
                    let _ = reply.send(Ok(marked));
                }
            }
            Request::DeleteChunks { reply, .. } => {
                let deleted = match decision {
                    Decision::Deleted(deleted) => deleted,
                    _ => 0,
                };
                let _ = reply.send(Ok(deleted));
            }
        }
    }
}

fn count(metrics: &Metrics, outcome: &ChunkOutcome, bytes: usize) {
    match outcome {
        ChunkOutcome::Stored { .. } => metrics.chunk_stored(bytes),
        ChunkOutcome::Duplicate { .. } => metrics.chunk_duplicate(),
        ChunkOutcome::Conflict { .. } => metrics.chunk_conflict(),
        ChunkOutcome::NotAccepting { .. } => metrics.chunk_refused(Refused::SessionClosed),
        ChunkOutcome::BeyondFinish { .. } => metrics.chunk_refused(Refused::BeyondFinish),
        ChunkOutcome::UnknownSession => metrics.chunk_refused(Refused::UnknownSession),
    }
}

pub(super) fn fail(batch: Vec<Request>, err: Arc<anyhow::Error>) {
    for request in batch {
        match request {
            Request::Chunk { reply, .. } => drop(reply.send(Err(WriteError::Storage(err.clone())))),
            Request::Finish { reply, .. } => {
                drop(reply.send(Err(WriteError::Storage(err.clone()))))
            }
            Request::Touch { .. } => {}
            Request::MarkReady { reply, .. } => {
                drop(reply.send(Err(WriteError::Storage(err.clone()))))
            }
            Request::DeleteChunks { reply, .. } => {
                drop(reply.send(Err(WriteError::Storage(err.clone()))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::{Semaphore, oneshot};

    use super::*;
    use crate::domain::{MimeType, SessionId, Token};

    async fn session(pool: &sqlx::SqlitePool) -> i64 {
        let id = SessionId::generate();
        let new = db::sessions::NewSession {
            id: &id,
            token_hash: &Token::generate().hash(),
            mime_type: &MimeType::octet_stream(),
            metadata_json: "{}",
        };
        db::sessions::insert_session(pool, new, 0).await.unwrap();
        sqlx::query_scalar("SELECT seq FROM sessions WHERE public_id = ?1")
            .bind(id.as_str())
            .fetch_one(pool)
            .await
            .unwrap()
    }

    fn chunk(session: i64, index: u32, byte: u8) -> Request {
        let frame = ChunkFrame::encode(index, index == 0, &[byte; 16]);
        let (reply, _) = oneshot::channel();
        Request::Chunk {
            session,
            chunk: ChunkFrame::parse(frame.into(), 16).unwrap(),
            reply,
            _permit: std::sync::Arc::new(Semaphore::new(1))
                .try_acquire_owned()
                .unwrap(),
            queued_at: std::time::Instant::now(),
        }
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
        let pool = db::open_pool(&path).await.unwrap();
        let (a, b) = (session(&pool).await, session(&pool).await);
        let mut conn = db::open_writer_connection(&path).await.unwrap();

        let first = [
            chunk(a, 0, 1),
            chunk(a, 2, 1),
            chunk(a, 0, 1),
            chunk(a, 2, 9),
            chunk(a, 1, 1),
            chunk(b, 1, 1),
            chunk(9_999, 0, 1),
        ];
        let done = commit_batch(&mut conn, 1, &first).await.unwrap();
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
        let second = [
            chunk(b, 0, 1),
            Request::Touch {
                session: b,
                connected: Some(client("10.0.0.1:1")),
            },
            chunk(b, 1, 1),
            chunk(b, 1, 7),
            Request::Touch {
                session: b,
                connected: Some(client("10.0.0.2:2")),
            },
            Request::Touch {
                session: b,
                connected: None,
            },
            chunk(a, 3, 1),
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

    fn delete(session: i64, limit: i64) -> Request {
        let (reply, _) = oneshot::channel();
        Request::DeleteChunks {
            session,
            limit,
            reply,
        }
    }

    /// A session whose chunks arrive in several arrival blocks: resends of
    /// chunks stored in earlier blocks are duplicates or conflicts, a gap
    /// filled later moves `committed`, the finalize read returns one row per
    /// index in order, and deleting walks every block and then forgets the span.
    #[tokio::test]
    async fn a_session_spread_over_blocks_behaves_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let pool = db::open_pool(&path).await.unwrap();
        let a = session(&pool).await;
        let mut conn = db::open_writer_connection(&path).await.unwrap();

        let done = commit_batch(
            &mut conn,
            1,
            &[chunk(a, 0, 1), chunk(a, 1, 1), chunk(a, 3, 1)],
        )
        .await
        .unwrap();
        assert_eq!(done.committed[&a], 2);
        assert_eq!(done.stored_rows, 3);
        let done = commit_batch(
            &mut conn,
            2,
            &[chunk(a, 4, 1), chunk(a, 1, 1), chunk(a, 3, 2)],
        )
        .await
        .unwrap();
        assert_eq!(kinds(&done.decisions), ["stored", "duplicate", "conflict"]);
        assert_eq!(done.stored_rows, 1);
        assert_eq!(done.committed[&a], 2, "chunk 2 is still missing");
        let done = commit_batch(&mut conn, 5, &[chunk(a, 2, 1), chunk(a, 0, 3)])
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
        let read: Vec<(i64, u8)> = db::chunks::stream_prefix(&pool, a, 5)
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
            db::chunks::stored_indexes(&pool, a).await.unwrap(),
            [0, 1, 2, 3, 4]
        );

        let deleted = |done: Committed| match done.decisions[0] {
            Decision::Deleted(n) => n,
            ref other => panic!("{other:?}"),
        };
        assert_eq!(
            deleted(commit_batch(&mut conn, 5, &[delete(a, 2)]).await.unwrap()),
            2
        );
        assert_eq!(
            deleted(commit_batch(&mut conn, 5, &[delete(a, 10)]).await.unwrap()),
            3
        );
        assert_eq!(
            deleted(commit_batch(&mut conn, 5, &[delete(a, 10)]).await.unwrap()),
            0
        );
        let span: (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT first_block, last_block FROM sessions WHERE seq = ?1")
                .bind(a)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(span, (None, None));
        assert_eq!(
            db::chunks::next_session_with_chunks(&pool, 0)
                .await
                .unwrap(),
            None
        );
    }
}
