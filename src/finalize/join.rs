//! Joining a session's chunks into one recording file.
//!
//! One function, [`join_chunks`], decides how chunks become a file. WebM is
//! rewritten ([`crate::media::webm_rewrite`]) so players know its length and
//! can seek; Ogg is joined as it is and its duration read; every other type
//! is joined byte for byte. The rewrite can never
//! lose or withhold a recording: the chunks are first joined as they came
//! into a scratch file, and if the rewrite fails at any point that join is
//! the recording (`rewritten: false`, logged and counted).

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::domain::MimeType;
use crate::media::ogg::OggDuration;
use crate::media::webm_rewrite::{Layout, RewriteError, Rewriter};
use crate::storage::{LocalRecordings, RecordingWriter, Scratch};

/// What the join produced: the file and the source it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub bytes: i64,
    pub sha256: String,
    pub source_bytes: i64,
    pub source_sha256: String,
    /// Known only where the join understands the container.
    pub duration_ms: Option<i64>,
    /// The container was rewritten (WebM with Duration and Cues).
    pub rewritten: bool,
}

/// Writes `chunks` (in index order) into `out` as one recording of `mime_type`;
/// `scratch` holds work in progress under the recording's `key`.
pub async fn join_chunks<S>(
    mime_type: &MimeType,
    chunks: S,
    scratch: &LocalRecordings,
    key: &str,
    out: &mut RecordingWriter,
) -> anyhow::Result<Joined>
where
    S: Stream<Item = anyhow::Result<Vec<u8>>> + Unpin,
{
    match mime_type.essence().as_str() {
        "audio/webm" | "video/webm" => join_webm(chunks, scratch, key, out).await,
        "audio/ogg" | "video/ogg" | "application/ogg" => {
            join_plain(chunks, out, Some(OggDuration::default())).await
        }
        _ => join_plain(chunks, out, None).await,
    }
}

/// Joins byte for byte; with `ogg`, also reads the Ogg/Opus duration.
async fn join_plain<S>(
    mut chunks: S,
    out: &mut RecordingWriter,
    ogg: Option<OggDuration>,
) -> anyhow::Result<Joined>
where
    S: Stream<Item = anyhow::Result<Vec<u8>>> + Unpin,
{
    let mut source = Counted::default();
    let mut ogg = ogg.map(Ok);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        source.add(&chunk);
        out.write_all(&chunk).await?;
        if let Some(Ok(duration)) = &mut ogg
            && let Err(e) = duration.push(&chunk)
        {
            ogg = Some(Err(e));
        }
    }
    let duration_ms = match ogg.map(|reading| reading.and_then(OggDuration::finish)) {
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the Ogg duration could not be read");
            None
        }
        None => None,
    };
    let (bytes, sha256) = source.done();
    Ok(Joined {
        bytes,
        sha256: sha256.clone(),
        source_bytes: bytes,
        source_sha256: sha256,
        duration_ms,
        rewritten: false,
    })
}

/// Joins into a raw scratch file while rewriting into a body scratch file,
/// then writes the rewritten file, or the raw one if the rewrite failed.
async fn join_webm<S>(
    mut chunks: S,
    scratch: &LocalRecordings,
    key: &str,
    out: &mut RecordingWriter,
) -> anyhow::Result<Joined>
where
    S: Stream<Item = anyhow::Result<Vec<u8>>> + Unpin,
{
    let mut raw = scratch.scratch(key, "raw").await?;
    let mut body = scratch.scratch(key, "body").await?;
    let mut source = Counted::default();
    let mut rewrite = Ok(Rewriter::default());
    let mut pending = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        source.add(&chunk);
        raw.write_all(&chunk).await?;
        if let Ok(rewriter) = &mut rewrite {
            if let Err(e) = rewriter.push(&chunk, &mut pending) {
                rewrite = Err(e);
            }
            body.write_all(&pending).await?;
            pending.clear();
        }
    }
    let layout = rewrite.and_then(|rewriter| rewriter.finish(&mut pending));
    body.write_all(&pending).await?;
    let (source_bytes, source_sha256) = source.done();
    let mut written = Counted::default();
    let (duration_ms, rewritten) = match layout {
        Ok(Layout {
            head,
            tail,
            duration_ms,
        }) => {
            write_counted(out, &mut written, &head).await?;
            copy_counted(&mut body, out, &mut written).await?;
            write_counted(out, &mut written, &tail).await?;
            (Some(duration_ms), true)
        }
        Err(e) => {
            not_rewritten(&e);
            copy_counted(&mut raw, out, &mut written).await?;
            (None, false)
        }
    };
    let (bytes, sha256) = written.done();
    Ok(Joined {
        bytes,
        sha256,
        source_bytes,
        source_sha256,
        duration_ms,
        rewritten,
    })
}

fn not_rewritten(error: &RewriteError) {
    tracing::warn!(error = %error, "the WebM could not be rewritten; serving the chunks joined as they came");
}

/// A byte count and SHA-256 over everything added.
#[derive(Default)]
struct Counted {
    hasher: Sha256,
    bytes: i64,
}

impl Counted {
    fn add(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as i64;
    }

    fn done(self) -> (i64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

async fn write_counted(
    out: &mut RecordingWriter,
    counted: &mut Counted,
    bytes: &[u8],
) -> anyhow::Result<()> {
    counted.add(bytes);
    out.write_all(bytes).await
}

async fn copy_counted(
    from: &mut Scratch,
    out: &mut RecordingWriter,
    counted: &mut Counted,
) -> anyhow::Result<()> {
    let file = from.rewind().await?;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        write_counted(out, counted, &buffer[..read]).await?;
    }
}
