//! Joining a session's chunks into one recording file.
//!
//! One function, [`join_chunks`], decides how chunks become a file, so a
//! container-aware join (the WebM rewrite) plugs in here. Today every type is
//! joined byte for byte, so the file is exactly the source.

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::domain::MimeType;
use crate::storage::RecordingWriter;

/// What the join produced: the file and the source it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub bytes: i64,
    pub sha256: String,
    pub source_bytes: i64,
    pub source_sha256: String,
    /// Known only where the join understands the container.
    pub duration_ms: Option<i64>,
}

/// Writes `chunks` (in index order) into `out` as one recording of `mime_type`.
pub async fn join_chunks<S>(
    _mime_type: &MimeType,
    mut chunks: S,
    out: &mut RecordingWriter,
) -> anyhow::Result<Joined>
where
    S: Stream<Item = anyhow::Result<Vec<u8>>> + Unpin,
{
    let mut hasher = Sha256::new();
    let mut bytes = 0i64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        bytes += chunk.len() as i64;
        out.write_all(&chunk).await?;
    }
    let sha256 = hex::encode(hasher.finalize());
    Ok(Joined {
        bytes,
        sha256: sha256.clone(),
        source_bytes: bytes,
        source_sha256: sha256,
        duration_ms: None,
    })
}
