//! One batch: a single `BEGIN IMMEDIATE` transaction that stores every
//! chunk it can, records finishes, moves each touched session's counters and
//! `committed`, and commits; then each submitter gets its answer.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use anyhow::Context;
use sqlx::{Connection, SqliteConnection};

use super::{ChunkOutcome, FinishOutcome, Request, WriteError};
use crate::db::{self, chunks::Added, chunks::Gate};
use crate::domain::{ChunkFrame, SessionState};
use crate::metrics::{Metrics, Refused};

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
}

/// The session's gate, read once per batch.
async fn gate_for<'a>(
    tx: &mut SqliteConnection,
    gates: &'a mut HashMap<i64, Option<Gate>>,
    session: i64,
) -> anyhow::Result<&'a mut Option<Gate>> {
    Ok(match gates.entry(session) {
        Entry::Occupied(known) => known.into_mut(),
        Entry::Vacant(new) => new.insert(
            db::chunks::session_gate(tx, session)
                .await
                .context("reading a session's state")?,
        ),
    })
}

pub(super) struct Committed {
    pub(super) decisions: Vec<Decision>,
    pub(super) committed: HashMap<i64, i64>,
    pub(super) any_complete: bool,
}

pub(super) async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &[Request],
) -> anyhow::Result<Committed> {
    let now = db::now_ms();
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .context("beginning the batch")?;
    let mut gates: HashMap<i64, Option<Gate>> = HashMap::new();
    let mut added: HashMap<i64, Added> = HashMap::new();
    let mut decisions = Vec::with_capacity(batch.len());
    let mut touched = Vec::new();
    for request in batch {
        let decision = match request {
            Request::Chunk { session, chunk, .. } => {
                let gate = gate_for(&mut tx, &mut gates, *session).await?;
                let added = added.entry(*session).or_default();
                decide_chunk(&mut tx, *session, gate, chunk, added).await?
            }
            Request::Finish {
                session, chunks, ..
            } => {
                let gate = gate_for(&mut tx, &mut gates, *session).await?;
                decide_finish(&mut tx, *session, gate, *chunks, now).await?
            }
            Request::DeleteChunks { session, limit, .. } => {
                let deleted = db::chunks::delete_slice(&mut tx, *session, *limit)
                    .await
                    .context("deleting chunks")?;
                Decision::Deleted(deleted)
            }
            Request::Touch { session, connected } => {
                touched.push((*session, connected.as_ref()));
                Decision::Touched
            }
        };
        decisions.push(decision);
    }
    let mut committed = HashMap::new();
    let mut any_complete = false;
    for (session, gate) in &gates {
        let Some(gate) = gate else { continue };
        let value = match added.get(session) {
            Some(added) if added.chunks > 0 => {
                db::chunks::apply_added(&mut tx, *session, added, now).await?
            }
            _ => db::chunks::committed(&mut tx, *session).await?,
        };
        any_complete |= gate.expected_chunks.is_some_and(|n| value >= n);
        committed.insert(*session, value);
    }
    for (session, connected) in touched {
        if let Some(client) = connected {
            db::sessions::record_connection(&mut tx, session, client, now).await?;
        } else {
            db::sessions::touch_session(&mut tx, session, now).await?;
        }
    }
    tx.commit().await.context("committing the batch")?;
    Ok(Committed {
        decisions,
        committed,
        any_complete,
    })
}

async fn decide_chunk(
    tx: &mut SqliteConnection,
    session: i64,
    gate: &mut Option<Gate>,
    chunk: &ChunkFrame,
    added: &mut Added,
) -> anyhow::Result<Decision> {
    let Some(gate) = gate else {
        return Ok(Decision::Unknown);
    };
    let state = gate.state;
    if !state.accepts_chunks() || gate.claimed {
        return Ok(Decision::NotAccepting(state));
    }
    let index = i64::from(chunk.index);
    if let Some(expected) = gate.expected_chunks.filter(|&n| index >= n) {
        return Ok(Decision::BeyondFinish(expected));
    }
    if db::chunks::insert_chunk(tx, session, chunk)
        .await
        .context("storing a chunk")?
    {
        added.chunks += 1;
        added.bytes += chunk.payload.len() as i64;
        added.max_index = added.max_index.max(Some(index));
        gate.max_index = gate.max_index.max(Some(index));
        return Ok(Decision::Stored);
    }
    let stored = db::chunks::stored_crc(tx, session, chunk.index)
        .await
        .context("reading a stored chunk's CRC")?;
    Ok(if stored == Some(chunk.crc32c) {
        Decision::Duplicate
    } else {
        Decision::Conflict
    })
}

async fn decide_finish(
    tx: &mut SqliteConnection,
    session: i64,
    gate: &mut Option<Gate>,
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
            Request::DeleteChunks { reply, .. } => {
                drop(reply.send(Err(WriteError::Storage(err.clone()))))
            }
        }
    }
}
