//! Recordings in a local directory (the default).
//!
//! A recording is written to a temporary file, fsynced, renamed into place
//! and the directory fsynced, so a reader (or a crash) sees either no file or
//! the whole file, never a part.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::fs::{self, File};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

const TEMP_MARKER: &str = ".partial-";

#[derive(Debug, Clone)]
pub struct LocalRecordings {
    dir: PathBuf,
}

impl LocalRecordings {
    /// Creates the directory if needed and removes temporary files that a
    /// crash left behind (they were never renamed, so nothing refers to them).
    pub async fn open(dir: PathBuf) -> anyhow::Result<Self> {
        fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut entries = fs::read_dir(&dir)
            .await
            .with_context(|| format!("listing {}", dir.display()))?;
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_name().to_string_lossy().contains(TEMP_MARKER) {
                fs::remove_file(entry.path())
                    .await
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(Self { dir })
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Starts writing the recording `key`; nothing is visible until `commit`.
    pub async fn create(&self, key: &str) -> anyhow::Result<LocalWriter> {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce)?;
        let temp_path = self
            .dir
            .join(format!("{key}{TEMP_MARKER}{}", hex::encode(nonce)));
        let file = File::create(&temp_path)
            .await
            .with_context(|| format!("creating {}", temp_path.display()))?;
        Ok(LocalWriter {
            file: BufWriter::with_capacity(256 * 1024, file),
            temp_path,
            final_path: self.path_of(key),
            dir: self.dir.clone(),
        })
    }

    /// A scratch file for work in progress (the rewritten
    /// body of a recording), removed when dropped, or by the next start
    /// if the process dies first.
    pub async fn scratch(&self, key: &str, purpose: &str) -> anyhow::Result<Scratch> {
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce)?;
        let path = self.dir.join(format!(
            "{key}{TEMP_MARKER}{purpose}-{}",
            hex::encode(nonce)
        ));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch {
            file: BufWriter::with_capacity(256 * 1024, file),
            path,
        })
    }

    /// The recording's length in bytes, or `None` if there is no such recording.
    pub async fn len(&self, key: &str) -> anyhow::Result<Option<u64>> {
        match fs::metadata(self.path_of(key)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("reading a recording's size"),
        }
    }

    /// Bytes `start..start + len` of the recording.
    pub async fn read_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
    ) -> anyhow::Result<impl AsyncRead + Send + use<>> {
        let path = self.path_of(key);
        let mut file = File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        file.seek(SeekFrom::Start(start))
            .await
            .context("seeking in a recording")?;
        Ok(file.take(len))
    }

    /// Removes the recording; succeeds if it is already gone.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match fs::remove_file(self.path_of(key)).await {
            Ok(()) => sync_dir(&self.dir).await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("deleting a recording"),
        }
    }

    /// The keys of every recording stored (temporary files left out).
    pub async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let mut entries = fs::read_dir(&self.dir)
            .await
            .with_context(|| format!("listing {}", self.dir.display()))?;
        let mut keys = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.contains(TEMP_MARKER) {
                keys.push(name);
            }
        }
        Ok(keys)
    }
}

/// A scratch file: written, then read back from the start.
pub struct Scratch {
    file: BufWriter<File>,
    path: PathBuf,
}

impl Scratch {
    pub async fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file
            .write_all(bytes)
            .await
            .context("writing a scratch file")
    }

    /// Everything written, from the start, for reading.
    pub async fn rewind(&mut self) -> anyhow::Result<&mut File> {
        self.file.flush().await.context("flushing a scratch file")?;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0))
            .await
            .context("rewinding a scratch file")?;
        Ok(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A recording being written. Dropped without `commit`, it leaves only a
/// temporary file that the next start removes.
pub struct LocalWriter {
    file: BufWriter<File>,
    temp_path: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
}

impl LocalWriter {
    pub async fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file
            .write_all(bytes)
            .await
            .context("writing a recording")
    }

    /// Makes the recording durable and visible: fsync, rename, fsync the directory.
    pub async fn commit(mut self) -> anyhow::Result<()> {
        self.file.flush().await.context("flushing a recording")?;
        self.file
            .get_mut()
            .sync_all()
            .await
            .context("fsyncing a recording")?;
        fs::rename(&self.temp_path, &self.final_path)
            .await
            .context("moving a recording into place")?;
        sync_dir(&self.dir).await
    }

    /// Discards what was written.
    pub async fn abandon(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.temp_path).await;
    }
}

async fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .await?
        .sync_all()
        .await
        .with_context(|| format!("fsyncing directory {}", dir.display()))
}
