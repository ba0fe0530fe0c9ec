//! Queries of the finalize job: claim a session, then record its outcome.
//!
//! A claim is a lease: `finalize_claimed_at` stops the writer from adding
//! chunks, a running step renews it, and a claim older than the lease (a
//! crashed or stuck step) can be taken again. Its value is the claim's
//! token: the step's `ready` commits only while the claim is still its own.
//! On a single node every lease is released at start-up.

use sqlx::{SqliteConnection, SqlitePool};

use super::webhooks::EventFor;

/// The session a finalize step works on, as it was when claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claim {
    pub seq: i64,
    pub public_id: String,
    pub mime_type: String,
    pub expected_chunks: Option<i64>,
    pub committed: i64,
    pub max_index: Option<i64>,
    pub chunks_received: i64,
    pub bytes_received: i64,
    /// Failed attempts before this one.
    pub finalize_attempts: i64,
    /// When the claim was taken or last renewed: its token.
    pub claimed_at: i64,
}

/// Claims up to `limit` due sessions at once (one commit for all): those
/// finished with every chunk stored, or idle since `idle_cutoff`, oldest
/// first, whose claim is free or its lease expired.
pub async fn claim_due(
    pool: &SqlitePool,
    now: i64,
    idle_cutoff: i64,
    lease_ms: i64,
    limit: i64,
) -> sqlx::Result<Vec<Claim>> {
    let lease_cutoff = now - lease_ms;
    sqlx::query_as!(
        Claim,
        r#"UPDATE sessions SET finalize_claimed_at = ?1, state = 'finishing', updated_at = ?1
           WHERE seq IN (
               SELECT seq FROM sessions
               WHERE state IN ('recording', 'finishing')
                 AND (finalize_claimed_at IS NULL OR finalize_claimed_at < ?2)
                 AND (finalize_claimed_at IS NOT NULL
                      OR (expected_chunks IS NOT NULL AND committed >= expected_chunks)
                      OR last_seen_at < ?3)
               ORDER BY last_seen_at LIMIT ?4)
           RETURNING seq AS "seq!", public_id, mime_type, expected_chunks, committed, max_index,
                     chunks_received, bytes_received, finalize_attempts,
                     finalize_claimed_at AS "claimed_at!: i64""#,
        now,
        lease_cutoff,
        idle_cutoff,
        limit
    )
    .fetch_all(pool)
    .await
}

/// Claims one given session now, whatever its state of completeness
/// (an admin's "finalize now"). Returns `None` if it is not recording or
/// finishing, or a finalize step holds it already.
pub async fn claim_session(
    pool: &SqlitePool,
    seq: i64,
    now: i64,
    lease_ms: i64,
) -> sqlx::Result<Option<Claim>> {
    let lease_cutoff = now - lease_ms;
    sqlx::query_as!(
        Claim,
        r#"UPDATE sessions SET finalize_claimed_at = ?2, state = 'finishing', updated_at = ?2
           WHERE seq = ?1 AND state IN ('recording', 'finishing')
             AND (finalize_claimed_at IS NULL OR finalize_claimed_at < ?3)
           RETURNING seq AS "seq!", public_id, mime_type, expected_chunks, committed, max_index,
                     chunks_received, bytes_received, finalize_attempts,
                     finalize_claimed_at AS "claimed_at!: i64""#,
        seq,
        now,
        lease_cutoff
    )
    .fetch_optional(pool)
    .await
}

/// Renews the claim taken at `claimed_at`, if it is still that one; returns
/// the new token, or `None` if the claim was lost (taken over, or the
/// session deleted).
pub async fn renew_claim(
    pool: &SqlitePool,
    seq: i64,
    claimed_at: i64,
    now: i64,
) -> sqlx::Result<Option<i64>> {
    let renewed = sqlx::query!(
        "UPDATE sessions SET finalize_claimed_at = ?3
         WHERE seq = ?1 AND finalize_claimed_at = ?2 AND state = 'finishing'",
        seq,
        claimed_at,
        now
    )
    .execute(pool)
    .await?;
    Ok((renewed.rows_affected() == 1).then_some(now))
}

/// Makes every claim immediately claimable again: run once at start-up,
/// when no step can be running.
pub async fn release_stale_claims(pool: &SqlitePool) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        "UPDATE sessions SET finalize_claimed_at = 0
         WHERE finalize_claimed_at IS NOT NULL AND state IN ('recording', 'finishing')"
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// What the finished recording is, as stored on the session.
#[derive(Debug, Clone)]
pub struct RecordingFacts {
    pub bytes: i64,
    pub sha256: String,
    pub source_bytes: i64,
    pub source_sha256: String,
    pub duration_ms: Option<i64>,
    /// The container was rewritten (WebM with Duration and Cues).
    pub rewritten: bool,
    pub complete: bool,
    pub missing_json: String,
}

/// What became of a session the finalize step tried to mark ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkedReady {
    Ready,
    /// The session was deleted meanwhile: its recording is garbage.
    Deleted,
    /// The session is no longer `finishing`, or another step holds its
    /// claim now: leave everything alone.
    NotFinishing,
}

/// Marks the session ready with its recording's facts, inside the caller's
/// transaction (which may add the webhook event). Its chunks are deleted
/// afterwards, a slice per writer batch (see `WriterHandle::delete_chunks`), so no long transaction
/// holds up the writer.
pub async fn mark_ready(
    tx: &mut SqliteConnection,
    seq: i64,
    claimed_at: i64,
    facts: &RecordingFacts,
    now: i64,
) -> sqlx::Result<MarkedReady> {
    let updated = sqlx::query!(
        "UPDATE sessions SET state = 'ready', updated_at = ?2, ready_at = ?2, recording_bytes = ?3, recording_sha256 = ?4,
                recording_source_bytes = ?5, recording_source_sha256 = ?6, recording_duration_ms = ?7,
                recording_complete = ?8, recording_missing = ?9, failure_reason = NULL,
                recording_rewritten = ?10, finalize_claimed_at = NULL
         WHERE seq = ?1 AND state = 'finishing' AND finalize_claimed_at = ?11",
        seq,
        now,
        facts.bytes,
        facts.sha256,
        facts.source_bytes,
        facts.source_sha256,
        facts.duration_ms,
        facts.complete,
        facts.missing_json,
        facts.rewritten,
        claimed_at
    )
    .execute(&mut *tx)
    .await?;
    let outcome = if updated.rows_affected() == 1 {
        MarkedReady::Ready
    } else if sqlx::query_scalar!(
        "SELECT 1 AS one FROM sessions WHERE seq = ?1 AND state != 'deleted'",
        seq
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some()
    {
        MarkedReady::NotFinishing
    } else {
        MarkedReady::Deleted
    };
    Ok(outcome)
}

/// Ends the session as failed (it has nothing to join) and records its
/// webhook event, in one transaction; its chunks are deleted afterwards,
/// like a ready session's. Returns false if the session was no longer
/// `finishing` (deleted meanwhile): then nothing changed.
pub async fn mark_failed(
    pool: &SqlitePool,
    seq: i64,
    reason: &str,
    now: i64,
    event: Option<&EventFor>,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let marked = sqlx::query!(
        "UPDATE sessions SET state = 'failed', failure_reason = ?2, updated_at = ?3, finalize_claimed_at = NULL
         WHERE seq = ?1 AND state = 'finishing'",
        seq,
        reason,
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if marked && let Some(event) = event {
        super::webhooks::enqueue_for(&mut tx, seq, event).await?;
    }
    tx.commit().await?;
    Ok(marked)
}

/// Counts a failed attempt, notes why, and moves the claim so the session
/// is taken again only after `claimable_at` (its lease then seems expired).
/// Returns the attempts so far, or `None` if the session is no longer being
/// finalized (deleted meanwhile).
pub async fn record_attempt_failed(
    pool: &SqlitePool,
    seq: i64,
    claimed_at: i64,
    reason: &str,
    claimable_at: i64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        "UPDATE sessions SET finalize_attempts = finalize_attempts + 1, finalize_claimed_at = ?2, failure_reason = ?3
         WHERE seq = ?1 AND state IN ('recording', 'finishing') AND finalize_claimed_at = ?4
         RETURNING finalize_attempts",
        seq,
        claimable_at,
        reason,
        claimed_at
    )
    .fetch_optional(pool)
    .await
}
