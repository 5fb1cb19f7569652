//! What garbage collection reads from the S3 backend. The collector calls these from its own
//! threads (blocking), so each runs its requests on the store's runtime; a listing returns
//! every object's size and time with its key, so a shard costs one request per thousand blobs
//! and no per-blob stat.

use super::{S3Store, storage_error};
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::storage::inventory::{
    BlobEntry, BlobShard, Detail, RepoInventory, algorithm_named, digest_from, is_encoded,
};
use crate::registry::storage::{Inventory, StorageResult};
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use std::time::{Duration, Instant, SystemTime};

/// A listing of the whole blob store is one request per thousand blobs: sampled this rarely.
const BLOB_BYTES_SAMPLE_AGE: Duration = Duration::from_secs(15 * 60);

impl S3Store {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    async fn list_meta(&self, prefix: &Path) -> StorageResult<Vec<ObjectMeta>> {
        self.client
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| storage_error("list", prefix, e))
    }

    /// `<alg>/<hex>` objects under `prefix`, as (algorithm, hex, metadata).
    async fn digest_objects(
        &self,
        prefix: &Path,
    ) -> StorageResult<Vec<(Algorithm, String, ObjectMeta)>> {
        let base = format!("{}/", prefix.as_ref());
        let mut found = Vec::new();
        for meta in self.list_meta(prefix).await? {
            let Some(rest) = meta.location.as_ref().strip_prefix(base.as_str()) else {
                continue;
            };
            let Some((alg, hex)) = rest.split_once('/') else {
                continue;
            };
            if let Some(algorithm) = algorithm_named(alg)
                && is_encoded(algorithm, hex)
            {
                let hex = hex.to_owned();
                found.push((algorithm, hex, meta));
            }
        }
        Ok(found)
    }
}

impl Inventory for S3Store {
    fn repository_inventory(&self, name: &str, detail: Detail) -> StorageResult<RepoInventory> {
        self.block_on(async {
            let prefix = self.repo_key(name, "_manifests/revisions");
            let mut revisions = Vec::new();
            for (algorithm, hex, meta) in self.digest_objects(&prefix).await? {
                let Some(digest) = digest_from(algorithm, &hex) else {
                    continue;
                };
                let pushed = match detail {
                    Detail::Revisions => SystemTime::UNIX_EPOCH,
                    _ => SystemTime::from(meta.last_modified),
                };
                let media_type = match detail {
                    Detail::Full => self
                        .get_bytes(&meta.location)
                        .await?
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                revisions.push((digest, pushed, media_type));
            }
            let mut tagged = Vec::new();
            if detail >= Detail::Ages {
                let tags = self.repo_key(name, "_manifests/tags");
                for meta in self.list_meta(&tags).await? {
                    if let Some(raw) = self.get_bytes(&meta.location).await?
                        && let Ok((d, _)) = Self::parse_tag_object(&raw, "tag")
                    {
                        tagged.push(d);
                    }
                }
            }
            Ok(RepoInventory { revisions, tagged })
        })
    }

    fn manifest_media_type(&self, repository: &str, digest: &Digest) -> Option<String> {
        self.block_on(self.get_bytes(&self.revision_key(repository, digest)))
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn manifest_bytes(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.block_on(self.get_bytes(&self.blob_key(digest)))
            .ok()
            .flatten()
            .map(|b| b.to_vec())
    }

    /// All 512: an empty shard costs one short listing.
    fn blob_shards(&self) -> StorageResult<Vec<BlobShard>> {
        Ok(BlobShard::all())
    }

    fn walk_blob_shard(
        &self,
        shard: &BlobShard,
        unreferenced: &mut dyn FnMut(Algorithm, &str) -> bool,
    ) -> StorageResult<(u64, Vec<BlobEntry>)> {
        let prefix = self.key(&format!(
            "blobs/{}/{}",
            shard.algorithm.name(),
            shard.prefix
        ));
        let listed = self.block_on(self.list_meta(&prefix))?;
        let mut total = 0;
        let mut found = Vec::new();
        for meta in listed {
            let Some(hex) = meta.location.filename() else {
                continue;
            };
            if !is_encoded(shard.algorithm, hex) {
                continue;
            }
            total += 1;
            if !unreferenced(shard.algorithm, hex) {
                continue;
            }
            if let Some(digest) = digest_from(shard.algorithm, hex) {
                found.push(BlobEntry {
                    digest,
                    size: meta.size,
                    modified: SystemTime::from(meta.last_modified),
                });
            }
        }
        Ok((total, found))
    }

    fn each_layer_link(
        &self,
        repository: &str,
        visit: &mut dyn FnMut(Algorithm, &str),
    ) -> StorageResult<()> {
        let prefix = self.repo_key(repository, "_layers");
        for (algorithm, hex, _) in self.block_on(self.digest_objects(&prefix))? {
            visit(algorithm, &hex);
        }
        Ok(())
    }

    fn remove_layer_link(&self, repository: &str, digest: &Digest) -> StorageResult<()> {
        let key = self.layer_key(repository, digest);
        self.block_on(async {
            match self.client.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(storage_error("delete", &key, e)),
            }
        })
    }

    fn remove_blob(&self, digest: &Digest, keep_since: SystemTime) -> StorageResult<bool> {
        let key = self.blob_key(digest);
        self.block_on(async {
            // A commit or manifest push since the walk rewrote the object: its time says so.
            match self.client.head(&key).await {
                Ok(meta) if SystemTime::from(meta.last_modified) >= keep_since => {
                    return Ok(false);
                }
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(storage_error("stat", &key, e)),
            }
            match self.client.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
                Err(e) => Err(storage_error("delete", &key, e)),
            }
        })
    }

    fn blob_bytes(&self) -> StorageResult<u64> {
        let mut sample = self
            .blob_bytes_sample
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, bytes)) = *sample
            && at.elapsed() < BLOB_BYTES_SAMPLE_AGE
        {
            return Ok(bytes);
        }
        let prefix = self.key("blobs");
        let total = self.block_on(async {
            self.client
                .list(Some(&prefix))
                .try_fold(0u64, |sum, meta| async move { Ok(sum + meta.size) })
                .await
                .map_err(|e| storage_error("list", &prefix, e))
        })?;
        *sample = Some((Instant::now(), total));
        Ok(total)
    }
}
