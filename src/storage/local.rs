//! Writing uploads on the local backend, and sweeping what interrupted writes leave there.
//!
//! `object_store`'s local multipart upload writes each `Bytes` it is handed with its own
//! `write` call (actix hands a request body over in ~8 KiB chunks) and stages the file as
//! `<key>#<n>`, a name its `list` never shows, so a process killed mid-upload leaves a file
//! nobody can find. Uploads to the local backend therefore write the upload key's file
//! themselves: chunks are gathered into batches of `WRITE_BATCH_BYTES` and written with
//! one `writev` each on a blocking thread of their own, fed through a bounded channel, so
//! writing overlaps with receiving and at most `WRITE_QUEUE` batches wait in memory. The
//! file is flushed to disk (`fdatasync`, then its directory) before the caller commits the
//! object row: a committed row never points at bytes that a power loss could take back.
//! Everything else (reads, renames, deletes, lists) still goes through `object_store`,
//! which reads these files as the keys they are named after.
//!
//! Must not: buffer more than `WRITE_QUEUE + 1` batches, or leave a file behind when the
//! upload fails or its future is dropped (the client went away).

use bytes::Bytes;
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};

/// Bytes gathered before one `writev`.
const WRITE_BATCH_BYTES: usize = 1024 * 1024;

/// Batches queued for the writing thread: with `WRITE_BATCH_BYTES`, at most ~4 MiB waiting.
const WRITE_QUEUE: usize = 4;

enum Msg {
    Data(Vec<Bytes>),
    /// Every byte was sent: make the file durable.
    Finish,
}

/// A file being written at the upload key of a version. Removed unless finished, also
/// when dropped.
pub struct LocalFile {
    path: PathBuf,
    batch: Vec<Bytes>,
    batch_len: usize,
    tx: Option<tokio::sync::mpsc::Sender<Msg>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

fn join_error(e: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(e)
}

/// Writes all of `batch` with as few `writev` calls as the kernel allows.
fn write_batch(file: &mut std::fs::File, batch: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Starts writing `len` bytes at `offset` back to disk without waiting (Linux: the
/// `POSIX_FADV_DONTNEED` advice on dirty pages starts their writeback, and drops only pages
/// already clean, which these are not yet). The final `fdatasync` then waits for the last
/// batches only, instead of the whole file: flushing overlaps with receiving. Advice only:
/// an error changes nothing.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        if let (Ok(o), Ok(l)) = (offset.try_into(), len.try_into()) {
            let _ = posix_fadvise(file, o, l, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

impl LocalFile {
    /// Creates `path` (which must not exist yet; its directory is created if missing) and
    /// starts its writing thread.
    pub async fn create(path: PathBuf) -> std::io::Result<LocalFile> {
        let p = path.clone();
        let file = tokio::task::spawn_blocking(move || {
            let open = || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
            };
            match open() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(dir) = p.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    open()
                }
                r => r,
            }
        })
        .await
        .map_err(join_error)??;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(WRITE_QUEUE);
        let dir = path.parent().map(Path::to_path_buf);
        let done = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let mut offset: u64 = 0;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Msg::Data(batch) => {
                        write_batch(&mut file, &batch)?;
                        let n: u64 = batch.iter().map(|b| b.len() as u64).sum();
                        start_writeback(&file, offset, n);
                        offset += n;
                    }
                    Msg::Finish => {
                        file.sync_data()?;
                        // The file's name must survive a crash as well as its bytes.
                        if let Some(dir) = &dir {
                            std::fs::File::open(dir)?.sync_all()?;
                        }
                        return Ok(());
                    }
                }
            }
            // The sender went away without finishing: the upload failed; its file is
            // removed by the owner's drop.
            Err(std::io::Error::other("upload abandoned"))
        });
        Ok(LocalFile {
            path,
            batch: Vec::new(),
            batch_len: 0,
            tx: Some(tx),
            done: Some(done),
        })
    }

    /// Queues `chunk` (shared, not copied); waits while `WRITE_QUEUE` batches are queued.
    pub async fn push(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.batch_len += chunk.len();
        self.batch.push(chunk);
        if self.batch_len >= WRITE_BATCH_BYTES {
            self.send_batch().await?;
        }
        Ok(())
    }

    async fn send_batch(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_len = 0;
        let batch = std::mem::take(&mut self.batch);
        self.send(Msg::Data(batch)).await
    }

    async fn send(&mut self, msg: Msg) -> std::io::Result<()> {
        let Some(tx) = &self.tx else {
            return Err(std::io::Error::other("upload already ended"));
        };
        if tx.send(msg).await.is_ok() {
            return Ok(());
        }
        // The thread stopped early: its result says why.
        Err(self.join().await.err().unwrap_or_else(|| {
            std::io::Error::other("the writing thread stopped without an error")
        }))
    }

    async fn join(&mut self) -> std::io::Result<()> {
        self.tx = None;
        match self.done.take() {
            Some(h) => h.await.map_err(join_error)?,
            None => Err(std::io::Error::other("upload already ended")),
        }
    }

    /// Writes what is left and makes the file durable. On success the file stays; on
    /// failure it is removed.
    pub async fn finish(mut self) -> std::io::Result<()> {
        self.send_batch().await?;
        self.send(Msg::Finish).await?;
        self.join().await?;
        // Finished: nothing for drop to remove.
        self.path = PathBuf::new();
        Ok(())
    }

    /// Stops writing and removes the file, waiting for the removal.
    pub async fn abort(mut self) {
        self.tx = None;
        let path = std::mem::take(&mut self.path);
        if path.as_os_str().is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || remove(&path)).await;
    }
}

/// Removes an unfinished upload's file. Dropping the sender has ended (or will end) its
/// writing thread; a file the thread still writes to disappears when the thread closes it.
fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, path = %path.display(), "cannot remove an abandoned upload");
        }
    }
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        self.tx = None;
        let path = std::mem::take(&mut self.path);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || remove(&path))),
            Err(_) => remove(&path),
        }
    }
}

/// Whether `name` is one of `object_store`'s staging names (`<key>#<digits>`): files its
/// local store writes before renaming them into place, and never lists.
fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Staging files (`<key>#<digits>`) under `root/<dir>` for each of `dirs`, last modified
/// before `before`: left by a process killed while `object_store` was writing them (a
/// copy, a staged TUS part). Relative to `root`.
pub fn stale_staging_files(
    root: &Path,
    dirs: &[&str],
    before: std::time::SystemTime,
) -> std::io::Result<Vec<PathBuf>> {
    fn walk(
        dir: &Path,
        before: std::time::SystemTime,
        out: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&entry.path(), before, out)?;
            } else if kind.is_file()
                && is_staging_name(&entry.file_name().to_string_lossy())
                && entry.metadata()?.modified()? < before
            {
                out.push(entry.path());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(&root.join(d), before, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names() {
        assert!(is_staging_name("0b8e4a4e-5f3c-4f0e-9a55-6f3f3b7d1c2a#1"));
        assert!(is_staging_name("00000000000000000010-x#12"));
        assert!(!is_staging_name("0b8e4a4e-5f3c-4f0e-9a55-6f3f3b7d1c2a"));
        assert!(!is_staging_name("a#"));
        assert!(!is_staging_name("a#1b"));
    }

    #[tokio::test]
    async fn writes_in_order_and_removes_abandoned_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads").join("v1");
        let mut f = LocalFile::create(path.clone()).await.unwrap();
        let mut want = Vec::new();
        for i in 0..600u32 {
            let chunk: Vec<u8> = (0..8191u32).map(|j| (i * 31 + j) as u8).collect();
            want.extend_from_slice(&chunk);
            f.push(Bytes::from(chunk)).await.unwrap();
        }
        f.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
        // An existing key is never overwritten.
        assert!(LocalFile::create(path.clone()).await.is_err());

        let gone = dir.path().join("uploads").join("v2");
        let mut f = LocalFile::create(gone.clone()).await.unwrap();
        f.push(Bytes::from(vec![1u8; 3 * 1024 * 1024]))
            .await
            .unwrap();
        drop(f);
        let removed = async {
            while gone.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), removed)
            .await
            .expect("an abandoned upload's file is removed");
    }

    #[test]
    fn finds_stale_staging_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("uploads")).unwrap();
        std::fs::create_dir_all(root.join("tus/u1")).unwrap();
        for f in ["uploads/v1#1", "uploads/v2", "tus/u1/0-a#3", "tus/u1/0-b"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let mut found = stale_staging_files(root, &["uploads", "tus", "objects"], later).unwrap();
        found.sort();
        assert_eq!(
            found,
            vec![root.join("tus/u1/0-a#3"), root.join("uploads/v1#1")]
        );
        let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        assert!(stale_staging_files(root, &["uploads", "tus"], earlier)
            .unwrap()
            .is_empty());
    }
}
