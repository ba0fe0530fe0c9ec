//! WAL checkpoints off the ingest path. By default the connection whose
//! commit pushes the WAL past 1,000 pages copies it into the database file
//! inside that commit — for the writer, a stall of every waiting ack. The
//! writer's own threshold is raised to a backstop instead, and this task
//! checkpoints on its own connection, `PASSIVE`: it copies what no reader
//! still needs and never waits for, nor blocks, the writer.

use std::path::Path;
use std::time::Duration;

use sqlx::{Connection, SqliteConnection};
use tokio_util::sync::CancellationToken;

use crate::db;

/// How often the WAL is copied back: often enough that each pass is short.
const INTERVAL: Duration = Duration::from_millis(100);

/// Starts the checkpointer on its own connection; it stops with `stop`.
pub async fn spawn(
    database: &Path,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let conn = db::sqlite::open_checkpoint_connection(database).await?;
    Ok(tokio::spawn(run(conn, stop)))
}

async fn run(mut conn: SqliteConnection, stop: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = stop.cancelled() => break,
        }
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            Ok(_) => failing = false,
            // Nothing is lost: the WAL keeps every commit, and the writer's
            // backstop threshold still bounds it. Said once per failing run.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
            }
            Err(_) => {}
        }
    }
    drop(conn.close().await);
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    /// Rows the writer commits reach the database file without the writer
    /// (whose threshold is far above this WAL) ever checkpointing.
    #[tokio::test]
    async fn the_wal_is_copied_back_while_the_writer_only_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        db::sqlite::open_pool(&path).await.unwrap().close().await;
        let mut writer = db::sqlite::open_writer_connection(&path).await.unwrap();
        let file_size = || std::fs::metadata(&path).unwrap().len();
        let before = file_size();

        let mut tx = writer.begin().await.unwrap();
        // 9,000 rows of 2 KiB: more WAL than SQLite's default 1,000-page
        // threshold, so only the writer's raised threshold keeps it from
        // checkpointing in this commit.
        for n in 0..9_000 {
            sqlx::query("INSERT INTO chunks (block, session, idx, crc, flags, payload) VALUES (1, 1, ?, 0, 0, zeroblob(2048))")
                .bind(n)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(file_size(), before, "the writer itself did not checkpoint");

        let stop = CancellationToken::new();
        let task = spawn(&path, stop.clone()).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while file_size() < before + 9_000 * 2048 {
            assert!(std::time::Instant::now() < deadline, "never checkpointed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        task.await.unwrap();
        writer.close().await.unwrap();
    }
}
