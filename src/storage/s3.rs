//! Uploads to the S3 backend, through `object_store`'s `MultipartStore` rather than its
//! `WriteMultipart`, so that the multipart upload's id is known: a process killed mid-upload
//! must not leave an unfinished multipart upload behind for ever (invisible, but its parts
//! are stored and billed). Before the first part a marker object `multipart/<uuid>` holding
//! `<upload id>\n<key>` is written; it is deleted when the upload completes or is aborted.
//! A marker older than `storage.cleanup_after_minutes` belongs to a dead upload: the janitor
//! aborts the upload it names (`abort_stale`). (A process killed between creating the
//! upload and writing its marker, one request's time, still leaves an unknown upload: the
//! bucket's `AbortIncompleteMultipartUpload` lifecycle rule is the backstop.)
//!
//! Parts are `PART_BYTES` exactly (the last one shorter), as S3 needs at least 5 MiB and
//! some S3-compatible stores need equal sizes; at most `IN_FLIGHT` are being sent.
//!
//! Must not: hold more than `IN_FLIGHT + 1` parts in memory, or leave an upload neither
//! completed nor aborted, nor its marker, when it fails or its future is dropped.

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore, PutPayload};
use std::collections::VecDeque;
use std::sync::Arc;

/// Part size: S3's minimum, and the most one upload buffers per part.
pub const PART_BYTES: usize = 5 * 1024 * 1024;

/// Parts sent at once.
const IN_FLIGHT: usize = 2;

/// Prefix of the markers of uploads in progress.
pub const MARKER_PREFIX: &str = "multipart";

/// The S3 store, through both of its interfaces.
pub trait S3Store: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> S3Store for T {}

/// A multipart upload in progress. Aborted (and its marker deleted) unless finished, also
/// when dropped.
pub struct S3Upload {
    s3: Arc<dyn S3Store>,
    key: Path,
    id: MultipartId,
    marker: Path,
    buf: Vec<Bytes>,
    buf_len: usize,
    sent: usize,
    parts: Vec<PartId>,
    /// Parts on their way, each sent by a task of its own (so they progress while the
    /// body is read), oldest first.
    in_flight: VecDeque<tokio::task::JoinHandle<object_store::Result<PartId>>>,
    done: bool,
}

impl S3Upload {
    /// Begins a multipart upload of `key` and writes its marker.
    pub async fn start(s3: Arc<dyn S3Store>, key: Path) -> object_store::Result<S3Upload> {
        let id = s3.create_multipart(&key).await?;
        let marker = Path::from(format!("{MARKER_PREFIX}/{}", uuid::Uuid::new_v4()));
        let note = PutPayload::from(format!("{id}\n{key}"));
        if let Err(e) = s3.put(&marker, note).await {
            if let Err(e) = s3.abort_multipart(&key, &id).await {
                tracing::warn!(error = %e, %key, "cannot abort a multipart upload");
            }
            return Err(e);
        }
        Ok(S3Upload {
            s3,
            key,
            id,
            marker,
            buf: Vec::new(),
            buf_len: 0,
            sent: 0,
            parts: Vec::new(),
            in_flight: VecDeque::new(),
            done: false,
        })
    }

    /// Adds `bytes` (shared, not copied); sends each full part, waiting while `IN_FLIGHT`
    /// parts are on their way.
    pub async fn put(&mut self, mut bytes: Bytes) -> object_store::Result<()> {
        while !bytes.is_empty() {
            let room = PART_BYTES - self.buf_len;
            if bytes.len() < room {
                self.buf_len += bytes.len();
                self.buf.push(bytes);
                return Ok(());
            }
            self.buf.push(bytes.split_to(room));
            self.buf_len = PART_BYTES;
            self.send_part().await?;
        }
        Ok(())
    }

    async fn send_part(&mut self) -> object_store::Result<()> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.settle_one().await?;
        }
        let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
        self.buf_len = 0;
        let (s3, key, id, idx) = (
            self.s3.clone(),
            self.key.clone(),
            self.id.clone(),
            self.sent,
        );
        self.sent += 1;
        self.in_flight.push_back(tokio::spawn(async move {
            s3.put_part(&key, &id, idx, payload).await
        }));
        Ok(())
    }

    /// Waits for the oldest part on its way (parts finish in any order; they are
    /// collected in order).
    async fn settle_one(&mut self) -> object_store::Result<()> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = task.await.map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Stops the parts still on their way (S3 discards them with the upload).
    fn cancel_parts(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
    }

    /// Sends the last part and completes the upload, then deletes the marker.
    pub async fn finish(mut self) -> object_store::Result<()> {
        // S3 needs at least one part, even for an empty object.
        if self.buf_len > 0 || self.sent == 0 {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        let parts = std::mem::take(&mut self.parts);
        self.s3
            .complete_multipart(&self.key, &self.id, parts)
            .await?;
        self.done = true;
        delete_marker(self.s3.as_ref(), &self.marker).await;
        Ok(())
    }

    /// Aborts the upload and deletes its marker, waiting for both.
    pub async fn abort(mut self) {
        self.done = true;
        self.cancel_parts();
        abort(
            self.s3.clone(),
            self.key.clone(),
            self.id.clone(),
            self.marker.clone(),
        )
        .await;
    }
}

async fn delete_marker(s3: &dyn S3Store, marker: &Path) {
    match s3.delete(marker).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        // The janitor finds it later; aborting a completed upload is harmless.
        Err(e) => tracing::warn!(error = %e, %marker, "cannot delete a multipart marker"),
    }
}

async fn abort(s3: Arc<dyn S3Store>, key: Path, id: MultipartId, marker: Path) {
    match s3.abort_multipart(&key, &id).await {
        Ok(()) => delete_marker(s3.as_ref(), &marker).await,
        // The marker stays, so the janitor tries again.
        Err(e) => tracing::warn!(error = %e, %key, "cannot abort a multipart upload"),
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        self.cancel_parts();
        if self.done {
            return;
        }
        let (s3, key, id, marker) = (
            self.s3.clone(),
            self.key.clone(),
            self.id.clone(),
            self.marker.clone(),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(abort(s3, key, id, marker));
        }
    }
}

/// Aborts the uploads whose markers are older than `before` (their process died), and
/// deletes the markers. Returns how many.
pub async fn abort_stale(
    s3: &Arc<dyn S3Store>,
    before: chrono::DateTime<chrono::Utc>,
) -> object_store::Result<u64> {
    let prefix = Path::from(MARKER_PREFIX);
    let mut stale = Vec::new();
    let mut list = s3.list(Some(&prefix));
    while let Some(meta) = list.next().await {
        let meta = meta?;
        if meta.last_modified < before {
            stale.push(meta.location);
        }
    }
    let mut n = 0;
    for marker in stale {
        let note = match s3.get(&marker).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let note = String::from_utf8_lossy(&note).into_owned();
        match note.split_once('\n') {
            Some((id, key)) if !id.is_empty() && !key.is_empty() => {
                match s3.abort_multipart(&Path::from(key), &id.to_string()).await {
                    // Not found: completed, or already aborted (by S3's lifecycle rule).
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        // The marker stays: the next sweep tries again.
                        tracing::warn!(error = %e, key, "cannot abort a stale multipart upload");
                        continue;
                    }
                }
            }
            _ => tracing::warn!(%marker, "unreadable multipart marker"),
        }
        delete_marker(s3.as_ref(), &marker).await;
        n += 1;
    }
    Ok(n)
}
