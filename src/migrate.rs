//! `spool migrate-to`: moves a single-node install (SQLite in the data
//! directory, recordings in `<data-dir>/recordings`) to PostgreSQL and,
//! with `--storage`, S3-compatible storage, so several nodes can serve it.
//!
//! The server must be stopped: the command holds the data directory's lock
//! meanwhile. Each session moves in one transaction with its chunks; its
//! recording is copied and its SHA-256 checked *before* its row lands, so
//! no row ever points at a missing or different recording, and each copied
//! session's chunks are read back and checked. A run cut short is simply
//! run again: sessions already there are skipped. The source is never
//! changed.
//!
//! The data directory's admin token becomes the one every node accepts
//! (unless the database has one already), so the admin keeps their token.

#![allow(rustdoc::invalid_html_tags)] // `<data-dir>` in the --help text

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use sha2::Digest;
use tokio::io::AsyncReadExt;

use crate::admin_token;
use crate::config::{DatabaseUrl, parse_database_url, parse_storage};
use crate::db::chunks::{self, StoredChunk};
use crate::db::export::{self, ExportedSession};
use crate::db::postgres::{ChunkDigest, Imported, PostgresDatabase};
use crate::db::{Database, sqlite};
use crate::domain::{MimeType, TokenHash};
use crate::storage::{LocalRecordings, RecordingWriter, Recordings, S3Location, S3Recordings};

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database to copy into (its tables are created; start the nodes after the
    /// copy: a running node could sweep a recording copied before its session row).
    #[arg(long, env = "SPOOL_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    pub database_url: DatabaseUrl,
    /// Where to copy the recordings: s3://bucket/prefix (the AWS_* variables configure it).
    /// Unset: they stay in <data-dir>/recordings, checked but not copied.
    #[arg(long, env = "SPOOL_STORAGE", value_parser = parse_storage)]
    pub storage: Option<S3Location>,
    /// The single-node install to copy from (its server stopped).
    #[arg(long, env = "SPOOL_DATA_DIR", default_value = "./spool-data")]
    pub data_dir: PathBuf,
}

/// Sessions read from SQLite per query.
const PAGE: i64 = 100;
/// How often progress is printed, in sessions.
const PROGRESS_EVERY: u64 = 100;

/// What a run copied.
#[derive(Debug, Default)]
struct Copied {
    sessions: u64,
    skipped: u64,
    chunks: u64,
    recordings: u64,
    recording_bytes: u64,
    events: u64,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let database = args.data_dir.join("spool.db");
    anyhow::ensure!(
        database.exists(),
        "{} has no spool.db: point --data-dir at the single-node install",
        args.data_dir.display()
    );
    let _lock = crate::startup::lock_data_dir(&args.data_dir)
        .context("stop the server before migrating its data")?;
    let source = sqlite::open_pool(&database).await?;
    let target = PostgresDatabase::open(args.database_url.expose()).await?;
    let local = Recordings::Local(LocalRecordings::open(args.data_dir.join("recordings")).await?);
    let remote = match &args.storage {
        Some(at) => Some(Recordings::S3 {
            objects: S3Recordings::open(at.clone()).await?,
            scratch: LocalRecordings::open(args.data_dir.join("scratch")).await?,
        }),
        None => None,
    };
    if let Some(remote) = &remote {
        remote.register(&target.installation_id().await?).await?;
    }
    println!(
        "copying {} into PostgreSQL{}",
        database.display(),
        match &args.storage {
            Some(at) => format!(" and its recordings into {at}"),
            None => String::new(),
        }
    );

    let mut copied = Copied::default();
    let mut after = 0;
    loop {
        let page = export::sessions_after(&source, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for session in &page {
            copy_session(
                &source,
                &target,
                &local,
                remote.as_ref(),
                session,
                &mut copied,
            )
            .await
            .with_context(|| format!("copying session {}", session.public_id))?;
            let done = copied.sessions + copied.skipped;
            if done % PROGRESS_EVERY == 0 {
                println!(
                    "  {done} sessions ({} copied, {} there already), {} chunks, {} recordings",
                    copied.sessions, copied.skipped, copied.chunks, copied.recordings
                );
            }
        }
    }
    for event in export::undelivered_events(&source).await? {
        target.import_event(&event).await?;
        copied.events += 1;
    }
    println!(
        "done: {} sessions copied, {} there already; {} chunks and {} recordings ({} bytes) checked by SHA-256; {} undelivered webhook events",
        copied.sessions,
        copied.skipped,
        copied.chunks,
        copied.recordings,
        copied.recording_bytes,
        copied.events
    );
    let token_file = admin_token::path_in(&args.data_dir);
    let token_note = match admin_token::read(&token_file)? {
        Some(token) => {
            let ours = TokenHash::of(&token);
            if target.share_admin_token(&ours).await? == ours {
                format!(
                    "the admin token in {} works on every node",
                    token_file.display()
                )
            } else {
                "the database had an admin token already; that one works on every node, not the one in this data directory".to_owned()
            }
        }
        None => "the first node to start makes the admin token every node accepts".to_owned(),
    };
    println!(
        "start every node with --database-url{}; {token_note} (or give them all the same --admin-token)",
        if args.storage.is_some() {
            " and --storage"
        } else {
            ""
        }
    );
    Ok(())
}

async fn copy_session(
    source: &sqlx::SqlitePool,
    target: &PostgresDatabase,
    local: &Recordings,
    remote: Option<&Recordings>,
    session: &ExportedSession,
    copied: &mut Copied,
) -> anyhow::Result<()> {
    let id = &session.public_id;
    if target.has_session(id).await? {
        copied.skipped += 1;
        return Ok(());
    }
    // The recording first: once the row lands, it must be there.
    if let (Some(sha256), None) = (&session.recording_sha256, session.recording_expired_at) {
        let mime = MimeType::parse(&session.mime_type).unwrap_or_else(|_| MimeType::octet_stream());
        let bytes = copy_recording(local, remote, id, &mime, sha256).await?;
        copied.recordings += 1;
        copied.recording_bytes += bytes;
    }
    // Live sessions keep their chunks; those of ready and failed ones are garbage.
    let live = matches!(session.state.as_str(), "recording" | "finishing");
    let count = if live {
        session.max_index.map_or(0, |max| max + 1)
    } else {
        0
    };
    let (imported, digest) = target
        .import_session(
            session,
            chunks::stream_prefix(source, session.seq, count).boxed(),
        )
        .await?;
    let seq = match imported {
        Imported::AlreadyThere => {
            copied.skipped += 1;
            return Ok(());
        }
        Imported::New(seq) => seq,
    };
    if count > 0 {
        let mut read_back = ChunkDigest::default();
        let mut stored = 0u64;
        let mut chunks = target.stream_prefix(seq, count);
        while let Some(chunk) = chunks.next().await {
            let chunk: StoredChunk = chunk?;
            read_back.add(&chunk);
            stored += 1;
        }
        anyhow::ensure!(
            read_back.finish() == digest,
            "the chunks read back from PostgreSQL differ from SQLite's"
        );
        copied.chunks += stored;
    }
    copied.sessions += 1;
    Ok(())
}

/// Copies recording `id` to `remote` (or only reads it, without), checking
/// both ends against the SHA-256 the session recorded. Returns its size.
async fn copy_recording(
    local: &Recordings,
    remote: Option<&Recordings>,
    id: &str,
    mime: &MimeType,
    sha256: &str,
) -> anyhow::Result<u64> {
    let len = local
        .len(id)
        .await?
        .with_context(|| format!("recording {id} is missing from the recordings directory"))?;
    let mut out = match remote {
        Some(remote) => Some(remote.create(id, mime).await?),
        None => None,
    };
    let checked = match copy_bytes(local, id, len, out.as_mut()).await {
        Ok(local_sha) if local_sha == sha256 => Ok(()),
        Ok(local_sha) => Err(anyhow::anyhow!(
            "recording {id} on disk does not match its SHA-256 ({local_sha}, expected {sha256})"
        )),
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        if let Some(out) = out {
            out.abandon().await;
        }
        return Err(e);
    }
    if let (Some(out), Some(remote)) = (out, remote) {
        out.commit().await?;
        let copied = read_all_sha256(remote, id).await?;
        anyhow::ensure!(
            copied == sha256,
            "recording {id} read back from object storage does not match its SHA-256"
        );
    }
    Ok(len)
}

/// Reads recording `id` of `from` whole, writing it to `out` if given; its SHA-256.
async fn copy_bytes(
    from: &Recordings,
    id: &str,
    len: u64,
    mut out: Option<&mut RecordingWriter>,
) -> anyhow::Result<String> {
    let mut reader = from.read_range(id, 0, len).await?;
    let mut hash = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        hash.update(&buffer[..read]);
        if let Some(out) = out.as_deref_mut() {
            out.write_all(&buffer[..read]).await?;
        }
    }
    Ok(hex::encode(hash.finalize()))
}

async fn read_all_sha256(recordings: &Recordings, id: &str) -> anyhow::Result<String> {
    let len = recordings
        .len(id)
        .await?
        .with_context(|| format!("recording {id} is missing after its copy"))?;
    copy_bytes(recordings, id, len, None).await
}
