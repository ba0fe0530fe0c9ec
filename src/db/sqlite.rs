//! SQLite in the data directory: the single-node default. Every query is
//! checked at compile time (`.sqlx`); the [`SqliteDatabase`] methods call
//! the named query functions of the sibling modules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures_util::stream::BoxStream;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use super::admin::{self, ListFilter, Totals};
use super::batch::{Committed, Write};
use super::chunks::{self, ArrivalBlock, StoredChunk};
use super::finalize::{self, Claim};
use super::sessions::{self, ChunkHolder, FileOwner, NewSession, SessionRow};
use super::webhooks::{self, EventFor, PendingEvent};
use super::{Backend, ChunkWriter, Database};
use crate::domain::{SessionId, SessionState};

/// 16 KiB pages hold several 2–4 KB chunks each; measured ~2× faster than
/// 4 KiB here. Only takes effect when the file is created.
const PAGE_SIZE: u32 = 16 * 1024;
/// The writer's page cache: 64 MiB (a negative `cache_size` counts KiB).
const WRITER_CACHE_KIB: u32 = 64 * 1024;
/// WAL pages past which the writer checkpoints inside its own commit: 256 MiB,
/// a backstop that the checkpointer normally keeps the WAL far below.
const WRITER_CHECKPOINT_BACKSTOP_PAGES: u32 = 16 * 1024;

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .page_size(PAGE_SIZE)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit that returned has been fsynced, which is what an ack promises.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .log_statements(tracing::log::LevelFilter::Trace)
}

/// Opens (creating if needed) the database and brings its schema up to date.
pub async fn open_pool(path: &Path) -> anyhow::Result<SqlitePool> {
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options(path))
        .await
        .with_context(|| format!("opening database {}", path.display()))?;
    sqlx::migrate!("migrations/sqlite")
        .run(&pool)
        .await
        .context("running database migrations")?;
    Ok(pool)
}

/// A dedicated connection for the chunk writer, outside the pool so the
/// writer never waits behind readers for a connection.
pub async fn open_writer_connection(path: &Path) -> anyhow::Result<SqliteConnection> {
    options(path)
        // Keep the sessions' rows and the current block's index pages in
        // memory instead of SQLite's 2 MiB default, or batches read them
        // back from the WAL and the OS.
        .pragma("cache_size", format!("-{}", WRITER_CACHE_KIB))
        // Checkpoints run on their own connection (`writer::checkpoint`);
        // this only bounds the WAL should that ever fall behind.
        .pragma(
            "wal_autocheckpoint",
            WRITER_CHECKPOINT_BACKSTOP_PAGES.to_string(),
        )
        .connect()
        .await
        .context("opening the writer's database connection")
}

/// The connection that copies the WAL back into the database file.
pub async fn open_checkpoint_connection(path: &Path) -> anyhow::Result<SqliteConnection> {
    options(path)
        .connect()
        .await
        .context("opening the checkpointer's database connection")
}

/// The database file, its pool, and where the writer opens its own connection.
pub struct SqliteDatabase {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteDatabase {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            pool: open_pool(path).await?,
            path: path.to_owned(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The writer's connection and the arrival block its rows go to.
struct SqliteWriter {
    conn: SqliteConnection,
    block: ArrivalBlock,
}

#[async_trait::async_trait]
impl ChunkWriter for SqliteWriter {
    async fn commit_batch(&mut self, writes: &[Write<'_>]) -> anyhow::Result<Committed> {
        let committed =
            super::sqlite_batch::commit_batch(&mut self.conn, self.block.current(), writes).await?;
        self.block.stored(committed.stored_rows);
        Ok(committed)
    }

    async fn close(self: Box<Self>) {
        if let Err(err) = self.conn.close().await {
            tracing::warn!(error = %err, "closing the writer's connection");
        }
    }
}

#[async_trait::async_trait]
impl Database for SqliteDatabase {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query_scalar!("SELECT 1 AS one")
            .fetch_one(&self.pool)
            .await
            .map(drop)
    }

    async fn installation_id(&self) -> sqlx::Result<String> {
        sqlx::query_scalar!("SELECT id FROM installation")
            .fetch_one(&self.pool)
            .await
    }

    async fn chunk_writer(&self) -> anyhow::Result<Box<dyn ChunkWriter>> {
        let mut conn = open_writer_connection(&self.path).await?;
        let block = ArrivalBlock::resume(&mut conn)
            .await
            .context("reading where the chunk table ends")?;
        Ok(Box::new(SqliteWriter { conn, block }))
    }

    async fn insert_session(&self, new: NewSession<'_>, now: i64) -> sqlx::Result<()> {
        sessions::insert_session(&self.pool, new, now).await
    }

    async fn find_session(&self, id: &SessionId) -> sqlx::Result<Option<SessionRow>> {
        sessions::find_session(&self.pool, id).await
    }

    async fn mark_deleted(&self, seq: i64, now: i64) -> sqlx::Result<bool> {
        sessions::mark_deleted(&self.pool, seq, now).await
    }

    async fn remove_deleted(&self, seq: i64) -> sqlx::Result<()> {
        sessions::remove_deleted(&self.pool, seq).await
    }

    async fn deleted_sessions(&self, after: i64, limit: i64) -> sqlx::Result<Vec<(i64, String)>> {
        sessions::deleted_sessions(&self.pool, after, limit).await
    }

    async fn chunk_holder(&self, seq: i64) -> sqlx::Result<Option<ChunkHolder>> {
        sessions::chunk_holder(&self.pool, seq).await
    }

    async fn state_by_public_id(&self, public_id: &str) -> sqlx::Result<Option<String>> {
        sessions::state_by_public_id(&self.pool, public_id).await
    }

    async fn file_owner(&self, public_id: &str) -> sqlx::Result<Option<FileOwner>> {
        sessions::file_owner(&self.pool, public_id).await
    }

    async fn recordings_to_expire(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<(i64, String)>> {
        sessions::recordings_to_expire(&self.pool, cutoff, limit).await
    }

    async fn mark_expired(&self, seq: i64, now: i64) -> sqlx::Result<bool> {
        sessions::mark_expired(&self.pool, seq, now).await
    }

    async fn list_sessions(&self, filter: &ListFilter) -> sqlx::Result<Vec<SessionRow>> {
        admin::list_sessions(&self.pool, filter).await
    }

    async fn sessions_by_state(&self) -> sqlx::Result<Vec<(SessionState, i64)>> {
        admin::sessions_by_state(&self.pool).await
    }

    async fn totals(&self) -> sqlx::Result<Totals> {
        admin::totals(&self.pool).await
    }

    async fn stored_indexes(&self, seq: i64) -> sqlx::Result<Vec<i64>> {
        chunks::stored_indexes(&self.pool, seq).await
    }

    fn stream_prefix(&self, seq: i64, count: i64) -> BoxStream<'_, sqlx::Result<StoredChunk>> {
        Box::pin(chunks::stream_prefix(&self.pool, seq, count))
    }

    async fn next_session_with_chunks(&self, after: i64) -> sqlx::Result<Option<i64>> {
        chunks::next_session_with_chunks(&self.pool, after).await
    }

    async fn claim_due(
        &self,
        now: i64,
        idle_cutoff: i64,
        lease_ms: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<Claim>> {
        finalize::claim_due(&self.pool, now, idle_cutoff, lease_ms, limit).await
    }

    async fn claim_session(
        &self,
        seq: i64,
        now: i64,
        lease_ms: i64,
    ) -> sqlx::Result<Option<Claim>> {
        finalize::claim_session(&self.pool, seq, now, lease_ms).await
    }

    async fn renew_claim(&self, seq: i64, claimed_at: i64, now: i64) -> sqlx::Result<Option<i64>> {
        finalize::renew_claim(&self.pool, seq, claimed_at, now).await
    }

    async fn release_all_claims(&self) -> sqlx::Result<u64> {
        finalize::release_stale_claims(&self.pool).await
    }

    async fn mark_failed(
        &self,
        seq: i64,
        reason: &str,
        now: i64,
        event: Option<&EventFor>,
    ) -> sqlx::Result<bool> {
        finalize::mark_failed(&self.pool, seq, reason, now, event).await
    }

    async fn record_attempt_failed(
        &self,
        seq: i64,
        claimed_at: i64,
        reason: &str,
        claimable_at: i64,
    ) -> sqlx::Result<Option<i64>> {
        finalize::record_attempt_failed(&self.pool, seq, claimed_at, reason, claimable_at).await
    }

    async fn claim_due_events(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<PendingEvent>> {
        webhooks::claim_due(&self.pool, now, lease_until, limit).await
    }

    async fn event_delivered(&self, id: &str, now: i64) -> sqlx::Result<()> {
        webhooks::delivered(&self.pool, id, now).await
    }

    async fn event_attempt_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: i64,
    ) -> sqlx::Result<()> {
        webhooks::attempt_failed(&self.pool, id, error, next_attempt_at).await
    }
}
