//! The engine's ceiling: the same 2 KB chunk rows inserted straight into a
//! fresh SQLite file with the server's schema (its migrations), pragmas
//! (WAL, `synchronous=FULL`, 16 KiB pages), statement, batch size and
//! arrival blocks, from
//! one task with no network — what the writer could do if the server cost
//! nothing. The rows are spread over as many sessions as the load has, since
//! that decides how many pages each transaction touches. Measured in the same run as the load, so the report can say
//! which fraction of it the server reached.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection;

use crate::db;
use crate::domain::ChunkFrame;
use crate::writer::MAX_BATCH_ROWS;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Ceiling {
    pub rows_per_second: f64,
    pub mb_per_second: f64,
    pub batch_rows: usize,
    /// Sessions the rows were spread over, in turn.
    pub sessions: u32,
    pub seconds: f64,
}

/// Inserts rows of `bytes`, spread over `sessions`, for `seconds` into a
/// new database under `dir`.
pub async fn measure(
    dir: &Path,
    seconds: f64,
    bytes: usize,
    sessions: u32,
) -> anyhow::Result<Ceiling> {
    let sessions = sessions.max(1);
    let path = dir.join("ceiling.db");
    let pool = db::sqlite::open_pool(&path).await?;
    pool.close().await;
    let mut conn = db::sqlite::open_writer_connection(&path).await?;
    let mut block = db::chunks::ArrivalBlock::resume(&mut conn).await?;
    let payload = bytes::Bytes::from(super::recorder::payload(7, 0, bytes));
    let crc32c = crc32c::crc32c(&payload);
    let started = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    let mut rows = 0u64;
    let mut next = 0u64; // the n-th row goes to session n % sessions, index n / sessions
    while started.elapsed() < limit {
        let batch: Vec<(i64, ChunkFrame)> = (next..next + MAX_BATCH_ROWS as u64)
            .map(|n| {
                let frame = ChunkFrame {
                    index: (n / u64::from(sessions)) as u32,
                    flags: 0,
                    crc32c,
                    payload: payload.clone(),
                };
                ((n % u64::from(sessions)) as i64, frame)
            })
            .collect();
        next += MAX_BATCH_ROWS as u64;
        let rows_ref: Vec<(i64, &ChunkFrame)> = batch.iter().map(|(s, f)| (*s, f)).collect();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        db::chunks::insert_rows(&mut tx, block.current(), &rows_ref)
            .await
            .context("inserting rows")?;
        tx.commit().await?;
        block.stored(batch.len());
        rows += batch.len() as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(Ceiling {
        rows_per_second: rows as f64 / elapsed,
        mb_per_second: (rows * bytes as u64) as f64 / elapsed / 1e6,
        batch_rows: MAX_BATCH_ROWS,
        sessions,
        seconds: elapsed,
    })
}
