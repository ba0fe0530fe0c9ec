//! The finalize job: turns a session's chunks into its recording.
//!
//! A loop ([`run`]) around a step ([`Finalizer::try_finalize_next`]) that
//! claims one due session, joins its chunks into a file that is durable
//! before anything else changes, then — in one transaction — marks the
//! session `ready` and deletes its chunks. A crash anywhere in between leaves
//! the claim, which the next start releases, and the step runs again from
//! the chunks; the old temporary file is swept and the rename is atomic, so
//! there is never a half file served nor a chunk deleted too soon.

pub mod join;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::SqlitePool;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::{self, finalize::Claim, finalize::RecordingFacts};
use crate::domain::MimeType;
use crate::metrics::Metrics;
use crate::storage::LocalRecordings;

/// Attempts before a session that keeps failing is marked `failed`.
const MAX_ATTEMPTS: i64 = 5;
/// How often idle sessions are looked for when nothing wakes the job.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This session is now `ready`.
    Ready(String),
    /// This session is now `failed`, or will be retried after its lease.
    Failed(String),
    /// This session was deleted while it was being finalized.
    Discarded(String),
    /// Nothing is due.
    Idle,
}

/// Everything the finalize job needs; cheap to clone.
#[derive(Clone)]
pub struct Finalizer {
    pub pool: SqlitePool,
    pub recordings: LocalRecordings,
    pub metrics: Arc<Metrics>,
    pub idle_after: Duration,
    /// Woken by the writer when a finished session has all its chunks.
    pub wakeup: Arc<Notify>,
    /// Tells open sockets that a session (by seq) became ready or failed.
    pub finalized: broadcast::Sender<i64>,
}

impl Finalizer {
    /// Claims the next due session, if any, and finalizes it.
    pub async fn try_finalize_next(&self) -> anyhow::Result<Outcome> {
        let now = db::now_ms();
        let idle_cutoff = now - i64::try_from(self.idle_after.as_millis()).unwrap_or(i64::MAX);
        match db::finalize::claim_next(&self.pool, now, idle_cutoff)
            .await
            .context("claiming a session to finalize")?
        {
            Some(claim) => Ok(self.finalize_claimed(claim).await),
            None => Ok(Outcome::Idle),
        }
    }

    /// Finalizes a claimed session; failures are counted against the session.
    pub async fn finalize_claimed(&self, claim: Claim) -> Outcome {
        let span = tracing::info_span!("finalize", session = %claim.public_id);
        self.finalize_claimed_inner(claim).instrument(span).await
    }

    async fn finalize_claimed_inner(&self, claim: Claim) -> Outcome {
        let id = claim.public_id.clone();
        let result = self.build_recording(&claim).await;
        let now = db::now_ms();
        let outcome = match result {
            Ok(Some(facts)) => match db::finalize::mark_ready(&self.pool, claim.seq, &facts, now)
                .await
            {
                Ok(true) => {
                    tracing::info!(
                        bytes = facts.bytes,
                        complete = facts.complete,
                        "recording ready"
                    );
                    self.metrics.finalized();
                    Ok(Outcome::Ready(id.clone()))
                }
                Ok(false) => {
                    tracing::info!("session deleted while finalizing; discarding its recording");
                    self.recordings
                        .delete(&id)
                        .await
                        .map(|()| Outcome::Discarded(id.clone()))
                }
                Err(e) => Err(anyhow::Error::from(e).context("marking the session ready")),
            },
            Ok(None) => {
                tracing::warn!("no chunks were received; session failed");
                db::finalize::mark_failed(&self.pool, claim.seq, "no chunks were received", now)
                    .await
                    .map(|()| Outcome::Failed(id.clone()))
                    .map_err(anyhow::Error::from)
            }
            Err(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => self.count_failure(&claim, err).await,
        };
        let _ = self.finalized.send(claim.seq); // nobody listening is fine
        outcome
    }

    async fn count_failure(&self, claim: &Claim, err: anyhow::Error) -> Outcome {
        self.metrics.finalize_failed();
        let now = db::now_ms();
        match db::finalize::record_attempt_failed(&self.pool, claim.seq, now).await {
            Ok(attempts) if attempts >= MAX_ATTEMPTS => {
                tracing::error!(error = %format!("{err:#}"), attempts, "finalize keeps failing; session marked failed (its chunks are kept)");
                let reason = format!("finalize failed {attempts} times: {err:#}");
                if let Err(e) = db::finalize::mark_failed(&self.pool, claim.seq, &reason, now).await
                {
                    tracing::error!(error = %e, "could not mark the session failed");
                }
            }
            Ok(attempts) => {
                tracing::error!(error = %format!("{err:#}"), attempts, "finalize failed; will retry")
            }
            Err(e) => {
                tracing::error!(error = %format!("{err:#}"), count_error = %e, "finalize failed")
            }
        }
        Outcome::Failed(claim.public_id.clone())
    }

    /// Joins the chunks into a durable file. `None` when there is nothing to join.
    pub async fn build_recording(&self, claim: &Claim) -> anyhow::Result<Option<RecordingFacts>> {
        let complete = claim.expected_chunks.is_some_and(|n| claim.committed >= n);
        // Only the contiguous prefix goes in: a chunk after a gap cannot be placed.
        let count = if complete {
            claim.expected_chunks.unwrap_or(claim.committed)
        } else {
            claim.committed
        };
        if count == 0 {
            return Ok(None);
        }
        let mime = MimeType::parse(&claim.mime_type).unwrap_or_else(|_| MimeType::octet_stream());
        let mut expected_idx = 0;
        let chunks = db::chunks::stream_prefix(&self.pool, claim.seq, count)
            .map_err(anyhow::Error::from)
            .map(|chunk| {
                let chunk = chunk?;
                anyhow::ensure!(
                    chunk.idx == expected_idx,
                    "chunk {expected_idx} is missing from the stored prefix"
                );
                expected_idx += 1;
                Ok(chunk.payload)
            });
        let mut out = self.recordings.create(&claim.public_id).await?;
        let joined = match join::join_chunks(&mime, Box::pin(chunks), &mut out).await {
            Ok(joined) if expected_idx == count => joined,
            Ok(_) => {
                out.abandon().await;
                anyhow::bail!("only {expected_idx} of {count} chunks could be read");
            }
            Err(e) => {
                out.abandon().await;
                return Err(e.context("joining chunks"));
            }
        };
        out.commit().await?;
        let last = claim.expected_chunks.map(|n| n - 1).max(claim.max_index);
        let missing: Vec<[i64; 2]> = match last {
            Some(last) if last >= count => vec![[count, last]],
            _ => Vec::new(),
        };
        Ok(Some(RecordingFacts {
            bytes: joined.bytes,
            sha256: joined.sha256,
            source_bytes: joined.source_bytes,
            source_sha256: joined.source_sha256,
            duration_ms: joined.duration_ms,
            complete,
            missing_json: serde_json::to_string(&missing)?,
        }))
    }
}

/// Runs steps until `stop` is cancelled. A step in progress is finished
/// first; the loop never abandons one half way.
pub async fn run(finalizer: Finalizer, stop: CancellationToken) {
    let mut backoff = POLL_EVERY;
    while !stop.is_cancelled() {
        match finalizer.try_finalize_next().await {
            Ok(Outcome::Ready(_) | Outcome::Failed(_) | Outcome::Discarded(_)) => {
                backoff = POLL_EVERY
            }
            Ok(Outcome::Idle) => {
                tokio::select! {
                    () = finalizer.wakeup.notified() => {}
                    () = tokio::time::sleep(POLL_EVERY) => {}
                    () = stop.cancelled() => {}
                }
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "finalize job could not claim work");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    tracing::debug!("finalize job stopped");
}
