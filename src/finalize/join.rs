//! Joining a session's chunks into one recording file.
//!
//! One function, [`join_chunks`], decides how chunks become a file. WebM is
//! rewritten ([`crate::media::webm_rewrite`]) so players know its length and
//! can seek; Ogg and fragmented MP4 are joined as they are and their duration
//! read; every other type is joined byte for byte. A chunk flagged as
//! starting a new recorder stream tells each reader where one stream ends. The rewrite can never
//! lose or withhold a recording: the chunks are first joined as they came
//! into a scratch file, and if the rewrite fails at any point that join is
//! the recording (`rewritten: false`, logged and counted).

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::domain::MimeType;
use crate::media::mp4::Mp4Duration;
use crate::media::ogg::OggDuration;
use crate::media::webm_rewrite::{Layout, RewriteError, Rewriter};
use crate::storage::{RecordingWriter, Recordings, Scratch};

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

/// One stored chunk on its way into the recording.
pub struct SourceChunk {
    pub payload: Vec<u8>,
    /// The chunk begins a new recorder stream (protocol flag bit 0).
    pub starts_stream: bool,
}

/// Writes the chunks (in index order; `read_chunks` streams them, and may be
/// called again) into `out` as one recording of `mime_type`; `scratch` holds
/// work in progress under the recording's `key`.
pub async fn join_chunks<S>(
    mime_type: &MimeType,
    read_chunks: impl Fn() -> S,
    scratch: &Recordings,
    key: &str,
    out: &mut RecordingWriter,
) -> anyhow::Result<Joined>
where
    S: Stream<Item = anyhow::Result<SourceChunk>> + Unpin,
{
    let chunks = read_chunks();
    match mime_type.essence().as_str() {
        "audio/webm" | "video/webm" => match rewrite_webm(chunks, scratch, key, out).await? {
            Ok(joined) => Ok(joined),
            Err(e) => {
                not_rewritten(&e);
                join_plain(read_chunks(), out, None).await
            }
        },
        "audio/ogg" | "video/ogg" | "application/ogg" => {
            join_plain(
                chunks,
                out,
                Some(DurationReader::Ogg(OggDuration::default())),
            )
            .await
        }
        "audio/mp4" | "video/mp4" => {
            join_plain(
                chunks,
                out,
                Some(DurationReader::Mp4(Mp4Duration::default())),
            )
            .await
        }
        _ => join_plain(chunks, out, None).await,
    }
}

/// Reads how long a container joined as it is plays.
enum DurationReader {
    Ogg(OggDuration),
    Mp4(Mp4Duration),
}

impl DurationReader {
    fn push(&mut self, chunk: &SourceChunk) -> anyhow::Result<()> {
        match self {
            Self::Ogg(ogg) => {
                if chunk.starts_stream {
                    ogg.start_stream()?;
                }
                ogg.push(&chunk.payload)?;
            }
            Self::Mp4(mp4) => {
                if chunk.starts_stream {
                    mp4.start_stream();
                }
                mp4.push(&chunk.payload)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<i64> {
        Ok(match self {
            Self::Ogg(ogg) => ogg.finish()?,
            Self::Mp4(mp4) => mp4.finish()?,
        })
    }
}

/// Joins byte for byte; with a `reader`, also reads the duration.
async fn join_plain<S>(
    mut chunks: S,
    out: &mut RecordingWriter,
    reader: Option<DurationReader>,
) -> anyhow::Result<Joined>
where
    S: Stream<Item = anyhow::Result<SourceChunk>> + Unpin,
{
    let mut source = Counted::default();
    let mut reader = reader.map(Ok);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        source.add(&chunk.payload);
        out.write_all(&chunk.payload).await?;
        if let Some(Ok(duration)) = &mut reader
            && let Err(e) = duration.push(&chunk)
        {
            reader = Some(Err(e));
        }
    }
    let duration_ms = match reader.map(|reading| reading.and_then(DurationReader::finish)) {
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the recording's duration could not be read");
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

/// Rewrites into a body scratch file, then writes the file; or, when the
/// rewrite fails, says why and leaves `out` untouched.
async fn rewrite_webm<S>(
    mut chunks: S,
    scratch: &Recordings,
    key: &str,
    out: &mut RecordingWriter,
) -> anyhow::Result<Result<Joined, RewriteError>>
where
    S: Stream<Item = anyhow::Result<SourceChunk>> + Unpin,
{
    let mut body = scratch.scratch(key, "body").await?;
    let mut source = Counted::default();
    let mut rewriter = Rewriter::default();
    let mut pending = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        source.add(&chunk.payload);
        if chunk.starts_stream {
            rewriter.start_stream();
        }
        if let Err(e) = rewriter.push(&chunk.payload, &mut pending) {
            return Ok(Err(e));
        }
        body.write_all(&pending).await?;
        pending.clear();
    }
    let Layout {
        head,
        tail,
        duration_ms,
    } = match rewriter.finish(&mut pending) {
        Ok(layout) => layout,
        Err(e) => return Ok(Err(e)),
    };
    body.write_all(&pending).await?;
    let (source_bytes, source_sha256) = source.done();
    let mut written = Counted::default();
    write_counted(out, &mut written, &head).await?;
    copy_counted(&mut body, out, &mut written).await?;
    write_counted(out, &mut written, &tail).await?;
    let (bytes, sha256) = written.done();
    Ok(Ok(Joined {
        bytes,
        sha256,
        source_bytes,
        source_sha256,
        duration_ms: Some(duration_ms),
        rewritten: true,
    }))
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
