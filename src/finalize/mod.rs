//! The finalize job: turns a session's chunks into its recording.
//!
//! A loop ([`run`]) claims due sessions (a few at once, in one commit) and
//! runs a step for each, up to `PARALLEL_STEPS` (8) at a time. A step joins
//! a session's chunks into a file that is durable
//! before anything else changes, marks the session `ready`, and only then
//! deletes its chunks (in slices, so the writer never waits long). A claim
//! is a lease the step renews while it runs: a crash before `ready` leaves
//! the claim, which the next start releases (one node) or which expires and
//! another node takes (several), and the step runs again from the chunks;
//! the old temporary file is swept and the rename (or the multipart
//! upload's completion) is atomic. `ready` commits only while the step still
//! holds its claim, so two steps never both finish one session. A crash
//! after `ready` leaves garbage chunks, which
//! [`crate::sweep`] deletes. There is never a half file served nor a chunk deleted
//! too soon. A failing step is retried with backoff, never abandoned.

pub mod join;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cluster::{Cluster, Notice};
use crate::db::{self, Database, finalize::Claim, finalize::MarkedReady, finalize::RecordingFacts};
use crate::domain::{FLAG_NEW_STREAM, MimeType, SessionState};
use crate::metrics::Metrics;
use crate::storage::Recordings;
use crate::sweep::Sweeper;
use crate::webhooks::{EventKind, Events};
use crate::writer::WriterHandle;

/// How often idle sessions are looked for when nothing wakes the job.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Sessions finalized at once. A step mostly waits on the disk (reading
/// chunks, fsyncing the file, two short transactions), so a few overlap
/// well on two cores; each holds at most one chunk and one output buffer.
const PARALLEL_STEPS: usize = 8;

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This session is now `ready`.
    Ready(String),
    /// This session is now `failed`: chunk 0 never arrived.
    Failed(String),
    /// This session never received a chunk and was removed.
    Removed(String),
    /// This session's step failed; it is taken again after a backoff.
    Retrying(String),
    /// This session was deleted while it was being finalized.
    Discarded(String),
}

/// Everything the finalize job needs; cheap to clone.
#[derive(Clone)]
pub struct Finalizer {
    pub db: Arc<dyn Database>,
    /// How long a claim holds without renewal (`--finalize-lease`).
    pub lease: Duration,
    pub recordings: Recordings,
    pub metrics: Arc<Metrics>,
    pub idle_after: Duration,
    /// Woken by the writer when a finished session has all its chunks.
    pub wakeup: Arc<Notify>,
    /// Tells open sockets that a session (by seq) became ready or failed.
    pub finalized: broadcast::Sender<i64>,
    /// Tells other nodes' sockets the same.
    pub cluster: Cluster,
    /// Webhook events, when `--webhook-url` is set.
    pub events: Option<Events>,
    /// Deletes the chunks of finished sessions.
    pub writer: WriterHandle,
}

impl Finalizer {
    /// Claims up to `limit` due sessions: finished with all their chunks, or idle.
    async fn claim_due(&self, limit: usize) -> anyhow::Result<Vec<Claim>> {
        let now = db::now_ms();
        let idle_cutoff = now - i64::try_from(self.idle_after.as_millis()).unwrap_or(i64::MAX);
        self.db
            .claim_due(now, idle_cutoff, lease_ms(self.lease), limit as i64)
            .await
            .context("claiming sessions to finalize")
    }

    /// Finalizes a claimed session; failures are counted against the session.
    pub async fn finalize_claimed(&self, claim: Claim) -> Outcome {
        let span = tracing::info_span!("finalize", session = %claim.public_id);
        self.finalize_claimed_inner(claim).instrument(span).await
    }

    async fn finalize_claimed_inner(&self, claim: Claim) -> Outcome {
        let lease = Lease::new(&claim);
        // The retry is recorded inside the renewed span too, so no renewal
        // can move the token between the step's end and its last write.
        let step = async {
            match self.finalize_step(&claim, &lease).await {
                Ok(outcome) => outcome,
                Err(err) => self.retry_later(&claim, &lease, err).await,
            }
        };
        let outcome = lease.renewed_while(self, step).await;
        let _ = self.finalized.send(claim.seq); // nobody listening is fine
        self.cluster.send(Notice::Finalized(claim.seq));
        outcome
    }

    async fn finalize_step(&self, claim: &Claim, lease: &Lease) -> anyhow::Result<Outcome> {
        let id = claim.public_id.clone();
        let started = std::time::Instant::now();
        let now = db::now_ms();
        let Some(facts) = self.build_recording(claim).await? else {
            return self.nothing_to_join(claim, now).await;
        };
        let token = lease.hold().await; // no renewal while `ready` commits
        let marked = self
            .mark_ready(claim.seq, *token, &facts, now)
            .await
            .context("marking the session ready")?;
        drop(token);
        match marked {
            MarkedReady::Ready => {
                tracing::info!(
                    bytes = facts.bytes,
                    complete = facts.complete,
                    "recording ready"
                );
                self.metrics.finalized(started.elapsed());
            }
            MarkedReady::Deleted => {
                tracing::info!("session deleted while finalizing; discarding its recording");
                self.recordings.delete(&id).await?;
                return Ok(Outcome::Discarded(id));
            }
            MarkedReady::NotFinishing => {
                tracing::warn!(
                    "session left `finishing` while being finalized; leaving it as it is"
                );
                return Ok(Outcome::Discarded(id));
            }
        }
        // The file is durable and the session says so: the chunks are garbage now.
        if let Err(e) = self.writer.delete_chunks(claim.seq).await {
            tracing::warn!(error = %e, "could not delete a ready session's chunks; the sweep retries");
        }
        Ok(Outcome::Ready(id))
    }

    /// Marks the session ready and, in the same transaction, records its
    /// webhook event. Through the writer, so the commits of many steps (and
    /// of chunk batches) share one fsync instead of queueing for the lock.
    async fn mark_ready(
        &self,
        seq: i64,
        claimed_at: i64,
        facts: &RecordingFacts,
        now: i64,
    ) -> anyhow::Result<MarkedReady> {
        Ok(self
            .writer
            .mark_ready(seq, claimed_at, facts.clone(), now, self.events.clone())
            .await?)
    }

    /// Marks the session failed and records its webhook event, in one transaction.
    async fn mark_failed(&self, seq: i64, reason: &str, now: i64) -> sqlx::Result<bool> {
        let event = self
            .events
            .as_ref()
            .map(|events| events.event_for(EventKind::SessionFailed, now));
        let marked = self
            .db
            .mark_failed(seq, reason, now, event.as_deref())
            .await?;
        self.events_committed();
        Ok(marked)
    }

    fn events_committed(&self) {
        if let Some(events) = &self.events {
            events.committed();
        }
    }

    /// A file this step committed before failing is garbage if the session
    /// was deleted meanwhile (and is someone else's if it became ready).
    async fn discard_if_deleted(&self, public_id: &str) {
        let deleted = match self.db.state_by_public_id(public_id).await {
            Ok(state) => state.is_none_or(|state| state == SessionState::Deleted.as_str()),
            Err(_) => false, // the start-up sweep decides later
        };
        if deleted && let Err(e) = self.recordings.delete(public_id).await {
            tracing::warn!(error = %format!("{e:#}"), "removing a deleted session's recording failed; the sweep retries");
        }
    }

    fn sweeper(&self) -> Sweeper {
        Sweeper::new(
            self.db.clone(),
            self.recordings.clone(),
            self.writer.clone(),
        )
    }

    /// Chunk 0 never arrived, so nothing can be joined. A session that never
    /// received any chunk is abandoned and removed; one that received later
    /// chunks ends `failed`, saying what arrived, and those chunks (never
    /// acknowledged: acks cover only the prefix from chunk 0) are released.
    async fn nothing_to_join(&self, claim: &Claim, now: i64) -> anyhow::Result<Outcome> {
        let id = claim.public_id.clone();
        if claim.chunks_received == 0 {
            if self.db.mark_deleted(claim.seq, now).await? {
                tracing::info!("no chunk ever arrived; abandoned session removed");
            }
            self.sweeper().purge(claim.seq, &id).await?;
            return Ok(Outcome::Removed(id));
        }
        let reason = format!(
            "chunk 0 never arrived, so nothing could be joined; {} later chunks ({} bytes, indexes up to {}) were discarded",
            claim.chunks_received,
            claim.bytes_received,
            claim.max_index.unwrap_or_default()
        );
        if !self.mark_failed(claim.seq, &reason, now).await? {
            return Ok(Outcome::Discarded(id));
        }
        tracing::warn!(reason, "session failed");
        self.writer
            .delete_chunks(claim.seq)
            .await
            .context("releasing a failed session's chunks")?;
        Ok(Outcome::Failed(id))
    }

    /// A step failed (a full disk, say): keep the claim, so no chunk can be
    /// added, and try again later, backing off. Never gives up: the chunks
    /// are acknowledged and must end up in a recording.
    async fn retry_later(&self, claim: &Claim, lease: &Lease, err: anyhow::Error) -> Outcome {
        self.metrics.finalize_failed();
        let reason = format!("finalize failed, will retry: {err:#}");
        let delay = retry_delay(claim.finalize_attempts);
        // Backdated so that the lease seems to run out when the delay does.
        let claimable_at = db::now_ms() - lease_ms(self.lease) + delay.as_millis() as i64;
        let token = lease.hold().await;
        let recorded = self
            .db
            .record_attempt_failed(claim.seq, *token, &reason, claimable_at)
            .await;
        drop(token);
        match recorded {
            Ok(Some(attempts)) => {
                tracing::error!(error = %format!("{err:#}"), attempts, retry_in = ?delay, "finalize failed")
            }
            Ok(None) => {
                tracing::info!("session no longer being finalized by this step; nothing to retry");
                self.discard_if_deleted(&claim.public_id).await;
                return Outcome::Discarded(claim.public_id.clone());
            }
            Err(e) => {
                tracing::error!(error = %format!("{err:#}"), count_error = %e, "finalize failed")
            }
        }
        Outcome::Retrying(claim.public_id.clone())
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
        let db = self.db.as_ref();
        let read_chunks = || Box::pin(read_prefix(db, claim.seq, count));
        let mut out = self.recordings.create(&claim.public_id, &mime).await?;
        let joined = match join::join_chunks(
            &mime,
            read_chunks,
            &self.recordings,
            &claim.public_id,
            &mut out,
        )
        .await
        {
            Ok(joined) => joined,
            Err(e) => {
                out.abandon().await;
                return Err(e.context("joining chunks"));
            }
        };
        out.commit().await?;
        if mime.essence().ends_with("/webm") && !joined.rewritten {
            self.metrics.rewrite_failed();
        }
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
            rewritten: joined.rewritten,
            complete,
            missing_json: serde_json::to_string(&missing)?,
        }))
    }
}

/// Hands sessions to the finalize job out of turn (an admin's "finalize now").
#[derive(Clone)]
pub struct FinalizeNow {
    db: Arc<dyn Database>,
    lease: Duration,
    requests: mpsc::UnboundedSender<Claim>,
}

/// What became of a "finalize now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Claimed and handed to the job.
    Queued,
    /// A finalize step holds the session already.
    InProgress,
    /// The session is ready or failed already.
    Finished,
}

impl FinalizeNow {
    /// Claims the session (so no chunk can be added) and hands it to the
    /// job. If the server stops first, the claim is released at the next
    /// start and the session finalized then.
    pub async fn request(&self, seq: i64, state: SessionState) -> anyhow::Result<Requested> {
        if !state.accepts_chunks() {
            return Ok(Requested::Finished);
        }
        match self
            .db
            .claim_session(seq, db::now_ms(), lease_ms(self.lease))
            .await?
        {
            Some(claim) => {
                let _ = self.requests.send(claim); // closed only while stopping
                Ok(Requested::Queued)
            }
            None => Ok(Requested::InProgress),
        }
    }
}

/// The job's end of [`FinalizeNow`].
pub struct FinalizeRequests(mpsc::UnboundedReceiver<Claim>);

pub fn finalize_now(db: Arc<dyn Database>, lease: Duration) -> (FinalizeNow, FinalizeRequests) {
    let (requests, receiver) = mpsc::unbounded_channel();
    (
        FinalizeNow {
            db,
            lease,
            requests,
        },
        FinalizeRequests(receiver),
    )
}

/// Runs steps until `stop` is cancelled, taking "finalize now" requests
/// between them. A step in progress is finished first; the loop never
/// abandons one half way.
pub async fn run(finalizer: Finalizer, mut requests: FinalizeRequests, stop: CancellationToken) {
    let mut steps = tokio::task::JoinSet::new();
    let mut backoff = POLL_EVERY;
    while !stop.is_cancelled() {
        // Fill the free places: an admin's request first, then due sessions.
        let mut idle = false;
        while steps.len() < PARALLEL_STEPS && !idle {
            if let Ok(claim) = requests.0.try_recv() {
                let finalizer = finalizer.clone();
                steps.spawn(async move { finalizer.finalize_claimed(claim).await });
                continue;
            }
            match finalizer.claim_due(PARALLEL_STEPS - steps.len()).await {
                Ok(claims) if claims.is_empty() => idle = true,
                Ok(claims) => {
                    backoff = POLL_EVERY;
                    for claim in claims {
                        let finalizer = finalizer.clone();
                        steps.spawn(async move { finalizer.finalize_claimed(claim).await });
                    }
                }
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "finalize job could not claim work");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    idle = true;
                }
            }
        }
        // Wait for a place to free up, or for new work.
        tokio::select! {
            Some(done) = steps.join_next(), if !steps.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a finalize step panicked");
                }
            }
            Some(claim) = requests.0.recv(), if steps.len() < PARALLEL_STEPS => {
                let finalizer = finalizer.clone();
                steps.spawn(async move { finalizer.finalize_claimed(claim).await });
            }
            () = finalizer.wakeup.notified(), if idle => {}
            () = tokio::time::sleep(POLL_EVERY), if idle => {}
            () = stop.cancelled() => {}
        }
    }
    // Steps in progress finish: each ends in a consistent state either way,
    // but finishing is quicker than redoing.
    while let Some(done) = steps.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a finalize step panicked");
        }
    }
    tracing::debug!("finalize job stopped");
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// A held claim. Its token (the claim's time) moves on with each renewal;
/// `ready` and a failed attempt commit only with the current one. The lock
/// keeps a renewal and those writes from overlapping: a renewal committed
/// while `ready` is in flight would make the step's own token stale.
struct Lease {
    seq: i64,
    token: tokio::sync::Mutex<i64>,
}

impl Lease {
    fn new(claim: &Claim) -> Self {
        Self {
            seq: claim.seq,
            token: tokio::sync::Mutex::new(claim.claimed_at),
        }
    }

    /// The current token, held: no renewal runs until the guard is dropped.
    async fn hold(&self) -> tokio::sync::MutexGuard<'_, i64> {
        self.token.lock().await
    }

    /// Runs `step`, renewing the claim every third of the lease meanwhile,
    /// so a long join keeps its session. A claim found lost (the lease ran
    /// out and another step took it) is not renewed again; that step's
    /// `ready` will then be refused.
    async fn renewed_while<T>(
        &self,
        finalizer: &Finalizer,
        step: impl std::future::Future<Output = T>,
    ) -> T {
        let renewals = async {
            loop {
                tokio::time::sleep(finalizer.lease / 3).await;
                let mut token = self.hold().await;
                match finalizer
                    .db
                    .renew_claim(self.seq, *token, db::now_ms())
                    .await
                {
                    Ok(Some(renewed)) => *token = renewed,
                    Ok(None) => {
                        tracing::warn!("the finalize claim was lost: its lease ran out");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the finalize claim failed; retrying")
                    }
                }
            }
        };
        tokio::pin!(step);
        tokio::select! {
            biased;
            done = &mut step => return done,
            () = renewals => {}
        }
        step.await
    }
}

/// 5 s after the first failure, doubling, at most an hour.
fn retry_delay(attempts_so_far: i64) -> Duration {
    let doublings = u32::try_from(attempts_so_far.clamp(0, 10)).unwrap_or(10);
    (Duration::from_secs(5) * 2u32.pow(doublings)).min(Duration::from_secs(3600))
}

/// Chunks `0..count` of a session, in order, as the join takes them; a gap
/// or a short read is an error, never a shorter recording.
fn read_prefix(
    db: &dyn Database,
    seq: i64,
    count: i64,
) -> impl futures_util::Stream<Item = anyhow::Result<join::SourceChunk>> + Send + '_ {
    let read = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let counted = read.clone();
    db.stream_prefix(seq, count)
        .map_err(anyhow::Error::from)
        .map(move |chunk| {
            let chunk = chunk?;
            let expected = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            anyhow::ensure!(
                chunk.idx == expected,
                "chunk {expected} is missing from the stored prefix"
            );
            Ok(join::SourceChunk {
                starts_stream: chunk.flags & i64::from(FLAG_NEW_STREAM) != 0,
                payload: chunk.payload,
            })
        })
        .chain(
            futures_util::stream::once(async move {
                let read = read.load(std::sync::atomic::Ordering::Relaxed);
                (read != count).then(|| {
                    Err(anyhow::anyhow!(
                        "only {read} of {count} chunks could be read"
                    ))
                })
            })
            .filter_map(std::future::ready),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(0), Duration::from_secs(5));
        assert_eq!(retry_delay(3), Duration::from_secs(40));
        assert_eq!(retry_delay(50), Duration::from_secs(3600));
    }
}
