//! Storage in SQLite: one named function per query, checked at compile time.
//!
//! Layout: `sessions` (one row per recording) and `chunks`, one row per
//! `(session seq, index)`, indexed by arrival block first (see
//! [`chunks`]); session keys are never reused. Chunks are written (stored and
//! deleted) only by [`crate::writer`]; everything else reads or writes
//! through the pool.

pub mod admin;
pub mod chunks;
pub mod finalize;
pub mod sessions;
pub mod webhooks;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

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

/// Milliseconds since the Unix epoch: how every `*_at` column is stored.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
