//! The chunk writer: the only code that writes chunks.
//!
//! Connections submit chunks (and finishes) through a [`WriterHandle`]; one
//! task drains whatever is waiting, from every connection, into a single
//! `BEGIN IMMEDIATE` transaction, commits it (fsync included, as
//! `synchronous=FULL` makes it), and only then answers each submitter. SQLite
//! has no group commit across connections, so this is where it is built: one
//! fsync covers the whole batch. A lone chunk is committed at once; under load
//! batches grow up to [`MAX_BATCH_ROWS`] / [`MAX_BATCH_BYTES`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use anyhow::Context;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::db::{self, chunks::Added, chunks::Gate};
use crate::domain::{ChunkFrame, SessionState};
use crate::metrics::Metrics;

const MAX_BATCH_ROWS: usize = 1000;
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Payload bytes that may wait for the writer at once, across all
/// connections: the bound on the queue's memory.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// The result of submitting a chunk, known only after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Stored now; every index below `committed` is durable.
    Stored {
        committed: i64,
    },
    /// Already stored with the same CRC: dropped, counts as stored.
    Duplicate {
        committed: i64,
    },
    /// Already stored with another CRC: nothing overwritten.
    Conflict {
        index: u32,
    },
    /// The session no longer takes chunks.
    NotAccepting {
        state: SessionState,
    },
    /// The index is at or past the count declared by `finish`.
    BeyondFinish {
        expected: i64,
    },
    UnknownSession,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishOutcome {
    Accepted {
        committed: i64,
        chunks: i64,
    },
    /// `finish` already declared another count.
    CountMismatch {
        expected: i64,
    },
    /// A chunk at or past the declared count is already stored.
    BelowReceived {
        max_index: i64,
    },
    NotAccepting {
        state: SessionState,
    },
    UnknownSession,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the chunk store failed: {0:#}")]
    Storage(Arc<anyhow::Error>),
    #[error("the writer has stopped")]
    Stopped,
}

enum Request {
    Chunk {
        session: i64,
        chunk: ChunkFrame,
        reply: oneshot::Sender<Result<ChunkOutcome, WriteError>>,
        _permit: OwnedSemaphorePermit,
    },
    Finish {
        session: i64,
        chunks: i64,
        reply: oneshot::Sender<Result<FinishOutcome, WriteError>>,
    },
}

/// Cheap to clone; every connection holds one.
#[derive(Clone)]
pub struct WriterHandle {
    requests: mpsc::UnboundedSender<Request>,
    queued_bytes: Arc<Semaphore>,
}

/// Resolves once the chunk's batch has committed.
pub type PendingChunk = oneshot::Receiver<Result<ChunkOutcome, WriteError>>;

impl WriterHandle {
    /// Queues a chunk; waits only while the queue is at its byte bound.
    pub async fn submit_chunk(
        &self,
        session: i64,
        chunk: ChunkFrame,
    ) -> Result<PendingChunk, WriteError> {
        let cost = u32::try_from(chunk.payload.len().max(1)).unwrap_or(u32::MAX);
        let permit = self
            .queued_bytes
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| WriteError::Stopped)?;
        let (reply, pending) = oneshot::channel();
        self.requests
            .send(Request::Chunk {
                session,
                chunk,
                reply,
                _permit: permit,
            })
            .map_err(|_| WriteError::Stopped)?;
        Ok(pending)
    }

    /// Declares the chunk count; resolves after the commit.
    pub async fn finish(&self, session: i64, chunks: i64) -> Result<FinishOutcome, WriteError> {
        let (reply, pending) = oneshot::channel();
        self.requests
            .send(Request::Finish {
                session,
                chunks,
                reply,
            })
            .map_err(|_| WriteError::Stopped)?;
        pending.await.map_err(|_| WriteError::Stopped)?
    }
}

/// Starts the writer on its own connection. It runs until every handle is
/// dropped and the queue is drained, so shutdown commits what it holds.
/// After `stop` is cancelled it takes no new request but commits and
/// answers every one already queued, then closes its connection.
pub fn spawn(
    conn: SqliteConnection,
    metrics: Arc<Metrics>,
    finalize_wakeup: Arc<Notify>,
    stop: CancellationToken,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (requests, receiver) = mpsc::unbounded_channel();
    let queued_bytes = Arc::new(Semaphore::new(MAX_QUEUED_BYTES));
    let task = tokio::spawn(run(conn, receiver, metrics, finalize_wakeup, stop));
    (
        WriterHandle {
            requests,
            queued_bytes,
        },
        task,
    )
}

async fn run(
    mut conn: SqliteConnection,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    metrics: Arc<Metrics>,
    finalize_wakeup: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut waiting = Vec::with_capacity(MAX_BATCH_ROWS);
    let mut stopping = false;
    loop {
        let received = tokio::select! {
            received = receiver.recv_many(&mut waiting, MAX_BATCH_ROWS) => received,
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                receiver.close(); // what is queued is still received below
                continue;
            }
        };
        if received == 0 {
            break;
        }
        while !waiting.is_empty() {
            let batch = take_batch(&mut waiting);
            let rows = batch.len();
            match commit_batch(&mut conn, &batch).await {
                Ok(committed) => {
                    metrics.writer_batch(rows);
                    if committed.any_complete {
                        finalize_wakeup.notify_one();
                    }
                    answer(batch, committed.decisions, &committed.committed, &metrics);
                }
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), rows, "chunk batch failed; submitters get an error");
                    fail(batch, Arc::new(err));
                }
            }
        }
    }
    if let Err(err) = conn.close().await {
        tracing::warn!(error = %err, "closing the writer's connection");
    }
    tracing::debug!("chunk writer stopped");
}

/// Takes requests off the front of `waiting` up to the batch bounds.
fn take_batch(waiting: &mut Vec<Request>) -> Vec<Request> {
    let mut bytes = 0;
    let mut take = 0;
    for request in waiting.iter() {
        let size = match request {
            Request::Chunk { chunk, .. } => chunk.payload.len(),
            Request::Finish { .. } => 0,
        };
        if take > 0 && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        take += 1;
    }
    waiting.drain(..take).collect()
}

/// What the transaction decided for each request, before `committed` is known.
#[derive(Debug, Clone)]
enum Decision {
    Stored,
    Duplicate,
    Conflict,
    NotAccepting(SessionState),
    BeyondFinish(i64),
    Unknown,
    Finished(i64),
    CountMismatch(i64),
    BelowReceived(i64),
}

struct Committed {
    decisions: Vec<Decision>,
    committed: HashMap<i64, i64>,
    any_complete: bool,
}

async fn commit_batch(conn: &mut SqliteConnection, batch: &[Request]) -> anyhow::Result<Committed> {
    let now = db::now_ms();
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .context("beginning the batch")?;
    let mut gates: HashMap<i64, Option<Gate>> = HashMap::new();
    let mut added: HashMap<i64, Added> = HashMap::new();
    let mut decisions = Vec::with_capacity(batch.len());
    for request in batch {
        let session = match request {
            Request::Chunk { session, .. } | Request::Finish { session, .. } => *session,
        };
        let gate = match gates.entry(session) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => new.insert(
                db::chunks::session_gate(&mut tx, session)
                    .await
                    .context("reading a session's state")?,
            ),
        };
        let decision = match request {
            Request::Chunk { chunk, .. } => {
                decide_chunk(
                    &mut tx,
                    session,
                    gate,
                    chunk,
                    added.entry(session).or_default(),
                )
                .await?
            }
            Request::Finish { chunks, .. } => {
                decide_finish(&mut tx, session, gate, *chunks, now).await?
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
    let state = SessionState::parse(&gate.state)?;
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
    let state = SessionState::parse(&gate.state)?;
    if let Some(expected) = gate.expected_chunks {
        return Ok(if expected == chunks {
            Decision::Finished(chunks)
        } else {
            Decision::CountMismatch(expected)
        });
    }
    if !state.accepts_chunks() {
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

fn answer(
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
                ..
            } => {
                let committed = committed.get(&session).copied().unwrap_or(0);
                let outcome = match decision {
                    Decision::Stored => ChunkOutcome::Stored { committed },
                    Decision::Duplicate => ChunkOutcome::Duplicate { committed },
                    Decision::Conflict => ChunkOutcome::Conflict { index: chunk.index },
                    Decision::NotAccepting(state) => ChunkOutcome::NotAccepting { state },
                    Decision::BeyondFinish(expected) => ChunkOutcome::BeyondFinish { expected },
                    _ => ChunkOutcome::UnknownSession,
                };
                metrics.chunk_outcome(&outcome, chunk.payload.len());
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
        }
    }
}

fn fail(batch: Vec<Request>, err: Arc<anyhow::Error>) {
    for request in batch {
        match request {
            Request::Chunk { reply, .. } => drop(reply.send(Err(WriteError::Storage(err.clone())))),
            Request::Finish { reply, .. } => {
                drop(reply.send(Err(WriteError::Storage(err.clone()))))
            }
        }
    }
}
