//! A batch as the writer sees it: the requests become the database's
//! [`Write`]s, one transaction commits them (see [`crate::db::ChunkWriter`]),
//! then each submitter gets its answer.

use std::sync::Arc;

use super::{ChunkOutcome, FinishOutcome, Request, WriteError};
use crate::db::batch::{Decision, Write};
use crate::db::webhooks::EventFor;
use crate::metrics::{Metrics, Refused};
use crate::webhooks::EventKind;

/// The webhook event each `MarkReady` request records, if any; built before
/// the writes, which borrow them.
pub(super) fn event_builders(batch: &[Request]) -> Vec<Option<Box<EventFor>>> {
    batch
        .iter()
        .map(|request| match request {
            Request::MarkReady {
                events: Some(events),
                now,
                ..
            } => Some(events.event_for(EventKind::SessionReady, *now)),
            _ => None,
        })
        .collect()
}

/// The batch's requests as database writes.
pub(super) fn writes<'a>(
    batch: &'a [Request],
    events: &'a [Option<Box<EventFor>>],
) -> Vec<Write<'a>> {
    batch
        .iter()
        .zip(events)
        .map(|(request, event)| match request {
            Request::Chunk { session, chunk, .. } => Write::Chunk {
                session: *session,
                chunk,
            },
            Request::Finish {
                session, chunks, ..
            } => Write::Finish {
                session: *session,
                chunks: *chunks,
            },
            Request::Touch { session, connected } => Write::Touch {
                session: *session,
                connected: connected.as_ref(),
            },
            Request::MarkReady {
                session,
                claimed_at,
                facts,
                now,
                ..
            } => Write::MarkReady {
                session: *session,
                claimed_at: *claimed_at,
                facts,
                now: *now,
                event: event.as_deref(),
            },
            Request::DeleteChunks { session, limit, .. } => Write::DeleteChunks {
                session: *session,
                limit: *limit,
            },
        })
        .collect()
}

pub(super) fn answer(
    batch: Vec<Request>,
    decisions: Vec<Decision>,
    committed: &std::collections::HashMap<i64, i64>,
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
