//! The byte store behind the storage API, through `object_store`: a local directory or an
//! S3-compatible bucket.
//!
//! Keys never contain user input. An object's bytes live at `objects/<version>` (a uuid the
//! server chose); an upload streams to `uploads/<version>` first and is renamed into place
//! only after its row committed. Moving an object is a metadata change; nothing outside the
//! configured root can be named.

use crate::config::Config;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore, WriteMultipart,
};
use std::ops::Range;
use std::sync::Arc;

/// Part size of streamed uploads: S3's minimum, and the most one upload buffers.
const PART_BYTES: usize = 5 * 1024 * 1024;

/// Read size of local downloads. `object_store`'s own stream reads 8 KiB per blocking task
/// (12,800 thread hand-offs for 100 MiB); this is the most one download buffers.
const READ_CHUNK: usize = 256 * 1024;

/// The bytes of an opened object as a stream: a local file in `READ_CHUNK` reads (one
/// blocking task each, the whole body in one for small objects), S3 as it comes.
pub fn body_stream(got: GetResult) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    match got.payload {
        GetResultPayload::File(file, _) => file_stream(file, got.range),
        GetResultPayload::Stream(s) => s,
    }
}

fn file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    let io_err = |e: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    };
    futures_util::stream::try_unfold(
        (Some(file), range.start, range.end),
        move |(file, pos, end)| async move {
            let Some(mut file) = file.filter(|_| pos < end) else {
                return Ok(None);
            };
            let want = (end - pos).min(READ_CHUNK as u64) as usize;
            let (file, buf) = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek, SeekFrom};
                let mut buf = vec![0u8; want];
                file.seek(SeekFrom::Start(pos))?;
                file.read_exact(&mut buf)?;
                Ok::<_, std::io::Error>((file, buf))
            })
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))?
            .map_err(io_err)?;
            let next = pos + want as u64;
            Ok(Some((Bytes::from(buf), (Some(file), next, end))))
        },
    )
    .boxed()
}

/// The configured object store.
#[derive(Clone)]
pub struct Backend {
    store: Arc<dyn ObjectStore>,
    /// Where the local backend keeps its files (`None` for S3).
    pub local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.store)
    }
}

/// Why a streamed upload stopped.
#[derive(Debug)]
pub enum UploadError {
    /// More bytes than the limit.
    TooLarge,
    /// The client's body broke off (disconnect, malformed multipart).
    Client(String),
    /// The store failed.
    Store(object_store::Error),
}

/// What a finished upload wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// Bytes.
    pub size: u64,
    /// Hex MD5 of the bytes (the object's ETag, as Supabase computes it).
    pub md5: String,
}

/// A multipart upload that is aborted unless finished: dropping it unfinished (the request's
/// future dropped when its client disconnects) spawns the abort, since S3 keeps the parts
/// of an unfinished upload, invisible but stored, until someone aborts it.
struct PendingUpload(Option<WriteMultipart>);

impl PendingUpload {
    async fn wait_for_capacity(&mut self) -> Result<(), object_store::Error> {
        match &mut self.0 {
            // At most two parts in flight: with PART_BYTES, what one upload buffers.
            Some(w) => w.wait_for_capacity(2).await,
            None => Ok(()),
        }
    }

    fn write(&mut self, chunk: &[u8]) {
        if let Some(w) = &mut self.0 {
            w.write(chunk);
        }
    }

    async fn finish(mut self) -> Result<(), object_store::Error> {
        match self.0.take() {
            Some(w) => w.finish().await.map(|_| ()),
            None => Ok(()),
        }
    }

    async fn abort(mut self) {
        if let Some(w) = self.0.take() {
            if let Err(e) = w.abort().await {
                tracing::warn!(error = %e, "cannot abort an unfinished upload");
            }
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        let Some(w) = self.0.take() else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = w.abort().await {
                    tracing::warn!(error = %e, "cannot abort a dropped upload");
                }
            });
        }
    }
}

fn data_key(version: &str) -> Path {
    Path::from(format!("objects/{version}"))
}

fn upload_key(version: &str) -> Path {
    Path::from(format!("uploads/{version}"))
}

impl Backend {
    /// Builds the backend `storage.backend` names.
    pub fn from_config(cfg: &Config) -> Result<Backend, String> {
        let s = &cfg.storage;
        if s.backend == "s3" {
            let s3 = &s.s3;
            let mut b = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(&s3.bucket)
                .with_region(&s3.region)
                .with_virtual_hosted_style_request(!s3.force_path_style);
            if !s3.endpoint.is_empty() {
                b = b
                    .with_endpoint(&s3.endpoint)
                    .with_allow_http(s3.endpoint.starts_with("http://"));
            }
            if !s3.access_key_id.is_empty() {
                b = b.with_access_key_id(&s3.access_key_id);
            }
            if let Some(secret) = &s3.secret_access_key {
                b = b.with_secret_access_key(secret.expose());
            }
            let store = b.build().map_err(|e| format!("storage.s3: {e}"))?;
            return Ok(Backend {
                store: Arc::new(store),
                local_root: None,
            });
        }
        let root = if s.local_path.is_empty() {
            std::path::Path::new(&cfg.server.data_dir).join("storage")
        } else {
            std::path::PathBuf::from(&s.local_path)
        };
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| format!("storage.local_path {}: {e}", root.display()))?
            .with_automatic_cleanup(true);
        Ok(Backend {
            store: Arc::new(store),
            local_root: Some(root),
        })
    }

    /// Streams `body` to the upload key of `version`, at most `limit` bytes. On any failure
    /// the partial upload is aborted; if this future is dropped instead (the client went
    /// away), the abort runs in the background (`PendingUpload`): the local store removes
    /// its staging file, S3 drops the parts of its multipart upload.
    pub async fn write_upload<S, E>(
        &self,
        version: &str,
        body: S,
        limit: u64,
    ) -> Result<Written, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.write_counted(version, body, limit, None).await
    }

    /// `write_upload`, adding every byte handed to the store to `counted` (the
    /// `fluxbase_storage_bytes_total{direction="in"}` counter of a client upload).
    pub async fn write_counted<S, E>(
        &self,
        version: &str,
        body: S,
        limit: u64,
        counted: Option<&prometheus::IntCounter>,
    ) -> Result<Written, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let upload = self
            .store
            .put_multipart(&upload_key(version))
            .await
            .map_err(UploadError::Store)?;
        let mut w = PendingUpload(Some(WriteMultipart::new_with_chunk_size(
            upload, PART_BYTES,
        )));
        let mut md5 = Md5::new();
        let mut size: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    w.abort().await;
                    return Err(UploadError::Client(e.to_string()));
                }
            };
            size += chunk.len() as u64;
            if size > limit {
                w.abort().await;
                return Err(UploadError::TooLarge);
            }
            md5.update(&chunk);
            if let Err(e) = w.wait_for_capacity().await {
                w.abort().await;
                return Err(UploadError::Store(e));
            }
            w.write(&chunk);
            if let Some(c) = counted {
                c.inc_by(chunk.len() as u64);
            }
        }
        w.finish().await.map_err(UploadError::Store)?;
        Ok(Written {
            size,
            md5: hex::encode(md5.finalize()),
        })
    }

    /// Moves a committed upload into place. Idempotent: an upload already moved (by the
    /// janitor, or an earlier call) is fine.
    pub async fn publish(&self, version: &str) -> Result<(), object_store::Error> {
        match self
            .store
            .rename(&upload_key(version), &data_key(version))
            .await
        {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            r => r,
        }
    }

    /// Drops the upload data of `version` (its row never committed).
    pub async fn discard_upload(&self, version: &str) {
        if let Err(e) = self.store.delete(&upload_key(version)).await {
            if !matches!(e, object_store::Error::NotFound { .. }) {
                tracing::warn!(error = %e, version, "cannot discard upload data");
            }
        }
    }

    /// Opens the bytes of `version` (a byte range, or all). A version whose row committed
    /// but whose bytes were not moved yet (a crash in between) is read from its upload key.
    pub async fn open(
        &self,
        version: &str,
        range: Option<Range<u64>>,
    ) -> Result<GetResult, object_store::Error> {
        let opts = || GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..Default::default()
        };
        match self.store.get_opts(&data_key(version), opts()).await {
            Err(object_store::Error::NotFound { .. }) => {
                self.store.get_opts(&upload_key(version), opts()).await
            }
            r => r,
        }
    }

    /// Copies the bytes of one version to the upload key of a new one (published like an
    /// upload once its row committed).
    pub async fn copy_to_upload(&self, from: &str, to: &str) -> Result<(), object_store::Error> {
        match self.store.copy(&data_key(from), &upload_key(to)).await {
            Err(object_store::Error::NotFound { .. }) => {
                self.store.copy(&upload_key(from), &upload_key(to)).await
            }
            r => r,
        }
    }

    /// Deletes the bytes of a version wherever they are.
    pub async fn delete(&self, version: &str) -> Result<(), object_store::Error> {
        for key in [data_key(version), upload_key(version)] {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Upload data older than `before`: `(version, last modified)`.
    pub async fn stale_uploads(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>, object_store::Error> {
        let prefix = Path::from("uploads");
        let mut out = Vec::new();
        let mut list = self.store.list(Some(&prefix));
        while let Some(meta) = list.next().await {
            let meta = meta?;
            if meta.last_modified < before {
                if let Some(v) = meta.location.filename() {
                    out.push(v.to_string());
                }
            }
        }
        Ok(out)
    }

    /// The store itself, for storage code that keeps keys of its own (TUS staging under
    /// `tus/`, see `tus.rs`); user input never becomes part of such a key either.
    pub(super) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Whether the store answers (the monitoring health check): a HEAD of a key that does not
    /// exist must come back as "not found", not as an error.
    pub async fn probe(&self) -> Result<(), String> {
        match self
            .store
            .head(&object_store::path::Path::from("fluxbase-health-probe"))
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether the bytes of `version` exist (tests and the janitor).
    pub async fn exists(&self, version: &str) -> bool {
        self.store.head(&data_key(version)).await.is_ok()
            || self.store.head(&upload_key(version)).await.is_ok()
    }
}
