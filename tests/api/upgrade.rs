//! Upgrades: a data directory written by an earlier schema starts under
//! this version with every acknowledged chunk still there.

use spool::domain::{SessionId, Token};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

use crate::helpers::{Inspect, ServerProcess, eventually, get_bytes, payloads, sha256_hex};

/// The first migration of the arrival-block layout; the database is built
/// with every migration before it.
const BLOCK_LAYOUT: i64 = 20261203000000;

/// A database at the schema before `version`, as an earlier release left it.
async fn database_before(version: i64, path: &std::path::Path) -> sqlx::SqlitePool {
    let old = tempfile::tempdir().unwrap();
    for entry in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap()
    {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if file_version < version {
            std::fs::copy(entry.path(), old.path().join(&name)).unwrap();
        }
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .page_size(16 * 1024)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(old.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

/// Chunks stored under the old `(session, idx)` key are read back with the
/// ones stored after the upgrade: the session resumes where it was, and the
/// recording is every byte sent. Chunks whose session is gone are dropped.
#[tokio::test]
async fn chunks_stored_before_the_arrival_block_layout_survive_the_upgrade() {
    if !crate::helpers::sqlite_only("an upgrade of SQLite's own layout") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let chunks = payloads(7, 11);
    let (id, token) = (SessionId::generate(), Token::generate());
    let pool = database_before(BLOCK_LAYOUT, &dir.path().join("spool.db")).await;
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO sessions (public_id, token_hash, mime_type, created_at, updated_at,
                               last_seen_at, committed, chunks_received, bytes_received, max_index)
         VALUES (?1, ?2, 'audio/ogg;codecs=opus', ?4, ?4, ?4, 4, 4, ?3, 3) RETURNING seq",
    )
    .bind(id.as_str())
    .bind(token.hash().as_bytes())
    .bind(chunks[..4].iter().map(Vec::len).sum::<usize>() as i64)
    .bind(spool::db::now_ms())
    .fetch_one(&pool)
    .await
    .unwrap();
    for (index, payload) in chunks[..4].iter().enumerate().rev() {
        sqlx::query(
            "INSERT INTO chunks (session, idx, crc, flags, payload) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(index as i64)
        .bind(i64::from(crc32c::crc32c(payload)))
        .bind(i64::from(index == 0))
        .bind(payload)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO chunks (session, idx, crc, flags, payload) VALUES (?, 0, 0, 1, x'00')",
    )
    .bind(seq + 1000)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let server = ServerProcess::start(dir.path(), &[]).await;
    let db = Inspect::open(&dir.path().join("spool.db")).await;
    assert_eq!(
        db.all_chunks().await,
        4,
        "the orphan chunk is not carried over"
    );
    let mut ws = server.connect(id.as_str(), token.expose()).await;
    let ready = ws.recv_json().await;
    assert_eq!(ready["committed"], 4, "{ready}");
    // Resending the last chunk stored under the old key is a duplicate.
    ws.send_all(&chunks[..4], 3).await;
    ws.send_all(&chunks, 4).await;
    let finalized = ws.finish_and_wait_finalized(chunks.len()).await;
    let joined = chunks.concat();
    assert_eq!(
        finalized["recording"]["sha256"],
        sha256_hex(&joined).as_str()
    );
    let url = format!(
        "{}/v1/sessions/{id}/recording",
        server.base,
        id = id.as_str()
    );
    assert!(get_bytes(&url, token.expose()).await == joined);
    eventually("the finalized session's chunks are released", || async {
        db.all_chunks().await == 0
    })
    .await;
    server.kill9().await;
}
