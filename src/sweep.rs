//! Removing what nothing needs any more, so that a delete, a failed session
//! or a crash leaves nothing behind:
//! - sessions marked deleted: their chunks (in slices), recording file, then row;
//! - chunks of sessions that are ready, deleted or gone, or failed with nothing
//!   acknowledged;
//! - recording files that no live or ready session owns;
//! - with `--keep-recordings`, the files of recordings older than that (the
//!   session stays `ready`, marked expired, and downloads answer 410).
//!
//! Every step is idempotent and keyed by session numbers that are never
//! reused, so it may run twice at once (a delete request and the sweep) or be
//! cut short by a crash or a stop and simply run again. One item that fails
//! (a file that cannot be removed, say) is logged and skipped, never blocking
//! the rest.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::db::{self, Database, sessions::ChunkHolder, sessions::FileOwner};
use crate::domain::{SessionId, SessionState};
use crate::metrics::Metrics;
use crate::storage::Recordings;
use crate::writer::WriterHandle;

/// How often the sweep finishes deletes that an error cut short.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Every how many passes it is thorough: it also walks every session that
/// has chunks (normally deleted by the finalize step; this catches a failed
/// delete) and every recording file.
const THOROUGH_EVERY: u32 = 10;
/// Deleted sessions read per query.
const PAGE: i64 = 100;

/// Removes deleted sessions' data and whatever a crash or an error left.
#[derive(Clone)]
pub struct Sweeper {
    db: Arc<dyn Database>,
    recordings: Recordings,
    /// Chunk deletes go through the writer, like every chunk write.
    writer: WriterHandle,
    retention: Option<Retention>,
}

/// `--keep-recordings`, and where to count what it removes.
#[derive(Clone)]
pub struct Retention {
    pub keep: Duration,
    pub metrics: Arc<Metrics>,
}

/// What one pass removed, and how many items it had to skip.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub sessions: u64,
    pub chunks: u64,
    pub files: u64,
    pub failures: u64,
    /// Recordings removed by retention.
    pub expired: u64,
}

impl Sweeper {
    pub fn new(db: Arc<dyn Database>, recordings: Recordings, writer: WriterHandle) -> Self {
        Self {
            db,
            recordings,
            writer,
            retention: None,
        }
    }

    pub fn with_retention(self, retention: Option<Retention>) -> Self {
        Self { retention, ..self }
    }

    /// Removes a session already marked deleted: chunks, recording, then the
    /// row, so that a crash at any point leaves the `deleted` mark for the
    /// next pass. Returns the chunks deleted.
    pub async fn purge(&self, seq: i64, public_id: &str) -> anyhow::Result<u64> {
        let chunks = self
            .writer
            .delete_chunks(seq)
            .await
            .context("deleting a deleted session's chunks")?;
        self.recordings
            .delete(public_id)
            .await
            .context("deleting a deleted session's recording")?;
        self.db
            .remove_deleted(seq)
            .await
            .context("removing a deleted session's row")?;
        Ok(chunks)
    }

    /// One pass: finishes interrupted deletes; when `thorough`, also
    /// releases garbage chunks and removes orphan recording files.
    pub async fn pass(&self, thorough: bool) -> anyhow::Result<Swept> {
        let mut swept = Swept::default();
        self.purge_deleted(&mut swept).await?;
        self.expire_recordings(&mut swept).await?;
        if thorough {
            self.release_garbage_chunks(&mut swept).await?;
            self.remove_orphan_files(&mut swept).await?;
        }
        Ok(swept)
    }

    /// Finishes every delete that a crash or an error cut short.
    async fn purge_deleted(&self, swept: &mut Swept) -> anyhow::Result<()> {
        let mut after = 0;
        loop {
            let page = self
                .db
                .deleted_sessions(after, PAGE)
                .await
                .context("listing deleted sessions")?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = *last;
            for (seq, public_id) in page {
                match self.purge(seq, &public_id).await {
                    Ok(chunks) => {
                        swept.sessions += 1;
                        swept.chunks += chunks;
                    }
                    Err(e) => skipped(swept, &e, "finishing a delete"),
                }
            }
        }
    }

    /// Removes the files of recordings older than `--keep-recordings`:
    /// marked expired first, so a crash in between leaves a file the sweep
    /// knows to be garbage, never a ready session without its file unmarked.
    async fn expire_recordings(&self, swept: &mut Swept) -> anyhow::Result<()> {
        let Some(retention) = &self.retention else {
            return Ok(());
        };
        let cutoff = db::now_ms() - i64::try_from(retention.keep.as_millis()).unwrap_or(i64::MAX);
        loop {
            let due = self
                .db
                .recordings_to_expire(cutoff, PAGE)
                .await
                .context("looking for recordings past retention")?;
            if due.is_empty() {
                return Ok(());
            }
            for (seq, public_id) in due {
                self.db
                    .mark_expired(seq, db::now_ms())
                    .await
                    .context("marking a recording expired")?;
                match self.recordings.delete(&public_id).await {
                    Ok(()) => {
                        tracing::info!(session = %public_id, "recording past retention deleted");
                        retention.metrics.recording_expired();
                        swept.expired += 1;
                    }
                    Err(e) => skipped(swept, &e, "deleting an expired recording"),
                }
            }
        }
    }

    /// Deletes the chunks of every session that no longer needs them.
    async fn release_garbage_chunks(&self, swept: &mut Swept) -> anyhow::Result<()> {
        let mut after = i64::MIN;
        while let Some(seq) = self
            .db
            .next_session_with_chunks(after)
            .await
            .context("looking for sessions with chunks")?
        {
            after = seq;
            let holder = self
                .db
                .chunk_holder(seq)
                .await
                .context("reading a session's state")?;
            if needs_chunks(holder.as_ref()) {
                continue;
            }
            match self.writer.delete_chunks(seq).await {
                Ok(chunks) => swept.chunks += chunks,
                Err(e) => skipped(swept, &e.into(), "deleting garbage chunks"),
            }
        }
        Ok(())
    }

    /// Deletes recording files that no session owns: a crash between writing
    /// a file and recording it, or inside a delete. Files whose names are not
    /// session ids are not Spool's and are left alone, and so is everything
    /// while another database keeps recordings in the same place.
    async fn remove_orphan_files(&self, swept: &mut Swept) -> anyhow::Result<()> {
        let ours = self
            .db
            .installation_id()
            .await
            .context("reading this database's installation id")?;
        // Written at start-up; written again if it has gone since (a
        // lifecycle rule, a hand), before anything is deleted.
        self.recordings.register(&ours).await?;
        let listing = self.recordings.list().await?;
        let others: Vec<&String> = listing.databases.iter().filter(|id| **id != ours).collect();
        if !others.is_empty() {
            tracing::warn!(
                this_database = %ours,
                other_databases = ?others,
                "orphan recordings are not removed: other databases keep recordings in the same \
                 storage prefix, and theirs would look like orphans here; give each database a \
                 prefix of its own (or delete the spool-database-<id>.json marker of a database \
                 that is gone for good)"
            );
            return Ok(());
        }
        for key in listing.recordings {
            if SessionId::parse(&key).is_err() {
                continue;
            }
            let owner = self
                .db
                .file_owner(&key)
                .await
                .context("looking up a recording's session")?;
            if owns_recording(owner.as_ref()) {
                continue;
            }
            match self.recordings.delete(&key).await {
                Ok(()) => swept.files += 1,
                Err(e) => skipped(swept, &e, "removing an orphan recording"),
            }
        }
        Ok(())
    }
}

fn skipped(swept: &mut Swept, error: &anyhow::Error, doing: &str) {
    swept.failures += 1;
    tracing::warn!(error = %format!("{error:#}"), "sweep: {doing} failed; retrying next pass");
}

/// Unfinished sessions need their chunks, and so does anything holding
/// acknowledged chunks that is not a recording yet. A state this version
/// does not know keeps them too.
fn needs_chunks(holder: Option<&ChunkHolder>) -> bool {
    let Some(holder) = holder else {
        return false;
    };
    match SessionState::parse(&holder.state) {
        Ok(SessionState::Recording | SessionState::Finishing) | Err(_) => true,
        Ok(SessionState::Failed) => holder.committed > 0,
        Ok(SessionState::Ready | SessionState::Deleted) => false,
    }
}

/// A file belongs to a session being finalized (it may be mid-rename) or
/// ready and not expired, or to a state this version does not know.
fn owns_recording(owner: Option<&FileOwner>) -> bool {
    owner.is_some_and(|owner| {
        !owner.expired
            && !matches!(
                SessionState::parse(&owner.state),
                Ok(SessionState::Failed | SessionState::Deleted)
            )
    })
}

/// Sweeps thoroughly at start-up (until one thorough pass goes through
/// without a failure), then every `SWEEP_EVERY`, until `stop`, which
/// also interrupts a pass in progress (every step of it is safe to cut).
pub async fn run(sweeper: Sweeper, stop: CancellationToken) {
    let mut thorough_ok = false;
    for pass in 0u32.. {
        let thorough = !thorough_ok || pass.is_multiple_of(THOROUGH_EVERY);
        let result = tokio::select! {
            result = sweeper.pass(thorough) => result,
            () = stop.cancelled() => return,
        };
        match result {
            Ok(swept) => {
                thorough_ok |= thorough && swept.failures == 0;
                let removed = Swept {
                    failures: 0,
                    expired: 0,
                    ..swept
                };
                if removed != Swept::default() {
                    tracing::info!(
                        deleted_sessions = swept.sessions,
                        chunks = swept.chunks,
                        files = swept.files,
                        "swept data no session needs"
                    );
                }
            }
            Err(e) => {
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

    fn holder(state: &str, committed: i64) -> Option<ChunkHolder> {
        Some(ChunkHolder {
            state: state.into(),
            committed,
        })
    }

    #[test]
    fn acknowledged_chunks_are_kept_until_they_are_a_recording() {
        for keep in [
            holder("recording", 0),
            holder("finishing", 3),
            holder("failed", 3),
            holder("a-future-state", 0),
        ] {
            assert!(needs_chunks(keep.as_ref()), "{keep:?}");
        }
        for release in [
            holder("ready", 3),
            holder("deleted", 3),
            holder("failed", 0),
            None,
        ] {
            assert!(!needs_chunks(release.as_ref()), "{release:?}");
        }
    }

    #[test]
    fn only_failed_deleted_expired_and_gone_sessions_lose_their_files() {
        let owner = |state: &str, expired| {
            Some(FileOwner {
                state: state.into(),
                expired,
            })
        };
        for keeps in [
            owner("ready", false),
            owner("finishing", false),
            owner("a-future-state", false),
        ] {
            assert!(owns_recording(keeps.as_ref()), "{keeps:?}");
        }
        for gone in [
            owner("failed", false),
            owner("deleted", false),
            owner("ready", true),
            None,
        ] {
            assert!(!owns_recording(gone.as_ref()), "{gone:?}");
        }
    }
}
