//! The byte store behind the storage API, through `object_store`: a local directory or an
//! S3-compatible bucket.
//!
//! Keys never contain user input. An object's bytes live at `objects/<version>` (a uuid the
//! server chose); an upload streams to `uploads/<version>` first and is renamed into place
//! only after its row committed. Moving an object is a metadata change; nothing outside the
//! configured root can be named. On the local backend uploads (and staged TUS parts) are
//! written by `local::LocalFile` and are on disk before they count; everything else goes
//! through `object_store`.

use super::s3::{S3Store, S3Upload};
use crate::config::Config;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore};
use std::ops::Range;
use std::sync::Arc;

/// Read size of local downloads. `object_store`'s own stream reads 8 KiB per blocking task
/// (12,800 thread hand-offs for 100 MiB); this is the most one download buffers.
const READ_CHUNK: usize = 256 * 1024;

/// Largest body a local download reads into memory in one blocking task (open + read +
/// close) and answers as one sized body: above it downloads stream in `READ_CHUNK`s.
pub const SMALL_BODY: u64 = 256 * 1024;

/// The bytes of an opened object as a stream: a local file in `READ_CHUNK` reads (one
/// blocking task each, the whole body in one for small objects), S3 as it comes.
pub fn body_stream(got: GetResult) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    match got.payload {
        GetResultPayload::File(file, _) => file_stream(file, got.range),
        GetResultPayload::Stream(s) => s,
    }
}

fn local_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    }
}

fn file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    let io_err = local_error;
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
    /// The same store as `store` on S3, through its multipart interface (uploads).
    s3: Option<Arc<dyn S3Store>>,
    /// How uploads get their ETag (always MD5 on S3).
    etag: EtagAlgorithm,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.store)
    }
}

/// Bytes hashed on the uploading task before the MD5 moves to a blocking thread of its own:
/// small uploads skip the hand-off, big ones hash in parallel with reading and writing.
const HASH_INLINE_BYTES: u64 = 1024 * 1024;

/// Bytes handed to the hashing thread at a time (fewer wake-ups than one chunk each).
const HASH_BATCH_BYTES: usize = 512 * 1024;

/// Batches queued for the hashing thread: with `HASH_BATCH_BYTES`, at most ~4 MiB waiting.
const HASH_QUEUE: usize = 8;

/// The MD5 of an upload: computed on the uploading task for the first `HASH_INLINE_BYTES`,
/// then on a blocking-pool thread fed through a bounded channel (`Bytes` are shared, not
/// copied), so hashing overlaps with reading the body and writing the parts. Dropping it
/// (an upload that failed) ends the thread after what was queued.
enum Hasher {
    Inline(Md5, u64),
    Thread {
        batch: Vec<Bytes>,
        batch_len: usize,
        tx: tokio::sync::mpsc::Sender<Vec<Bytes>>,
        done: tokio::task::JoinHandle<Md5>,
    },
}

impl Hasher {
    fn new() -> Hasher {
        Hasher::Inline(Md5::new(), 0)
    }

    async fn update(&mut self, chunk: &Bytes) {
        match self {
            Hasher::Inline(md5, n) => {
                md5.update(chunk);
                *n += chunk.len() as u64;
                if *n >= HASH_INLINE_BYTES {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(HASH_QUEUE);
                    let mut md5 = std::mem::take(md5);
                    let done = tokio::task::spawn_blocking(move || {
                        while let Some(batch) = rx.blocking_recv() {
                            for b in batch {
                                md5.update(&b);
                            }
                        }
                        md5
                    });
                    *self = Hasher::Thread {
                        batch: Vec::new(),
                        batch_len: 0,
                        tx,
                        done,
                    };
                }
            }
            Hasher::Thread {
                batch,
                batch_len,
                tx,
                ..
            } => {
                *batch_len += chunk.len();
                batch.push(chunk.clone());
                if *batch_len >= HASH_BATCH_BYTES {
                    *batch_len = 0;
                    // The thread only stops when the sender is dropped, so this cannot fail.
                    let _ = tx.send(std::mem::take(batch)).await;
                }
            }
        }
    }

    async fn finish(self) -> Result<String, object_store::Error> {
        let md5 = match self {
            Hasher::Inline(md5, _) => md5,
            Hasher::Thread {
                batch, tx, done, ..
            } => {
                if !batch.is_empty() {
                    let _ = tx.send(batch).await;
                }
                drop(tx);
                done.await.map_err(|e| object_store::Error::Generic {
                    store: "md5",
                    source: Box::new(e),
                })?
            }
        };
        Ok(hex::encode(md5.finalize()))
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
    /// The object's ETag, quoted (see `EtagAlgorithm`).
    pub etag: String,
    /// When the last byte was stored (the object's `lastModified`).
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

impl Written {
    /// The `metadata` of an object row with these bytes, in Supabase's shape.
    pub fn metadata(&self, mimetype: &str, cache_control: &str) -> serde_json::Value {
        serde_json::json!({
            "eTag": self.etag,
            "size": self.size,
            "mimetype": mimetype,
            "cacheControl": cache_control,
            "lastModified": self
                .last_modified
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "contentLength": self.size,
            "httpStatusCode": 200,
        })
    }
}

/// How an object's ETag is made (`storage.local_etag_algorithm` for the local backend,
/// as Supabase's `STORAGE_FILE_ETAG_ALGORITHM` for its file backend; the S3 backend always
/// hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagAlgorithm {
    /// `"<hex MD5 of the bytes>"`: what Supabase's S3 backend answers for single-part
    /// uploads and its file backend by default. Costs an MD5 pass over every upload (about
    /// 600 MB/s on one core).
    Md5,
    /// `"<lastModified in ms, hex>-<size, hex>"`: Supabase's file backend with
    /// `STORAGE_FILE_ETAG_ALGORITHM=mtime`. New for every upload (but two of the same size
    /// in the same millisecond), no hashing.
    Mtime,
}

impl EtagAlgorithm {
    /// Parses a config value (`md5` or `mtime`).
    pub fn parse(s: &str) -> Option<EtagAlgorithm> {
        match s {
            "md5" => Some(EtagAlgorithm::Md5),
            "mtime" => Some(EtagAlgorithm::Mtime),
            _ => None,
        }
    }

    fn etag(md5: Option<String>, size: u64, at: chrono::DateTime<chrono::Utc>) -> String {
        match md5 {
            Some(hex) => format!("\"{hex}\""),
            None => format!("\"{:x}-{size:x}\"", at.timestamp_millis()),
        }
    }
}

/// Where a stream of bytes goes (see `Backend::sink`). Dropped unfinished, it removes what
/// it wrote.
enum Sink {
    Local(super::local::LocalFile),
    S3(S3Upload),
}

impl Sink {
    /// Hands over `chunk` (shared, not copied), waiting while the sink is full
    /// (`LocalFile`'s queue, or two S3 parts on their way).
    async fn put(&mut self, chunk: Bytes) -> Result<(), object_store::Error> {
        match self {
            Sink::Local(f) => f.push(chunk).await.map_err(local_error),
            Sink::S3(u) => u.put(chunk).await,
        }
    }

    async fn finish(self) -> Result<(), object_store::Error> {
        match self {
            Sink::Local(f) => f.finish().await.map_err(local_error),
            Sink::S3(u) => u.finish().await,
        }
    }

    /// Drops what was written, and waits until it is gone.
    async fn abort(self) {
        match self {
            Sink::Local(f) => f.abort().await,
            Sink::S3(u) => u.abort().await,
        }
    }
}

/// Streams `body` into the sink `open` makes (at once, or with `lazy` at the first
/// non-empty chunk, so an empty body creates nothing), at most `limit` bytes, counting
/// stored bytes in `counted` and, with `hash`, computing their MD5. On any failure the sink
/// is aborted. Returns the size and the hex MD5.
async fn stream_to<S, E, F, Fut>(
    body: S,
    limit: u64,
    counted: Option<&prometheus::IntCounter>,
    hash: bool,
    lazy: bool,
    open: F,
) -> Result<(u64, Option<String>), UploadError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Sink, object_store::Error>>,
{
    let mut sink = match lazy {
        true => None,
        false => Some(open().await.map_err(UploadError::Store)?),
    };
    let mut md5 = hash.then(Hasher::new);
    let mut size: u64 = 0;
    let mut body = std::pin::pin!(body);
    let failed = |sink: Option<Sink>, e: UploadError| async move {
        if let Some(s) = sink {
            s.abort().await;
        }
        Err::<(u64, Option<String>), UploadError>(e)
    };
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return failed(sink, UploadError::Client(e.to_string())).await,
        };
        if chunk.is_empty() {
            continue;
        }
        size += chunk.len() as u64;
        if size > limit {
            return failed(sink, UploadError::TooLarge).await;
        }
        if let Some(h) = md5.as_mut() {
            h.update(&chunk).await;
        }
        if sink.is_none() {
            sink = Some(open().await.map_err(UploadError::Store)?);
        }
        let n = chunk.len() as u64;
        if let Some(Err(e)) = match sink.as_mut() {
            Some(s) => Some(s.put(chunk).await),
            None => None,
        } {
            return failed(sink, UploadError::Store(e)).await;
        }
        if let Some(c) = counted {
            c.inc_by(n);
        }
    }
    let md5 = match md5 {
        Some(h) => match h.finish().await {
            Ok(m) => Some(m),
            Err(e) => return failed(sink, UploadError::Store(e)).await,
        },
        None => None,
    };
    if let Some(s) = sink {
        s.finish().await.map_err(UploadError::Store)?;
    }
    Ok((size, md5))
}

/// Whether `version` is a plain key name (the server's uuids are), so it can name a file
/// under the local root directly.
fn plain_version(version: &str) -> bool {
    !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
            let store = Arc::new(b.build().map_err(|e| format!("storage.s3: {e}"))?);
            return Ok(Backend {
                store: store.clone(),
                local_root: None,
                s3: Some(store),
                etag: EtagAlgorithm::Md5,
            });
        }
        let etag = EtagAlgorithm::parse(&s.local_etag_algorithm).ok_or_else(|| {
            format!(
                "storage.local_etag_algorithm must be md5 or mtime, got {:?}",
                s.local_etag_algorithm
            )
        })?;
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
            s3: None,
            etag,
        })
    }

    /// Streams `body` to the upload key of `version`, at most `limit` bytes. On any failure
    /// the partial upload is aborted; if this future is dropped instead (the client went
    /// away), the abort runs in the background (`Sink`'s drop): the local file is removed,
    /// S3 drops the parts of its multipart upload. The ETag is the MD5 of the bytes on S3,
    /// and as `storage.local_etag_algorithm` says on the local backend.
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
        let hash = self.local_root.is_none() || self.etag == EtagAlgorithm::Md5;
        let key = upload_key(version);
        // Opened before the first byte: an empty upload is an empty object too.
        let (size, md5) = stream_to(body, limit, counted, hash, false, || self.sink(&key)).await?;
        let last_modified = chrono::Utc::now();
        Ok(Written {
            size,
            etag: EtagAlgorithm::etag(md5, size, last_modified),
            last_modified,
        })
    }

    /// Streams `body` into a new object at `key` (a key the server made, such as a staged
    /// TUS part), at most `limit` bytes, adding what it stores to `counted`. Nothing is
    /// created for an empty body. Returns the size.
    pub async fn write_part<S, E>(
        &self,
        key: &str,
        body: S,
        limit: u64,
        counted: &prometheus::IntCounter,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let key = Path::from(key);
        let (size, _) =
            stream_to(body, limit, Some(counted), false, true, || self.sink(&key)).await?;
        Ok(size)
    }

    /// Where the bytes of `key` go: on the local backend a file written by `LocalFile`
    /// (durable once finished), on S3 a multipart upload in 5 MiB parts (`S3Upload`).
    async fn sink(&self, key: &Path) -> Result<Sink, object_store::Error> {
        if let Some(path) = self.local_path(key) {
            return super::local::LocalFile::create(path)
                .await
                .map(Sink::Local)
                .map_err(local_error);
        }
        match &self.s3 {
            Some(s3) => S3Upload::start(s3.clone(), key.clone()).await.map(Sink::S3),
            None => Err(local_error(std::io::Error::other(format!(
                "no place to write {key}"
            )))),
        }
    }

    /// The file of `key` under the local root, for keys made only of plain segments (the
    /// server's own keys are); `None` on S3.
    fn local_path(&self, key: &Path) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        let mut path = root.clone();
        for part in key.parts() {
            if !plain_version(part.as_ref()) {
                return None;
            }
            path.push(part.as_ref());
        }
        Some(path)
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

    /// Reads `range` of `version` into memory in one blocking task (open, read, close), with
    /// `open`'s fallback to the upload key. Only for the local backend and ranges up to
    /// `SMALL_BODY` bytes; `None` otherwise (S3, or a version that is not a plain store key
    /// name), and the caller streams through `open`.
    pub async fn read_small(
        &self,
        version: &str,
        range: Range<u64>,
    ) -> Option<Result<Bytes, object_store::Error>> {
        let root = self.local_root.as_ref()?;
        if !plain_version(version)
            || range.end < range.start
            || range.end - range.start > SMALL_BODY
        {
            return None;
        }
        let data = root.join("objects").join(version);
        let upload = root.join("uploads").join(version);
        let version = version.to_string();
        let read = move || -> Result<Bytes, object_store::Error> {
            use std::os::unix::fs::FileExt;
            let file = match std::fs::File::open(&data) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::File::open(&upload),
                r => r,
            };
            let file = file.map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => object_store::Error::NotFound {
                    path: format!("objects/{version}"),
                    source: Box::new(e),
                },
                _ => local_error(e),
            })?;
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            file.read_exact_at(&mut buf, range.start)
                .map_err(local_error)?;
            Ok(Bytes::from(buf))
        };
        Some(
            tokio::task::spawn_blocking(read)
                .await
                .unwrap_or_else(|e| Err(local_error(std::io::Error::other(e)))),
        )
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

    /// Aborts S3 multipart uploads whose process died (their markers are older than
    /// `before`; see `s3.rs`). Returns how many; always 0 on the local backend.
    pub async fn abort_stale_multipart(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, object_store::Error> {
        match &self.s3 {
            Some(s3) => super::s3::abort_stale(s3, before).await,
            None => Ok(0),
        }
    }

    /// Deletes `object_store`'s staging files (`<key>#<n>`) older than `before` on the local
    /// backend: left when the process died while the store wrote one (a copy, a staged TUS
    /// part), and invisible to `list`. Returns how many went; always 0 on S3 (an upload cut
    /// off there leaves an unfinished multipart upload, see docs/compatibility.md).
    pub async fn remove_stale_staging(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, object_store::Error> {
        let Some(root) = self.local_root.clone() else {
            return Ok(0);
        };
        let sweep = move || -> std::io::Result<u64> {
            let dirs = ["uploads", "objects", super::tus::STAGING_PREFIX];
            let files = super::local::stale_staging_files(&root, &dirs, before.into())?;
            let mut n = 0;
            for f in files {
                match std::fs::remove_file(&f) {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(n)
        };
        tokio::task::spawn_blocking(sweep)
            .await
            .map_err(|e| local_error(std::io::Error::other(e)))?
            .map_err(local_error)
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
