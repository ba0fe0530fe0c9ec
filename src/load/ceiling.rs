//! The engine's ceiling: the same 2 KB chunk rows inserted straight into a
//! fresh SQLite file with the server's schema (its migrations), pragmas
//! (WAL, `synchronous=FULL`, 16 KiB pages), statement and batch size, from
//! one task with no network — what the writer could do if the server cost
//! nothing. Measured in the same run as the load, so the report can say
//! which fraction of it the server reached.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection;

use crate::db;
use crate::domain::ChunkFrame;
use crate::writer::MAX_BATCH_ROWS;

/// Recordings interleaved in the rows, as many live sessions would be.
const SESSIONS: i64 = 100;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Ceiling {
    pub rows_per_second: f64,
    pub mb_per_second: f64,
    pub batch_rows: usize,
    pub seconds: f64,
}

/// Inserts rows of `bytes` for `seconds` into a new database under `dir`.
pub async fn measure(dir: &Path, seconds: f64, bytes: usize) -> anyhow::Result<Ceiling> {
    let path = dir.join("ceiling.db");
    let pool = db::open_pool(&path).await?;
    pool.close().await;
    let mut conn = db::open_writer_connection(&path).await?;
    let payload = bytes::Bytes::from(super::recorder::payload(7, 0, bytes));
    let crc32c = crc32c::crc32c(&payload);
    let started = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    let mut rows = 0u64;
    let mut round = 0u32;
    while started.elapsed() < limit {
        // Each round takes new indexes: every row is a new one.
        let batch: Vec<(i64, ChunkFrame)> = (0..MAX_BATCH_ROWS as u32)
            .map(|i| {
                let frame = ChunkFrame {
                    index: round * MAX_BATCH_ROWS as u32 + i,
                    flags: 0,
                    crc32c,
                    payload: payload.clone(),
                };
                (i64::from(i) % SESSIONS, frame)
            })
            .collect();
        let rows_ref: Vec<(i64, &ChunkFrame)> = batch.iter().map(|(s, f)| (*s, f)).collect();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        db::chunks::insert_rows(&mut tx, &rows_ref)
            .await
            .context("inserting rows")?;
        tx.commit().await?;
        rows += batch.len() as u64;
        round += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(Ceiling {
        rows_per_second: rows as f64 / elapsed,
        mb_per_second: (rows * bytes as u64) as f64 / elapsed / 1e6,
        batch_rows: MAX_BATCH_ROWS,
        seconds: elapsed,
    })
}
