//! Where finished recordings live: write one durably, read a byte range,
//! delete, list. A local directory by default ([`LocalRecordings`]), or
//! S3-compatible object storage ([`S3Recordings`], `--storage s3://…`).
//! Either way a recording is invisible until it is whole and durable.
//!
//! Scratch files (work in progress of the finalize job) are always local.

mod local;
mod s3;

use std::time::Duration;

use tokio::io::AsyncRead;

use crate::domain::MimeType;

pub use local::{LocalRecordings, LocalWriter, Scratch};
pub use s3::{S3Location, S3Recordings, S3Writer};

/// One listing of the storage. In a bucket, several databases may keep
/// recordings under one prefix (a misconfiguration, or a data directory
/// started again without its database); each says so with a marker before
/// it writes any. A recording one database does not own may then be
/// another's, so orphans are only removed when no other database is
/// listed. Markers sort after every session id (hex digits), so a listing
/// that reaches a recording written after its database's marker reaches
/// that marker too.
#[derive(Debug, Default)]
pub struct Listing {
    /// The names of the stored objects that may be recordings.
    pub recordings: Vec<String>,
    /// The installation ids of the databases keeping recordings here.
    pub databases: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Recordings {
    Local(LocalRecordings),
    S3 {
        objects: S3Recordings,
        /// A local directory for scratch files.
        scratch: LocalRecordings,
    },
}

impl Recordings {
    /// Starts writing the recording `key`; nothing is visible until `commit`.
    /// An object store keeps its type and file name with it, for players
    /// sent there directly (a local file gets them when it is served).
    pub async fn create(&self, key: &str, mime: &MimeType) -> anyhow::Result<RecordingWriter> {
        Ok(match self {
            Self::Local(local) => RecordingWriter::Local(local.create(key).await?),
            Self::S3 { objects, .. } => RecordingWriter::S3(objects.create(key, mime)),
        })
    }

    /// A scratch file, removed when dropped (or by the next start).
    pub async fn scratch(&self, key: &str, purpose: &str) -> anyhow::Result<Scratch> {
        match self {
            Self::Local(local) | Self::S3 { scratch: local, .. } => {
                local.scratch(key, purpose).await
            }
        }
    }

    /// The recording's length in bytes, or `None` if there is no such recording.
    pub async fn len(&self, key: &str) -> anyhow::Result<Option<u64>> {
        match self {
            Self::Local(local) => local.len(key).await,
            Self::S3 { objects, .. } => objects.len(key).await,
        }
    }

    /// Bytes `start..start + len` of the recording, streamed.
    pub async fn read_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
    ) -> anyhow::Result<Box<dyn AsyncRead + Send + Unpin>> {
        match self {
            Self::Local(local) => Ok(Box::new(local.read_range(key, start, len).await?)),
            Self::S3 { objects, .. } => objects.read_range(key, start, len).await,
        }
    }

    /// Removes the recording; succeeds if it is already gone.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self {
            Self::Local(local) => local.delete(key).await,
            Self::S3 { objects, .. } => objects.delete(key).await,
        }
    }

    /// Marks the storage as holding recordings of `installation_id`, before
    /// this server writes any (see [`Listing`]). A local directory lives in
    /// its server's data directory, beside its database, so it needs none.
    pub async fn register(&self, installation_id: &str) -> anyhow::Result<()> {
        match self {
            Self::Local(_) => Ok(()),
            Self::S3 { objects, .. } => objects.register(installation_id).await,
        }
    }

    /// What is stored: every recording, and the databases that keep them here.
    pub async fn list(&self) -> anyhow::Result<Listing> {
        match self {
            Self::Local(local) => Ok(Listing {
                recordings: local.keys().await?,
                databases: Vec::new(),
            }),
            Self::S3 { objects, .. } => objects.list().await,
        }
    }

    /// The keys of every recording stored.
    pub async fn keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.list().await?.recordings)
    }

    /// A URL that serves the recording for `valid_for` without this server,
    /// where the backend can make one (S3's presigned GET).
    pub async fn presigned_url(
        &self,
        key: &str,
        valid_for: Duration,
    ) -> anyhow::Result<Option<String>> {
        match self {
            Self::Local(_) => Ok(None),
            Self::S3 { objects, .. } => Ok(Some(objects.presigned_url(key, valid_for).await?)),
        }
    }
}

/// A recording being written.
pub enum RecordingWriter {
    Local(LocalWriter),
    S3(S3Writer),
}

impl RecordingWriter {
    pub async fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Local(local) => local.write_all(bytes).await,
            Self::S3(s3) => s3.write_all(bytes).await,
        }
    }

    /// Makes the recording durable and visible.
    pub async fn commit(self) -> anyhow::Result<()> {
        match self {
            Self::Local(local) => local.commit().await,
            Self::S3(s3) => s3.commit().await,
        }
    }

    /// Discards what was written.
    pub async fn abandon(self) {
        match self {
            Self::Local(local) => local.abandon().await,
            Self::S3(s3) => s3.abandon().await,
        }
    }
}
