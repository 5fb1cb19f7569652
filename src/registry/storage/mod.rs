//! What the API needs from storage, as one trait. The filesystem backend is the embedded default;
//! an object-store backend implements the same operations with conditional puts in place of
//! renames, so nothing above this trait assumes a local disk or a single process.

pub mod fs;
pub mod inventory;
mod manifest_cache;
pub mod s3;

use super::digest::{Algorithm, Digest, Hasher};
use super::names::{RepoName, Tag};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use inventory::{BlobEntry, BlobShard, Detail, RepoInventory};
use std::future::Future;
use std::io;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("upload offset is {actual}, not {expected}")]
    OffsetMismatch { expected: u64, actual: u64 },
    #[error("upload is being written by another request")]
    UploadBusy,
    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("stored metadata is corrupt: {0}")]
    Corrupt(String),
    /// The storage service cannot be reached or refuses us (down, overloaded, wrong keys):
    /// the request may succeed later.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    #[error("storage request failed: {0}")]
    Backend(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A blob's bytes, or a byte range of them, as a stream.
pub struct BlobBody {
    pub len: u64,
    pub stream: BoxStream<'static, io::Result<Bytes>>,
}

/// A manifest as stored: its exact bytes and the media type it was pushed with.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub bytes: Bytes,
    pub media_type: String,
}

pub trait Store: Documents + Inventory + Uploads + Send + Sync + 'static {
    /// Size of a blob in the global content store, if present.
    fn blob_size(&self, digest: &Digest)
    -> impl Future<Output = StorageResult<Option<u64>>> + Send;
    /// Streams `range` (inclusive start, exclusive end) of a blob, or all of it.
    fn read_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> impl Future<Output = StorageResult<BlobBody>> + Send;

    /// Where a client can fetch the blob itself (a presigned object URL), when the backend is
    /// set to redirect blob reads; `None`: the registry streams it.
    fn blob_url(
        &self,
        _digest: &Digest,
    ) -> impl Future<Output = StorageResult<Option<String>>> + Send {
        async { Ok(None) }
    }

    fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<()>> + Send;
    fn blob_linked(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<bool>> + Send;
    /// Returns whether the link existed.
    fn unlink_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Stores manifest bytes (already hashed to `digest`) and links them into `repo`.
    fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
    ) -> impl Future<Output = StorageResult<()>> + Send;
    fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<Option<StoredManifest>>> + Send;
    /// Returns whether the manifest was linked. Tags pointing to it are removed first.
    fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Points `tag` at the manifest `digest`, whose media type is `media_type`.
    fn set_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        media_type: &str,
    ) -> impl Future<Output = StorageResult<()>> + Send;
    fn get_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> impl Future<Output = StorageResult<Option<Digest>>> + Send;
    /// The manifest `tag` points at, with its digest. A backend that keeps the media type with
    /// the tag answers from the tag and the manifest cache, without the revision link.
    fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> impl Future<Output = StorageResult<Option<(Digest, StoredManifest)>>> + Send {
        async move {
            let Some(digest) = self.get_tag(repo, tag).await? else {
                return Ok(None);
            };
            Ok(self
                .get_manifest(repo, &digest)
                .await?
                .map(|manifest| (digest, manifest)))
        }
    }
    fn delete_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> impl Future<Output = StorageResult<bool>> + Send;
    /// Sorted tags; `None` when the repository does not exist.
    fn list_tags(
        &self,
        repo: &RepoName,
    ) -> impl Future<Output = StorageResult<Option<Arc<Vec<String>>>>> + Send;
    /// Every repository holding content, sorted.
    fn list_repositories(&self) -> impl Future<Output = StorageResult<Vec<String>>> + Send;

    /// Records that manifest `referrer` (described by `descriptor`, JSON) has `subject` as subject.
    fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> impl Future<Output = StorageResult<()>> + Send;
    fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> impl Future<Output = StorageResult<()>> + Send;
    /// Descriptors (JSON) of the manifests whose subject is `subject`.
    fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> impl Future<Output = StorageResult<Vec<Bytes>>> + Send;
}

/// The upload path: an upload is created, appended to (from any process sharing the storage),
/// then committed as a blob or cancelled.
pub trait Uploads: Send + Sync + 'static {
    fn create_upload(&self, repo: &RepoName) -> impl Future<Output = StorageResult<String>> + Send;
    /// The hash state the backend saved with the upload's last append, and the length it
    /// covers, so that any replica continues the hash without re-reading the bytes. `None`
    /// when the backend keeps none (the caller then rehashes what `read_upload` returns).
    fn upload_checkpoint(
        &self,
        _repo: &RepoName,
        _id: &str,
    ) -> impl Future<Output = StorageResult<Option<(u64, Hasher)>>> + Send {
        async { Ok(None) }
    }
    /// Bytes received so far; `NotFound` when the upload does not exist for this repository.
    fn upload_len(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> impl Future<Output = StorageResult<u64>> + Send;
    /// Appends a stream at `offset` (which must equal the current length), feeding every byte to
    /// `hasher` in order as it is stored: one pass over the data. Returns the new length and the
    /// hasher. On error the hasher is gone; whatever was stored can be re-read to rebuild it.
    fn append_upload<S>(
        &self,
        repo: &RepoName,
        id: &str,
        offset: u64,
        body: S,
        hasher: Hasher,
    ) -> impl Future<Output = StorageResult<(u64, Hasher)>> + Send
    where
        S: futures_util::Stream<Item = io::Result<Bytes>> + Send + Unpin;
    /// Streams what was received so far (to rebuild a hash state after a restart).
    fn read_upload(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> impl Future<Output = StorageResult<BlobBody>> + Send;
    /// Makes the upload's content the blob `digest` (already verified) and links it into `repo`.
    fn commit_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<()>> + Send;
    fn cancel_upload(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> impl Future<Output = StorageResult<()>> + Send;
    /// The largest blob worth taking whole, from memory, with `commit_whole_blob`; 0 when the
    /// ordinary upload path costs the backend no more (a local rename).
    fn whole_blob_limit(&self) -> u64 {
        0
    }
    /// Stores `bytes`, already verified to be `digest`, as that blob, links it into `repo` and
    /// ends the upload `id` (which has received nothing) if there is one. An object store does
    /// this in one write instead of a segment, a state update and a copy.
    fn commit_whole_blob(
        &self,
        repo: &RepoName,
        id: Option<&str>,
        digest: &Digest,
        bytes: Bytes,
    ) -> impl Future<Output = StorageResult<()>> + Send {
        async move {
            let id = match id {
                Some(id) => id.to_owned(),
                None => self.create_upload(repo).await?,
            };
            let body = futures_util::stream::iter([Ok(bytes)]);
            self.append_upload(repo, &id, 0, body, digest.algorithm().hasher())
                .await?;
            self.commit_upload(repo, &id, digest).await
        }
    }
    /// Removes uploads untouched for longer than `max_age`; returns how many.
    fn purge_uploads(
        &self,
        max_age: std::time::Duration,
    ) -> impl Future<Output = StorageResult<usize>> + Send;
}

/// What garbage collection reads and removes, one unit of work per call, so that a collection
/// can spread the units over its threads. Blocking: call these off the async runtime.
pub trait Inventory: Send + Sync + 'static {
    /// One repository's inventory, in as much `detail` as asked.
    fn repository_inventory(&self, name: &str, detail: Detail) -> StorageResult<RepoInventory>;
    /// The media type a manifest of `repository` was pushed with.
    fn manifest_media_type(&self, repository: &str, digest: &Digest) -> Option<String>;
    /// A manifest's bytes.
    fn manifest_bytes(&self, digest: &Digest) -> Option<Vec<u8>>;
    /// The shards of the blob store worth walking (a backend may leave out empty ones).
    fn blob_shards(&self) -> StorageResult<Vec<BlobShard>>;
    /// Counts the blobs of `shard`; returns size and age of those `unreferenced` picks (it is
    /// given each blob's algorithm and encoded digest).
    fn walk_blob_shard(
        &self,
        shard: &BlobShard,
        unreferenced: &mut dyn FnMut(Algorithm, &str) -> bool,
    ) -> StorageResult<(u64, Vec<BlobEntry>)>;
    /// Calls `visit` with every blob linked into `repository`.
    fn each_layer_link(
        &self,
        repository: &str,
        visit: &mut dyn FnMut(Algorithm, &str),
    ) -> StorageResult<()>;
    /// Removes one blob link of `repository` (gone already is fine).
    fn remove_layer_link(&self, repository: &str, digest: &Digest) -> StorageResult<()>;
    /// Removes a blob's content unless it was written at or after `keep_since` (an upload of
    /// the same bytes since the walk); returns whether it removed it.
    fn remove_blob(
        &self,
        digest: &Digest,
        keep_since: std::time::SystemTime,
    ) -> StorageResult<bool>;
    /// Bytes the blob store holds (for `/metrics`; sampled every minute, so a backend where
    /// this is a long listing may answer from a recent sample).
    fn blob_bytes(&self) -> StorageResult<u64>;
}

/// Small JSON documents the registry keeps about itself (robot accounts, the token signing key),
/// stored next to the content so that every replica sharing the storage sees the same ones.
/// Keys are `/`-separated lowercase words; each document is replaced whole, atomically.
pub trait Documents: Send + Sync + 'static {
    fn get_document<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StorageResult<Option<Vec<u8>>>>;
    fn put_document<'a>(&'a self, key: &'a str, value: Vec<u8>)
    -> BoxFuture<'a, StorageResult<()>>;
    /// Writes only if no document has this key yet; returns whether it wrote.
    fn create_document<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, StorageResult<bool>>;
    /// Returns whether the document existed.
    fn delete_document<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StorageResult<bool>>;
    /// Keys directly under `prefix/`, sorted.
    fn list_documents<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, StorageResult<Vec<String>>>;
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Document keys: segments of `[a-z0-9._-]`, none starting with a dot, so a key is always a
/// plain relative path.
pub fn valid_document_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 200
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}
