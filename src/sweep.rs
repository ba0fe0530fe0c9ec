//! Removing what nothing needs any more, so that a delete, a failed session
//! or a crash leaves nothing behind:
//! - sessions marked deleted: their chunks (in slices), recording file, then row;
//! - chunks of sessions that are ready, failed, deleted or gone;
//! - recording files that no live or ready session owns (at start-up).
//!
//! Every step is idempotent and keyed by session numbers that are never
//! reused, so it may run twice at once (a delete request and the sweep) or be
//! cut short by a crash and simply run again.

use std::time::Duration;

use anyhow::Context;
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::domain::{SessionId, SessionState};
use crate::storage::LocalRecordings;

/// How often the sweep finishes deletes that an error cut short.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Every how many passes it also walks every session that has chunks (they
/// are normally deleted by the finalize step; this catches a failed delete).
const GARBAGE_WALK_EVERY: u32 = 10;
/// Deleted sessions read per query.
const PAGE: i64 = 100;

#[derive(Clone)]
pub struct Sweeper {
    pool: SqlitePool,
    recordings: LocalRecordings,
}

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub sessions: u64,
    pub chunks: u64,
    pub files: u64,
}

impl Sweeper {
    pub fn new(pool: SqlitePool, recordings: LocalRecordings) -> Self {
        Self { pool, recordings }
    }

    /// Removes a session already marked deleted: chunks, recording, then the
    /// row, so that a crash at any point leaves the `deleted` mark for the
    /// next pass. Returns the chunks deleted.
    pub async fn purge(&self, seq: i64, public_id: &str) -> anyhow::Result<u64> {
        let chunks = db::chunks::delete_all(&self.pool, seq)
            .await
            .context("deleting a deleted session's chunks")?;
        self.recordings
            .delete(public_id)
            .await
            .context("deleting a deleted session's recording")?;
        db::sessions::remove_deleted(&self.pool, seq)
            .await
            .context("removing a deleted session's row")?;
        Ok(chunks)
    }

    /// One pass over the database: unfinished purges, and garbage chunks
    /// when `walk_chunks`.
    pub async fn sweep(&self, walk_chunks: bool) -> anyhow::Result<Swept> {
        let (sessions, purged_chunks) = self.purge_deleted().await?;
        let chunks = if walk_chunks {
            self.release_garbage_chunks().await?
        } else {
            0
        };
        Ok(Swept {
            sessions,
            chunks: purged_chunks + chunks,
            files: 0,
        })
    }

    /// Finishes every delete that a crash or an error cut short.
    async fn purge_deleted(&self) -> anyhow::Result<(u64, u64)> {
        let (mut sessions, mut chunks, mut after) = (0, 0, 0);
        loop {
            let page = db::sessions::deleted_sessions(&self.pool, after, PAGE)
                .await
                .context("listing deleted sessions")?;
            let Some((last, _)) = page.last() else {
                return Ok((sessions, chunks));
            };
            after = *last;
            for (seq, public_id) in page {
                chunks += self.purge(seq, &public_id).await?;
                sessions += 1;
            }
        }
    }

    /// Deletes the chunks of every session that no longer needs them.
    async fn release_garbage_chunks(&self) -> anyhow::Result<u64> {
        let (mut deleted, mut after) = (0, i64::MIN);
        while let Some(seq) = db::chunks::next_session_with_chunks(&self.pool, after)
            .await
            .context("looking for sessions with chunks")?
        {
            after = seq;
            let state = db::sessions::state_by_seq(&self.pool, seq)
                .await
                .context("reading a session's state")?;
            if !needs_chunks(state.as_deref()) {
                deleted += db::chunks::delete_all(&self.pool, seq)
                    .await
                    .context("deleting garbage chunks")?;
            }
        }
        Ok(deleted)
    }

    /// Deletes recording files that no session owns: a crash between writing
    /// a file and recording it, or inside a delete. Files whose names are not
    /// session ids are not Spool's and are left alone.
    pub async fn remove_orphan_files(&self) -> anyhow::Result<u64> {
        let mut removed = 0;
        for key in self.recordings.keys().await? {
            if SessionId::parse(&key).is_err() {
                continue;
            }
            let state = db::sessions::state_by_public_id(&self.pool, &key)
                .await
                .context("looking up a recording's session")?;
            if !owns_recording(state.as_deref()) {
                self.recordings.delete(&key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Recording and finishing sessions need their chunks; nothing else does.
fn needs_chunks(state: Option<&str>) -> bool {
    matches!(
        state.map(SessionState::parse),
        Some(Ok(SessionState::Recording | SessionState::Finishing))
    )
}

/// A file belongs to a session being finalized (it may be mid-rename) or ready.
fn owns_recording(state: Option<&str>) -> bool {
    matches!(
        state.map(SessionState::parse),
        Some(Ok(SessionState::Recording
            | SessionState::Finishing
            | SessionState::Ready))
    )
}

/// Sweeps everything at start-up (files included), then every
/// [`SWEEP_EVERY`], until `stop`.
pub async fn run(sweeper: Sweeper, stop: CancellationToken) {
    for pass in 0u32.. {
        let files = if pass == 0 {
            sweeper.remove_orphan_files().await
        } else {
            Ok(0)
        };
        let walk_chunks = pass % GARBAGE_WALK_EVERY == 0;
        match (sweeper.sweep(walk_chunks).await, files) {
            (Ok(swept), Ok(files)) => {
                let swept = Swept { files, ..swept };
                if swept != Swept::default() {
                    tracing::info!(
                        deleted_sessions = swept.sessions,
                        chunks = swept.chunks,
                        files = swept.files,
                        "swept data no session needs"
                    );
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "sweep failed; retrying later")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(SWEEP_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unfinished_sessions_keep_chunks() {
        assert!(needs_chunks(Some("recording")) && needs_chunks(Some("finishing")));
        for gone in [Some("ready"), Some("failed"), Some("deleted"), None] {
            assert!(!needs_chunks(gone), "{gone:?}");
        }
        assert!(owns_recording(Some("ready")) && owns_recording(Some("finishing")));
        for gone in [Some("failed"), Some("deleted"), None] {
            assert!(!owns_recording(gone), "{gone:?}");
        }
    }
}
