//! The filesystem backend.
//!
//! Layout under the root (names never collide: repository components cannot start with `_`,
//! tags cannot start with `.`):
//! ```text
//! blobs/<alg>/<hex[..2]>/<hex>                         content, written once, by rename
//! uploads/<id>/data, uploads/<id>/repository           uploads in progress
//! repositories/<name>/_layers/<alg>/<hex>              "this repository may read this blob"
//! repositories/<name>/_manifests/revisions/<alg>/<hex> media type of a manifest in this repository
//! repositories/<name>/_manifests/tags/<tag>            digest the tag points to
//! repositories/<name>/_referrers/<alg>/<subject>/<alg>-<hex>  descriptor of a referrer
//! ```
//! Every file becomes visible whole, by renaming a temporary file in the same directory, so a
//! crash leaves at most an unreferenced temporary or an unlinked blob, never a partial one.

use super::{BlobBody, StorageError, StorageResult, Store, StoredManifest};
use crate::registry::digest::{Digest, Hasher};
use crate::registry::names::{RepoName, Tag};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Uploads larger than this are hashed and written on threads of their own.
const PIPELINE_THRESHOLD: usize = 1 << 20;
/// Received chunks queued between the pipeline's stages (each up to hyper's read buffer size).
const PIPELINE_QUEUE: usize = 32;
/// Reads move in pieces of this size: large enough that per-call overhead vanishes,
/// small enough to stay in cache.
const IO_CHUNK: usize = 1 << 20;
/// Blobs up to this size are read in one call rather than streamed from a reader thread.
const SMALL_BLOB: u64 = 256 << 10;
/// Manifests are immutable by digest, so caching their bytes is always correct; the link that
/// says whether a repository holds one is still read from disk on every request.
const MANIFEST_CACHE_ENTRIES: usize = 4096;

pub struct FsStore {
    root: PathBuf,
    fsync: bool,
    uploads_in_progress: Mutex<HashSet<String>>,
    manifest_cache: Mutex<HashMap<Digest, Bytes>>,
    tag_lists: TagListCache,
}

/// Sorted tag lists by repository, each valid while its tags directory's modification time is
/// unchanged: a stat instead of a directory read, and correct when other processes write the
/// same storage. Timestamps are coarse (a clock tick), so a listing taken within
/// `RACY_WINDOW` of the directory's last change is not cached: a second change in the same
/// tick could otherwise go unseen.
#[derive(Default)]
struct TagListCache(Mutex<HashMap<RepoName, CachedTags>>);

/// The tags directory's modification time when it was listed, and the sorted listing.
type CachedTags = (SystemTime, Arc<Vec<String>>);

const RACY_WINDOW: Duration = Duration::from_millis(100);
const TAG_LIST_CACHE_ENTRIES: usize = 1024;

impl TagListCache {
    fn get(&self, repo: &RepoName, modified: Option<SystemTime>) -> Option<Arc<Vec<String>>> {
        let modified = modified?;
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(repo) {
            Some((at, tags)) if *at == modified => Some(tags.clone()),
            _ => None,
        }
    }

    fn put(&self, repo: &RepoName, modified: Option<SystemTime>, tags: &Arc<Vec<String>>) {
        let Some(modified) = modified else { return };
        let settled = SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age > RACY_WINDOW);
        if !settled {
            return;
        }
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= TAG_LIST_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(repo.clone(), (modified, tags.clone()));
    }

    fn forget(&self, repo: &RepoName) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(repo);
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>, fsync: bool) -> io::Result<Arc<FsStore>> {
        let root = root.into();
        for dir in ["blobs", "uploads", "repositories"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Arc::new(FsStore {
            root,
            fsync,
            uploads_in_progress: Mutex::new(HashSet::new()),
            manifest_cache: Mutex::new(HashMap::new()),
            tag_lists: TagListCache::default(),
        }))
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().name())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        self.root.join("repositories").join(repo.as_str())
    }

    fn layer_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_layers")
            .join(d.algorithm().name())
            .join(d.hex())
    }

    fn revision_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_manifests/revisions")
            .join(d.algorithm().name())
            .join(d.hex())
    }

    fn tags_dir(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join("_manifests/tags")
    }

    fn referrers_dir(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_referrers")
            .join(subject.algorithm().name())
            .join(subject.hex())
    }

    /// Upload ids are generated by us, but arrive back in URLs: only our own shape is accepted,
    /// so an id can never name a path outside `uploads/`.
    fn valid_upload_id(id: &str) -> StorageResult<()> {
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(StorageError::NotFound)
        }
    }

    /// Writes a small file so that readers see either nothing or all of it: the bytes go to a
    /// temporary file that is renamed into place only after the write has completed. (One
    /// blocking task for the whole sequence: tokio's File acknowledges a write before the bytes
    /// reach the file, so renaming after it could publish an empty file.)
    async fn write_atomic(&self, path: &Path, contents: &[u8]) -> StorageResult<()> {
        let path = path.to_owned();
        let contents = contents.to_vec();
        let fsync = self.fsync;
        tokio::task::spawn_blocking(move || {
            let dir = path.parent().expect("storage paths always have a parent");
            let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
            let write = || -> io::Result<()> {
                std::fs::create_dir_all(dir)?;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&contents)?;
                if fsync {
                    f.sync_data()?;
                }
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io_err(&path)(e)
            })
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("write task failed: {e}")))?
    }

    async fn check_upload_owner(&self, repo: &RepoName, id: &str) -> StorageResult<PathBuf> {
        Self::valid_upload_id(id)?;
        let dir = self.upload_dir(id);
        let owner_path = dir.join("repository");
        match not_found_is_none(tokio::fs::read(&owner_path).await).map_err(io_err(&owner_path))? {
            Some(owner) if owner == repo.as_str().as_bytes() => Ok(dir),
            _ => Err(StorageError::NotFound),
        }
    }

    fn cache_manifest(&self, digest: &Digest, bytes: &Bytes) {
        let mut cache = self
            .manifest_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MANIFEST_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(digest.clone(), bytes.clone());
    }

    /// Reads a file of a few dozen bytes (a tag, a link) inline: for such files, a read from the
    /// page cache costs a few microseconds, less than handing it to the blocking pool and back.
    /// These reads are the whole cost of a manifest GET.
    fn read_small(path: &Path) -> StorageResult<Option<Vec<u8>>> {
        not_found_is_none(std::fs::read(path)).map_err(io_err(path))
    }

    fn exists(path: &Path) -> StorageResult<bool> {
        Ok(not_found_is_none(std::fs::metadata(path))
            .map_err(io_err(path))?
            .is_some())
    }
}

/// Streams `len` bytes of `path` from `start` on a blocking thread, one `IO_CHUNK` at a time.
fn stream_file(path: PathBuf, start: u64, len: u64) -> StorageResult<BlobBody> {
    let mut file = std::fs::File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            StorageError::NotFound
        } else {
            io_err(&path)(e)
        }
    })?;
    if len <= SMALL_BLOB {
        let mut buf = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
        file.read_exact(&mut buf).map_err(io_err(&path))?;
        let stream = futures_util::stream::once(async move { Ok(Bytes::from(buf)) }).boxed();
        return Ok(BlobBody { len, stream });
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut remaining = len;
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        while remaining > 0 {
            let want = remaining.min(IO_CHUNK as u64);
            // Read into fresh capacity: read_to_end fills it without zeroing it first.
            let mut buf = Vec::with_capacity(want as usize);
            match (&mut file).take(want).read_to_end(&mut buf) {
                Ok(n) if n as u64 == want => {
                    remaining -= want;
                    // The receiver is gone when the client hung up: stop reading.
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Ok(_) => {
                    let _ = tx.blocking_send(Err(io::ErrorKind::UnexpectedEof.into()));
                    return;
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(BlobBody {
        len,
        stream: stream.boxed(),
    })
}

/// Releases an upload's in-progress mark however the append ends.
struct UploadGuard<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Store for FsStore {
    async fn blob_size(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        let path = self.blob_path(digest);
        Ok(not_found_is_none(std::fs::metadata(&path))
            .map_err(io_err(&path))?
            .map(|m| m.len()))
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> StorageResult<BlobBody> {
        let path = self.blob_path(digest);
        let size = self
            .blob_size(digest)
            .await?
            .ok_or(StorageError::NotFound)?;
        let (start, end) = range.unwrap_or((0, size));
        tokio::task::spawn_blocking(move || {
            stream_file(path, start, end.min(size).saturating_sub(start))
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("reader task failed: {e}")))?
    }

    async fn create_upload(&self, repo: &RepoName) -> StorageResult<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.upload_dir(&id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err(&dir))?;
        tokio::fs::File::create(dir.join("data"))
            .await
            .map_err(io_err(&dir))?;
        // Written last: an upload without its owner file is invisible and gets purged.
        self.write_atomic(&dir.join("repository"), repo.as_str().as_bytes())
            .await?;
        Ok(id)
    }

    async fn upload_len(&self, repo: &RepoName, id: &str) -> StorageResult<u64> {
        let dir = self.check_upload_owner(repo, id).await?;
        let data = dir.join("data");
        let meta = tokio::fs::metadata(&data).await.map_err(io_err(&data))?;
        Ok(meta.len())
    }

    async fn append_upload<S>(
        &self,
        repo: &RepoName,
        id: &str,
        offset: u64,
        mut body: S,
        mut hasher: Hasher,
    ) -> StorageResult<(u64, Hasher)>
    where
        S: futures_util::Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let dir = self.check_upload_owner(repo, id).await?;
        if !self
            .uploads_in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned())
        {
            return Err(StorageError::UploadBusy);
        }
        let _guard = UploadGuard {
            set: &self.uploads_in_progress,
            id: id.to_owned(),
        };
        let path = dir.join("data");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let actual = file.metadata().map_err(io_err(&path))?.len();
        if actual != offset {
            return Err(StorageError::OffsetMismatch {
                expected: offset,
                actual,
            });
        }
        file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;

        // Small bodies (most layers of most images, every config) are hashed and written inline:
        // for them, handing chunks to other threads costs more than it saves.
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0;
        let mut failure = None;
        let mut rest_follows = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    head_len += chunk.len();
                    head.push(chunk);
                    if head_len >= PIPELINE_THRESHOLD {
                        rest_follows = true;
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !rest_follows {
            // What was received is always stored, so that a resumed upload continues from a file
            // that matches every byte the client managed to send.
            for chunk in &head {
                hasher.update(chunk);
                file.write_all(chunk).map_err(io_err(&path))?;
            }
            if self.fsync {
                file.sync_data().map_err(io_err(&path))?;
            }
            return match failure {
                Some(e) => Err(io_err(&path)(e)),
                None => Ok((offset + head_len as u64, hasher)),
            };
        }

        // Large bodies: receive here, hash on one blocking thread, write on another, so that the
        // three overlap on the machine's cores; the received buffers are handed on, never copied.
        let (to_hash, mut hash_queue) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_QUEUE);
        let (to_write, mut write_queue) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_QUEUE);
        let hashing = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = hash_queue.blocking_recv() {
                hasher.update(&chunk);
                if to_write.blocking_send(chunk).is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            hasher
        });
        let fsync = self.fsync;
        let writing = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let mut written = 0u64;
            while let Some(chunk) = write_queue.blocking_recv() {
                file.write_all(&chunk)?;
                written += chunk.len() as u64;
            }
            if fsync {
                file.sync_data()?;
            }
            Ok(written)
        });
        let mut pending = head.into_iter();
        loop {
            let next = match pending.next() {
                Some(chunk) => Some(Ok(chunk)),
                None => body.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    if to_hash.send(chunk).await.is_err() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                None => break,
            }
        }
        drop(to_hash);
        let hasher = hashing
            .await
            .map_err(|e| StorageError::Corrupt(format!("upload hasher failed: {e}")))?;
        let written = writing
            .await
            .map_err(|e| StorageError::Corrupt(format!("upload writer failed: {e}")))?
            .map_err(io_err(&path))?;
        match failure {
            Some(e) => Err(io_err(&path)(e)),
            None => Ok((offset + written, hasher)),
        }
    }

    async fn read_upload(&self, repo: &RepoName, id: &str) -> StorageResult<BlobBody> {
        let dir = self.check_upload_owner(repo, id).await?;
        let path = dir.join("data");
        let len = tokio::fs::metadata(&path)
            .await
            .map_err(io_err(&path))?
            .len();
        tokio::task::spawn_blocking(move || stream_file(path, 0, len))
            .await
            .map_err(|e| StorageError::Corrupt(format!("reader task failed: {e}")))?
    }

    async fn commit_upload(&self, repo: &RepoName, id: &str, digest: &Digest) -> StorageResult<()> {
        let dir = self.check_upload_owner(repo, id).await?;
        let data = dir.join("data");
        let target = self.blob_path(digest);
        let parent = target.parent().expect("blob paths have a parent");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io_err(parent))?;
        if self.fsync {
            let f = tokio::fs::File::open(&data).await.map_err(io_err(&data))?;
            f.sync_all().await.map_err(io_err(&data))?;
        }
        // Replacing an existing blob is harmless: same digest, same bytes; readers keep the old inode.
        tokio::fs::rename(&data, &target)
            .await
            .map_err(io_err(&target))?;
        self.link_blob(repo, digest).await?;
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(io_err(&dir))?;
        Ok(())
    }

    async fn cancel_upload(&self, repo: &RepoName, id: &str) -> StorageResult<()> {
        let dir = self.check_upload_owner(repo, id).await?;
        tokio::fs::remove_dir_all(&dir).await.map_err(io_err(&dir))
    }

    async fn purge_uploads(&self, max_age: Duration) -> StorageResult<usize> {
        let uploads = self.root.join("uploads");
        let busy: HashSet<String> = self
            .uploads_in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio::task::spawn_blocking(move || -> StorageResult<usize> {
            let now = SystemTime::now();
            let mut purged = 0;
            for entry in std::fs::read_dir(&uploads).map_err(io_err(&uploads))? {
                let entry = entry.map_err(io_err(&uploads))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if busy.contains(&name) {
                    continue;
                }
                let modified = std::fs::metadata(entry.path().join("data"))
                    .or_else(|_| entry.metadata())
                    .and_then(|m| m.modified())
                    .unwrap_or(now);
                if now.duration_since(modified).unwrap_or_default() > max_age
                    && std::fs::remove_dir_all(entry.path()).is_ok()
                {
                    purged += 1;
                }
            }
            Ok(purged)
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("purge task failed: {e}")))?
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<()> {
        let link = self.layer_link(repo, digest);
        if Self::exists(&link)? {
            return Ok(());
        }
        self.write_atomic(&link, b"").await
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool> {
        Self::exists(&self.layer_link(repo, digest))
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool> {
        let link = self.layer_link(repo, digest);
        Ok(not_found_is_none(tokio::fs::remove_file(&link).await)
            .map_err(io_err(&link))?
            .is_some())
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
    ) -> StorageResult<()> {
        let blob = self.blob_path(digest);
        if !tokio::fs::try_exists(&blob).await.unwrap_or(false) {
            self.write_atomic(&blob, &manifest.bytes).await?;
        }
        // The content is in place before the link that makes it visible.
        self.write_atomic(
            &self.revision_link(repo, digest),
            manifest.media_type.as_bytes(),
        )
        .await?;
        self.cache_manifest(digest, &manifest.bytes);
        Ok(())
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> StorageResult<Option<StoredManifest>> {
        let Some(media_type) = Self::read_small(&self.revision_link(repo, digest))? else {
            return Ok(None);
        };
        let media_type = String::from_utf8(media_type)
            .map_err(|_| StorageError::Corrupt(format!("media type of {digest} in {repo}")))?;
        let cached = self
            .manifest_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned();
        let bytes = match cached {
            Some(b) => b,
            None => {
                let Some(b) = Self::read_small(&self.blob_path(digest))? else {
                    return Ok(None);
                };
                let b = Bytes::from(b);
                self.cache_manifest(digest, &b);
                b
            }
        };
        Ok(Some(StoredManifest { bytes, media_type }))
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool> {
        let link = self.revision_link(repo, digest);
        if !tokio::fs::try_exists(&link).await.map_err(io_err(&link))? {
            return Ok(false);
        }
        // Tags first: a tag must never point to a manifest that is gone.
        let tags_dir = self.tags_dir(repo);
        self.tag_lists.forget(repo);
        let wanted = digest.to_string();
        if let Some(mut entries) =
            not_found_is_none(tokio::fs::read_dir(&tags_dir).await).map_err(io_err(&tags_dir))?
        {
            while let Some(entry) = entries.next_entry().await.map_err(io_err(&tags_dir))? {
                if let Ok(target) = tokio::fs::read(entry.path()).await
                    && target == wanted.as_bytes()
                {
                    let _ = tokio::fs::remove_file(entry.path()).await;
                }
            }
        }
        Ok(not_found_is_none(tokio::fs::remove_file(&link).await)
            .map_err(io_err(&link))?
            .is_some())
    }

    async fn set_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> StorageResult<()> {
        let path = self.tags_dir(repo).join(tag.as_str());
        self.write_atomic(&path, digest.to_string().as_bytes())
            .await
    }

    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> StorageResult<Option<Digest>> {
        let path = self.tags_dir(repo).join(tag.as_str());
        match Self::read_small(&path)? {
            None => Ok(None),
            Some(raw) => std::str::from_utf8(&raw)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| StorageError::Corrupt(format!("tag {tag} in {repo}"))),
        }
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StorageResult<bool> {
        let path = self.tags_dir(repo).join(tag.as_str());
        let removed = not_found_is_none(tokio::fs::remove_file(&path).await);
        self.tag_lists.forget(repo);
        Ok(removed.map_err(io_err(&path))?.is_some())
    }

    async fn list_tags(&self, repo: &RepoName) -> StorageResult<Option<Arc<Vec<String>>>> {
        let tags_dir = self.tags_dir(repo);
        let modified = match std::fs::metadata(&tags_dir) {
            Ok(m) => m.modified().ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let exists = Self::exists(&self.repo_dir(repo))?;
                return Ok(exists.then(|| Arc::new(Vec::new())));
            }
            Err(e) => return Err(io_err(&tags_dir)(e)),
        };
        if let Some(cached) = self.tag_lists.get(repo, modified) {
            return Ok(Some(cached));
        }
        let dir = tags_dir.clone();
        let tags = tokio::task::spawn_blocking(move || -> StorageResult<Vec<String>> {
            let mut tags: Vec<String> = std::fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .collect();
            tags.sort_unstable();
            Ok(tags)
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("listing task failed: {e}")))??;
        let tags = Arc::new(tags);
        self.tag_lists.put(repo, modified, &tags);
        Ok(Some(tags))
    }

    async fn list_repositories(&self) -> StorageResult<Vec<String>> {
        let root = self.root.join("repositories");
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let mut stack = vec![(root.clone(), String::new())];
            while let Some((dir, name)) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut is_repo = false;
                for entry in entries.filter_map(|e| e.ok()) {
                    let file_name = entry.file_name().to_string_lossy().into_owned();
                    if file_name.starts_with('_') {
                        is_repo |= file_name == "_manifests" || file_name == "_layers";
                    } else if !file_name.starts_with('.')
                        && entry.file_type().is_ok_and(|t| t.is_dir())
                    {
                        let child = if name.is_empty() {
                            file_name
                        } else {
                            format!("{name}/{file_name}")
                        };
                        stack.push((entry.path(), child));
                    }
                }
                if is_repo {
                    found.push(name);
                }
            }
            found.sort_unstable();
            Ok(found)
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("catalog task failed: {e}")))?
    }

    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> StorageResult<()> {
        let path = self.referrers_dir(repo, subject).join(format!(
            "{}-{}",
            referrer.algorithm().name(),
            referrer.hex()
        ));
        self.write_atomic(&path, descriptor).await
    }

    async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> StorageResult<()> {
        let path = self.referrers_dir(repo, subject).join(format!(
            "{}-{}",
            referrer.algorithm().name(),
            referrer.hex()
        ));
        not_found_is_none(tokio::fs::remove_file(&path).await).map_err(io_err(&path))?;
        Ok(())
    }

    async fn list_referrers(&self, repo: &RepoName, subject: &Digest) -> StorageResult<Vec<Bytes>> {
        let dir = self.referrers_dir(repo, subject);
        let Some(mut entries) =
            not_found_is_none(tokio::fs::read_dir(&dir).await).map_err(io_err(&dir))?
        else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_err(&dir))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort_unstable();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(bytes) = Self::read_small(&dir.join(&name))? {
                out.push(Bytes::from(bytes));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;

    fn repo(name: &str) -> RepoName {
        RepoName::parse(name).unwrap()
    }

    fn tag(name: &str) -> Tag {
        Tag::parse(name).unwrap()
    }

    async fn upload(store: &FsStore, repo: &RepoName, data: &[u8]) -> Digest {
        let id = store.create_upload(repo).await.unwrap();
        let body = futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(data))]);
        let (len, hasher) = store
            .append_upload(repo, &id, 0, body, Algorithm::Sha256.hasher())
            .await
            .unwrap();
        assert_eq!(len, data.len() as u64);
        let digest = hasher.finish();
        store.commit_upload(repo, &id, &digest).await.unwrap();
        digest
    }

    #[tokio::test]
    async fn tag_lists_follow_writes_from_this_and_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let a = FsStore::new(dir.path(), false).unwrap();
        let b = FsStore::new(dir.path(), false).unwrap(); // another replica on the same storage
        let r = repo("team/app");
        assert_eq!(
            a.list_tags(&r).await.unwrap(),
            None,
            "no such repository yet"
        );
        let d = upload(&a, &r, b"manifest-ish").await;
        assert_eq!(
            a.list_tags(&r).await.unwrap(),
            Some(Arc::new(vec![])),
            "a repository with a blob and no tags"
        );
        a.set_tag(&r, &tag("v1"), &d).await.unwrap();
        assert_eq!(
            *a.list_tags(&r).await.unwrap().unwrap(),
            vec!["v1".to_string()]
        );
        // Let the directory's timestamp settle so that the listing is cached, then change it
        // through the other store: the cache must notice.
        tokio::time::sleep(RACY_WINDOW * 2).await;
        assert_eq!(a.list_tags(&r).await.unwrap().unwrap().len(), 1);
        assert!(
            a.tag_lists
                .get(
                    &r,
                    std::fs::metadata(a.tags_dir(&r)).unwrap().modified().ok()
                )
                .is_some()
        );
        b.set_tag(&r, &tag("v2"), &d).await.unwrap();
        assert_eq!(
            *a.list_tags(&r).await.unwrap().unwrap(),
            vec!["v1".to_string(), "v2".to_string()]
        );
        b.delete_tag(&r, &tag("v1")).await.unwrap();
        assert_eq!(
            *a.list_tags(&r).await.unwrap().unwrap(),
            vec!["v2".to_string()]
        );
    }

    /// Regression: a file published by rename must never be seen empty or partial, even when it
    /// is read the instant the write returns (tags, links and upload owners all rely on it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn published_files_are_complete_the_moment_they_are_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path(), false).unwrap();
        let r = repo("race");
        for i in 0..500u32 {
            let digest = Digest::of(Algorithm::Sha256, &i.to_le_bytes());
            store.set_tag(&r, &tag("t"), &digest).await.unwrap();
            assert_eq!(store.get_tag(&r, &tag("t")).await.unwrap(), Some(digest));
            let id = store.create_upload(&r).await.unwrap();
            assert_eq!(store.upload_len(&r, &id).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn offsets_uploads_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path(), true).unwrap();
        let r = repo("a");
        let id = store.create_upload(&r).await.unwrap();
        let chunk = |b: &'static [u8]| futures_util::stream::iter(vec![Ok(Bytes::from_static(b))]);
        let (len, hasher) = store
            .append_upload(&r, &id, 0, chunk(b"abc"), Algorithm::Sha256.hasher())
            .await
            .unwrap();
        assert_eq!(len, 3);
        assert!(matches!(
            store
                .append_upload(&r, &id, 5, chunk(b"x"), Algorithm::Sha256.hasher())
                .await,
            Err(StorageError::OffsetMismatch {
                expected: 5,
                actual: 3
            })
        ));
        // An upload id is bound to its repository.
        assert!(matches!(
            store.upload_len(&repo("b"), &id).await,
            Err(StorageError::NotFound)
        ));
        assert!(matches!(
            store.upload_len(&r, "../../etc").await,
            Err(StorageError::NotFound)
        ));
        let (_, hasher) = store
            .append_upload(&r, &id, 3, chunk(b"def"), hasher)
            .await
            .unwrap();
        assert_eq!(hasher.finish(), Digest::of(Algorithm::Sha256, b"abcdef"));
        assert_eq!(
            store
                .purge_uploads(Duration::from_secs(3600))
                .await
                .unwrap(),
            0
        );
        assert_eq!(store.purge_uploads(Duration::ZERO).await.unwrap(), 1);
        assert!(matches!(
            store.upload_len(&r, &id).await,
            Err(StorageError::NotFound)
        ));
    }

    #[tokio::test]
    async fn large_bodies_go_through_the_pipeline_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path(), false).unwrap();
        let r = repo("big");
        let data: Vec<u8> = (0..(5 << 20) + 12345)
            .map(|i: u32| (i % 251) as u8)
            .collect();
        let id = store.create_upload(&r).await.unwrap();
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(100_003)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let (len, hasher) = store
            .append_upload(
                &r,
                &id,
                0,
                futures_util::stream::iter(chunks),
                Algorithm::Sha512.hasher(),
            )
            .await
            .unwrap();
        assert_eq!(len, data.len() as u64);
        let digest = hasher.finish();
        assert_eq!(digest, Digest::of(Algorithm::Sha512, &data));
        store.commit_upload(&r, &id, &digest).await.unwrap();
        let mut body = store.read_blob(&digest, Some((7, 5 << 20))).await.unwrap();
        let mut read = Vec::new();
        while let Some(c) = body.stream.next().await {
            read.extend_from_slice(&c.unwrap());
        }
        assert_eq!(read, &data[7..5 << 20]);
    }

    #[tokio::test]
    async fn interrupted_body_keeps_exactly_what_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path(), false).unwrap();
        let r = repo("cut");
        let id = store.create_upload(&r).await.unwrap();
        let big = Bytes::from(vec![1u8; 3 << 20]);
        let body = futures_util::stream::iter(vec![
            Ok(big.clone()),
            Err(io::Error::other("client went away")),
        ]);
        assert!(
            store
                .append_upload(&r, &id, 0, body, Algorithm::Sha256.hasher())
                .await
                .is_err()
        );
        assert_eq!(store.upload_len(&r, &id).await.unwrap(), big.len() as u64);
    }
}
