//! The chunk writer: the only code that writes chunks.
//!
//! Connections submit chunks (and finishes) through a [`WriterHandle`]; one
//! task drains whatever is waiting, from every connection, into a single
//! transaction ([`ChunkWriter::commit_batch`]), commits it (durably: SQLite's
//! `synchronous=FULL`, PostgreSQL's `synchronous_commit=on`), and only then
//! answers each submitter. Neither database groups commits of separate
//! transactions as well as this does: one fsync covers the whole batch. A lone chunk is committed at once; under load
//! batches grow up to `MAX_BATCH_ROWS` / `MAX_BATCH_BYTES`. Chunk deletes
//! (of finished, failed and deleted sessions, a slice at a time) and the
//! finalize job's `ready` marks ride in the same batches, so they never
//! contend with chunk writes for the lock and share their fsyncs.

mod batch;
pub mod checkpoint;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::db::ChunkWriter;
use crate::db::finalize::{MarkedReady, RecordingFacts};
use crate::db::sessions::ClientInfo;
use crate::domain::{ChunkFrame, SessionState};
use crate::metrics::Metrics;
use crate::webhooks::Events;

/// Most requests in one batch (one transaction).
pub const MAX_BATCH_ROWS: usize = 1000;
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
        /// When it was submitted: its ack latency is measured from here.
        queued_at: std::time::Instant,
    },
    Finish {
        session: i64,
        chunks: i64,
        reply: oneshot::Sender<Result<FinishOutcome, WriteError>>,
    },
    /// A client connected (`connected` says who) or is still connected:
    /// counts the connection and keeps the idle finalizer away. Rides in the next batch
    /// instead of taking the write lock itself, which a reconnect storm of
    /// thousands of sockets would otherwise do thousands of times.
    Touch {
        session: i64,
        connected: Option<ClientInfo>,
    },
    /// Marks a finalized session ready (and records its webhook event, if
    /// `events`), in the batch's commit: many finalize steps share one fsync.
    MarkReady {
        session: i64,
        /// The finalize step's claim: `ready` commits only while it holds.
        claimed_at: i64,
        facts: Box<RecordingFacts>,
        now: i64,
        events: Option<Events>,
        reply: oneshot::Sender<Result<MarkedReady, WriteError>>,
    },
    /// Deletes up to `limit` of the session's chunks; answers how many went.
    DeleteChunks {
        session: i64,
        limit: i64,
        reply: oneshot::Sender<Result<u64, WriteError>>,
    },
}

/// Chunks deleted per request: small, so no batch grows long because of it.
const DELETE_SLICE: i64 = 256;

/// Cheap to clone; every connection holds one.
#[derive(Clone)]
pub struct WriterHandle {
    requests: mpsc::UnboundedSender<Request>,
    queued_bytes: Arc<Semaphore>,
    lag: Arc<Lag>,
}

/// How far behind the writer is: the longest a chunk of its latest batch
/// waited from submission to commit. Connections read it to shed load
/// before acks slow down for everyone.
#[derive(Debug)]
pub struct Lag {
    millis: AtomicU64,
    /// When it was measured, in ms since `started`.
    at: AtomicU64,
    started: std::time::Instant,
}

impl Lag {
    /// A measurement older than this says nothing (an idle writer has no lag).
    const FRESH: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self {
            millis: AtomicU64::new(0),
            at: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn record(&self, waited: Duration) {
        self.millis
            .store(waited.as_millis() as u64, Ordering::Relaxed);
        self.at.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn current(&self) -> Duration {
        let at = self.at.load(Ordering::Relaxed);
        if self.now_ms().saturating_sub(at) > Self::FRESH.as_millis() as u64 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

/// Resolves once the chunk's batch has committed.
pub type PendingChunk = oneshot::Receiver<Result<ChunkOutcome, WriteError>>;

impl WriterHandle {
    /// How far behind the writer is now (see [`Lag`]).
    pub fn lag(&self) -> Duration {
        self.lag.current()
    }

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
                queued_at: std::time::Instant::now(),
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

    /// Marks a finalized session ready, with its webhook event when `events`
    /// is given; resolves after the commit.
    pub async fn mark_ready(
        &self,
        session: i64,
        claimed_at: i64,
        facts: RecordingFacts,
        now: i64,
        events: Option<Events>,
    ) -> Result<MarkedReady, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::MarkReady {
                session,
                claimed_at,
                facts: Box::new(facts),
                now,
                events,
                reply,
            })
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Deletes every chunk of a session, a slice per batch. Returns how many.
    pub async fn delete_chunks(&self, session: i64) -> Result<u64, WriteError> {
        let mut deleted = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            self.requests
                .send(Request::DeleteChunks {
                    session,
                    limit: DELETE_SLICE,
                    reply,
                })
                .map_err(|_| WriteError::Stopped)?;
            match answer.await.map_err(|_| WriteError::Stopped)?? {
                0 => return Ok(deleted),
                slice => deleted += slice,
            }
        }
    }

    /// Marks the session as seen, in the next batch; best effort.
    pub fn touch(&self, session: i64) {
        let _ = self.requests.send(Request::Touch {
            session,
            connected: None,
        });
    }

    /// Counts a new connection and marks the session as seen, in the next batch; best effort.
    pub fn connected(&self, session: i64, client: ClientInfo) {
        let _ = self.requests.send(Request::Touch {
            session,
            connected: Some(client),
        });
    }
}

/// Starts the writer on its own connection and thread. After `stop` is cancelled it
/// takes no new request, but commits and answers every one already queued
/// (so shutdown loses nothing it accepted), then closes its connection.
pub fn spawn(
    store: Box<dyn ChunkWriter>,
    batch_rows: usize,
    metrics: Arc<Metrics>,
    finalize_wakeup: Arc<Notify>,
    stop: CancellationToken,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (requests, receiver) = mpsc::unbounded_channel();
    let queued_bytes = Arc::new(Semaphore::new(MAX_QUEUED_BYTES));
    let lag = Arc::new(Lag::new());
    let measured = lag.clone();
    // Its own thread and runtime: each statement is an await, and on the
    // shared runtime every one of them queued behind thousands of socket
    // tasks. Alone, the writer goes from statement to statement at once.
    let task = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        runtime.block_on(run(
            store,
            receiver,
            batch_rows.clamp(1, MAX_BATCH_ROWS),
            metrics,
            finalize_wakeup,
            measured,
            stop,
        ));
    });
    (
        WriterHandle {
            requests,
            queued_bytes,
            lag,
        },
        task,
    )
}

async fn run(
    mut store: Box<dyn ChunkWriter>,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    batch_rows: usize,
    metrics: Arc<Metrics>,
    finalize_wakeup: Arc<Notify>,
    lag: Arc<Lag>,
    stop: CancellationToken,
) {
    let mut waiting = Vec::with_capacity(batch_rows);
    let mut stopping = false;
    loop {
        let received = tokio::select! {
            received = receiver.recv_many(&mut waiting, batch_rows) => received,
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
            let batch = take_batch(&mut waiting, batch_rows);
            let rows = batch.len();
            let started = std::time::Instant::now();
            let oldest = batch
                .iter()
                .filter_map(|request| match request {
                    Request::Chunk { queued_at, .. } => Some(*queued_at),
                    _ => None,
                })
                .min();
            let events = batch::event_builders(&batch);
            let result = store.commit_batch(&batch::writes(&batch, &events)).await;
            match result {
                Ok(committed) => {
                    metrics.writer_batch(rows, started.elapsed());
                    if let Some(oldest) = oldest {
                        lag.record(oldest.elapsed());
                    }
                    if committed.any_complete {
                        finalize_wakeup.notify_one();
                    }
                    batch::answer(batch, committed.decisions, &committed.committed, &metrics);
                }
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), rows, "chunk batch failed; submitters get an error");
                    batch::fail(batch, Arc::new(err));
                }
            }
        }
    }
    store.close().await;
    tracing::debug!("chunk writer stopped");
}

/// Takes requests off the front of `waiting` up to the batch bounds.
fn take_batch(waiting: &mut Vec<Request>, rows: usize) -> Vec<Request> {
    let mut bytes = 0;
    let mut take = 0;
    for request in waiting.iter() {
        let size = match request {
            Request::Chunk { chunk, .. } => chunk.payload.len(),
            Request::Finish { .. }
            | Request::Touch { .. }
            | Request::MarkReady { .. }
            | Request::DeleteChunks { .. } => 0,
        };
        if take > 0 && (bytes + size > MAX_BATCH_BYTES || take == rows) {
            break;
        }
        bytes += size;
        take += 1;
    }
    waiting.drain(..take).collect()
}
