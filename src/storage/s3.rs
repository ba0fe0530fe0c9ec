//! Recordings in S3-compatible object storage, through `object_store`,
//! configured by the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
//!
//! A recording is uploaded in parts and becomes visible, whole, when the
//! multipart upload completes (one smaller than a part is a single PUT);
//! that completion is what `commit` waits for, so chunks are only released
//! once the object is durable. An upload that fails is aborted, so its
//! parts do not linger; one a crash cuts short is never visible (the
//! bucket's lifecycle rule for incomplete multipart uploads reclaims its
//! parts). Objects carry their session's Content-Type and a file name, for
//! players sent to the store directly (objects written by earlier versions
//! carry neither).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload,
};
use tokio::io::AsyncRead;
use tokio::task::JoinSet;

use super::Listing;
use crate::domain::MimeType;

/// Bytes buffered before a part is uploaded (S3's minimum part is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Parts uploading at once per recording: with the part being filled, at
/// most 24 MiB of a recording is in memory however long it is.
const UPLOADS_IN_FLIGHT: usize = 2;

/// The objects, under the prefix, that say which databases keep
/// recordings there: `spool-database-<installation id>.json`, one each. Not
/// session ids, so never taken for recordings.
const DATABASE_MARKER: (&str, &str) = ("spool-database-", ".json");

/// `s3://bucket/prefix`: where recordings go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Object keys start with this (no leading or trailing `/`); may be empty.
    pub prefix: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

#[derive(Debug, Clone)]
pub struct S3Recordings {
    store: Arc<AmazonS3>,
    location: S3Location,
}

impl S3Recordings {
    /// Connects and checks the bucket answers, so a wrong endpoint or key
    /// fails the start rather than the first recording.
    pub async fn open(location: S3Location) -> anyhow::Result<Self> {
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(&location.bucket)
            .build()
            .with_context(|| format!("configuring {location} from the AWS_* variables"))?;
        let recordings = Self {
            store: Arc::new(store),
            location,
        };
        // A listing, not a HEAD: a HEAD cannot tell a missing bucket from a
        // missing object.
        let prefix = recordings.prefix_path();
        recordings
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .with_context(|| format!("reaching {}", recordings.location))?;
        Ok(recordings)
    }

    fn prefix_path(&self) -> Option<Path> {
        (!self.location.prefix.is_empty()).then(|| Path::from(self.location.prefix.as_str()))
    }

    fn path_of(&self, key: &str) -> Path {
        if self.location.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.location.prefix))
        }
    }

    /// Starts writing recording `key` (the multipart upload begins when a
    /// first part fills).
    pub fn create(&self, key: &str, mime: &MimeType) -> S3Writer {
        let disposition = format!("inline; filename=\"{key}.{}\"", mime.file_extension());
        S3Writer {
            store: self.store.clone(),
            path: self.path_of(key),
            attributes: Attributes::from_iter([
                (Attribute::ContentType, mime.content_type()),
                (Attribute::ContentDisposition, disposition),
            ]),
            upload: None,
            part: Vec::new(),
            in_flight: JoinSet::new(),
        }
    }

    pub async fn len(&self, key: &str) -> anyhow::Result<Option<u64>> {
        match self.store.head(&self.path_of(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context("reading a recording's size")),
        }
    }

    /// Bytes `start..start + len`, as a ranged GET streamed as it arrives.
    pub async fn read_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
    ) -> anyhow::Result<Box<dyn AsyncRead + Send + Unpin>> {
        if len == 0 {
            return Ok(Box::new(tokio::io::empty()));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..start + len)),
            ..GetOptions::default()
        };
        let got = self
            .store
            .get_opts(&self.path_of(key), options)
            .await
            .context("reading a recording")?;
        let bytes = got.into_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(bytes)))
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.store.delete(&self.path_of(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context("deleting a recording")),
        }
    }

    /// The objects directly under the prefix: recordings, and the markers
    /// of the databases that keep them there. Deeper objects are not ours:
    /// they may be another database's, under a longer prefix.
    pub async fn list(&self) -> anyhow::Result<Listing> {
        let prefix = self.prefix_path();
        let names: Vec<String> = self
            .store
            .list(prefix.as_ref())
            .map_ok(|meta| {
                let mut rest = match &prefix {
                    Some(prefix) => meta.location.prefix_match(prefix)?.collect::<Vec<_>>(),
                    None => meta.location.parts().collect(),
                };
                let name = rest.pop().filter(|_| rest.is_empty())?;
                Some(name.as_ref().to_owned())
            })
            .try_filter_map(|name| std::future::ready(Ok(name)))
            .try_collect()
            .await
            .context("listing recordings")?;
        let mut listing = Listing::default();
        for name in names {
            let (head, tail) = DATABASE_MARKER;
            match name.strip_prefix(head).and_then(|id| id.strip_suffix(tail)) {
                Some(database) => listing.databases.push(database.to_owned()),
                None => listing.recordings.push(name),
            }
        }
        Ok(listing)
    }

    /// Marks the prefix as holding recordings of `database` (its
    /// installation id), before any is written: a database that lists the
    /// prefix and finds another's marker leaves what it does not own alone
    /// (see [`Listing`]).
    pub async fn register(&self, database: &str) -> anyhow::Result<()> {
        let (head, tail) = DATABASE_MARKER;
        let path = self.path_of(&format!("{head}{database}{tail}"));
        match self.store.head(&path).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {path}"))),
        }
        let marker = serde_json::json!({
            "database": database,
            "registered_at": chrono::Utc::now().to_rfc3339(),
        });
        self.store
            .put(&path, serde_json::to_vec_pretty(&marker)?.into())
            .await
            .with_context(|| format!("writing {path}"))?;
        Ok(())
    }

    /// A URL that lets its holder GET the recording for `valid_for`.
    pub async fn presigned_url(&self, key: &str, valid_for: Duration) -> anyhow::Result<String> {
        let url = self
            .store
            .signed_url(http::Method::GET, &self.path_of(key), valid_for)
            .await
            .context("signing a recording URL")?;
        Ok(url.to_string())
    }
}

/// A recording being uploaded; invisible until `commit` completes it.
pub struct S3Writer {
    store: Arc<AmazonS3>,
    path: Path,
    /// Content-Type and Content-Disposition, for players sent to the store.
    attributes: Attributes,
    /// Begun when the first part fills: a recording smaller than a part
    /// is one PUT.
    upload: Option<Box<dyn MultipartUpload>>,
    /// The part being filled, up to [`PART_BYTES`].
    part: Vec<u8>,
    /// Parts on their way, each in a task of its own so that it goes on
    /// while the next part is read.
    in_flight: JoinSet<object_store::Result<()>>,
}

impl S3Writer {
    /// Buffers `bytes`, sending each part as it fills; waits while
    /// [`UPLOADS_IN_FLIGHT`] parts are on their way.
    pub async fn write_all(&mut self, mut bytes: &[u8]) -> anyhow::Result<()> {
        while !bytes.is_empty() {
            let take = (PART_BYTES - self.part.len()).min(bytes.len());
            self.part.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.part.len() == PART_BYTES {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self) -> anyhow::Result<()> {
        while self.in_flight.len() >= UPLOADS_IN_FLIGHT {
            self.wait_for_one().await?;
        }
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => {
                let options = PutMultipartOptions {
                    attributes: self.attributes.clone(),
                    ..PutMultipartOptions::default()
                };
                let upload = self
                    .store
                    .put_multipart_opts(&self.path, options)
                    .await
                    .context("starting a recording's upload")?;
                self.upload.insert(upload)
            }
        };
        // The part's number is taken here, in order, whenever it finishes.
        let part = upload.put_part(PutPayload::from(std::mem::take(&mut self.part)));
        self.in_flight.spawn(part);
        Ok(())
    }

    async fn wait_for_one(&mut self) -> anyhow::Result<()> {
        if let Some(sent) = self.in_flight.join_next().await {
            sent.context("a part's upload task failed")?
                .context("uploading a part of a recording")?;
        }
        Ok(())
    }

    /// Uploads what is left and completes the upload: from here the object
    /// is durable and visible. On failure the upload is aborted.
    pub async fn commit(mut self) -> anyhow::Result<()> {
        if self.upload.is_none() {
            let options = PutOptions {
                attributes: self.attributes.clone(),
                ..PutOptions::default()
            };
            let whole = PutPayload::from(std::mem::take(&mut self.part));
            self.store
                .put_opts(&self.path, whole, options)
                .await
                .context("uploading a recording")?;
            return Ok(());
        }
        let completed = async {
            if !self.part.is_empty() {
                self.send_part().await?;
            }
            while !self.in_flight.is_empty() {
                self.wait_for_one().await?;
            }
            if let Some(upload) = &mut self.upload {
                upload
                    .complete()
                    .await
                    .context("completing a recording's upload")?;
            }
            anyhow::Ok(())
        }
        .await;
        if completed.is_err() {
            self.abandon().await;
        }
        completed
    }

    /// Aborts the upload: the store drops the parts sent.
    pub async fn abandon(mut self) {
        self.in_flight.shutdown().await;
        if let Some(upload) = &mut self.upload
            && let Err(e) = upload.abort().await
        {
            tracing::warn!(error = %e, "aborting a recording's upload");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls_name_a_bucket_and_an_optional_prefix() {
        let at = |bucket: &str, prefix: &str| S3Location {
            bucket: bucket.into(),
            prefix: prefix.into(),
        };
        assert_eq!(S3Location::parse("s3://b"), Ok(at("b", "")));
        assert_eq!(S3Location::parse("s3://b/"), Ok(at("b", "")));
        assert_eq!(
            S3Location::parse("s3://b/rec/2026/"),
            Ok(at("b", "rec/2026"))
        );
        assert!(S3Location::parse("s3:///x").is_err());
        assert!(S3Location::parse("/var/spool").is_err());
        assert!(S3Location::parse("gs://b/x").is_err());
    }
}
