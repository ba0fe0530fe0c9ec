//! The database: one interface ([`Database`]), two implementations —
//! SQLite in the data directory ([`sqlite::SqliteDatabase`], queries checked
//! at compile time) and PostgreSQL for several nodes
//! ([`postgres::PostgresDatabase`], covered by the integration tests).
//!
//! Layout: `sessions` (one row per recording, keys never reused) and
//! `chunks`, one row per `(session seq, index)`. Chunks are written (stored
//! and deleted) only through a [`ChunkWriter`], one per server; everything
//! else reads or writes through the pool. The row types live beside the
//! SQLite queries that first needed them (`sessions`, `finalize`, …).

pub mod admin;
pub mod batch;
pub mod chunks;
pub mod export;
pub mod finalize;
pub mod postgres;
mod postgres_batch;
pub mod sessions;
pub mod sqlite;
mod sqlite_batch;
pub mod webhooks;

use futures_util::stream::BoxStream;

use self::admin::{ListFilter, Totals};
use self::batch::{Committed, Write};
use self::chunks::StoredChunk;
use self::finalize::Claim;
use self::sessions::{ChunkHolder, FileOwner, NewSession, SessionRow};
use self::webhooks::{EventFor, PendingEvent};
use crate::domain::{SessionId, SessionState};

/// Which database, for what differs between one node and several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Every query Spool runs, whatever the database. One method per operation;
/// each implementation keeps its own SQL.
#[async_trait::async_trait]
pub trait Database: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// Answers when the database does.
    async fn ping(&self) -> sqlx::Result<()>;
    /// A random id made once, by the migrations, when this database was
    /// created: it tells databases apart where they might share storage.
    async fn installation_id(&self) -> sqlx::Result<String>;
    /// The connection the chunk writer commits its batches on.
    async fn chunk_writer(&self) -> anyhow::Result<Box<dyn ChunkWriter>>;

    // Sessions.
    async fn insert_session(&self, new: NewSession<'_>, now: i64) -> sqlx::Result<()>;
    /// By public id, unless deleted.
    async fn find_session(&self, id: &SessionId) -> sqlx::Result<Option<SessionRow>>;
    /// Marks the session deleted; false if it already was, or is gone.
    async fn mark_deleted(&self, seq: i64, now: i64) -> sqlx::Result<bool>;
    /// Removes a deleted session's row once it holds no chunk.
    async fn remove_deleted(&self, seq: i64) -> sqlx::Result<()>;
    /// Deleted sessions whose data is still being removed, by key after `after`.
    async fn deleted_sessions(&self, after: i64, limit: i64) -> sqlx::Result<Vec<(i64, String)>>;
    async fn chunk_holder(&self, seq: i64) -> sqlx::Result<Option<ChunkHolder>>;
    /// The state of the session with this public id, deleted included.
    async fn state_by_public_id(&self, public_id: &str) -> sqlx::Result<Option<String>>;
    async fn file_owner(&self, public_id: &str) -> sqlx::Result<Option<FileOwner>>;

    // Retention.
    /// Ready sessions that became ready before `cutoff` and still have their recording.
    async fn recordings_to_expire(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<(i64, String)>>;
    /// Claims a recording for removal by marking it expired; false if another got it first.
    async fn mark_expired(&self, seq: i64, now: i64) -> sqlx::Result<bool>;

    // Admin.
    async fn list_sessions(&self, filter: &ListFilter) -> sqlx::Result<Vec<SessionRow>>;
    async fn sessions_by_state(&self) -> sqlx::Result<Vec<(SessionState, i64)>>;
    async fn totals(&self) -> sqlx::Result<Totals>;
    /// Every index the session has stored, in order.
    async fn stored_indexes(&self, seq: i64) -> sqlx::Result<Vec<i64>>;

    // Chunks, as the finalize job and the sweep read them.
    /// Chunks `0..count` of a session in index order, streamed.
    fn stream_prefix(&self, seq: i64, count: i64) -> BoxStream<'_, sqlx::Result<StoredChunk>>;
    /// The smallest session key above `after` that holds chunks.
    async fn next_session_with_chunks(&self, after: i64) -> sqlx::Result<Option<i64>>;

    // The finalize claim.
    /// Claims up to `limit` due sessions: finished with every chunk, or idle
    /// since `idle_cutoff`; free, or their lease expired.
    async fn claim_due(
        &self,
        now: i64,
        idle_cutoff: i64,
        lease_ms: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<Claim>>;
    /// Claims one session now (an admin's "finalize now").
    async fn claim_session(&self, seq: i64, now: i64, lease_ms: i64)
    -> sqlx::Result<Option<Claim>>;
    /// Renews a claim still held; the new token, or `None` if it was lost.
    async fn renew_claim(&self, seq: i64, claimed_at: i64, now: i64) -> sqlx::Result<Option<i64>>;
    /// Makes every claim claimable at once: only where no other server can
    /// be running a step (a single node, at start-up).
    async fn release_all_claims(&self) -> sqlx::Result<u64>;
    /// Ends a session as failed, recording its webhook event in the same commit.
    async fn mark_failed(
        &self,
        seq: i64,
        reason: &str,
        now: i64,
        event: Option<&EventFor>,
    ) -> sqlx::Result<bool>;
    /// Counts a failed attempt of the step holding claim `claimed_at`; the
    /// session is claimable again after `claimable_at`.
    async fn record_attempt_failed(
        &self,
        seq: i64,
        claimed_at: i64,
        reason: &str,
        claimable_at: i64,
    ) -> sqlx::Result<Option<i64>>;

    // The webhook outbox.
    /// Claims due events until `lease_until`, one deliverer at a time.
    async fn claim_due_events(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<PendingEvent>>;
    async fn event_delivered(&self, id: &str, now: i64) -> sqlx::Result<()>;
    async fn event_attempt_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: i64,
    ) -> sqlx::Result<()>;
}

/// The writer's connection: commits one batch per call, in one transaction.
#[async_trait::async_trait]
pub trait ChunkWriter: Send {
    async fn commit_batch(&mut self, writes: &[Write<'_>]) -> anyhow::Result<Committed>;
    /// Closes the connection once the last batch is committed.
    async fn close(self: Box<Self>);
}

/// Milliseconds since the Unix epoch: how every `*_at` column is stored.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
