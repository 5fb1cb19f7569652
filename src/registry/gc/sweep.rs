//! The sweep: find the blobs nothing references that are older than the grace period, remove
//! the repositories' links to them, then their content. Each removal is checked against what
//! pushes announced, under the same lock the announcement takes (see the module docs of `gc`),
//! and every link goes before any content, so a crash leaves unreferenced blobs for the next
//! run, never a link to nothing.

use super::GcError;
use super::graph::{Key, key_of};
use super::parallel;
use super::protect::Protections;
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::storage::Store;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What the sweep needs from the collector.
#[derive(Clone)]
pub struct Sweep {
    pub threads: usize,
    pub protections: Arc<Protections>,
    /// When the run started: pushes since then protect their blobs.
    pub started: Instant,
    /// The same moment on the wall clock, which blob ages are measured against.
    pub started_at: SystemTime,
    pub grace: Duration,
    pub dry_run: bool,
    /// Blobs removed so far, for `/metrics`.
    pub progress: Arc<AtomicU64>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepCounts {
    pub blobs: u64,
    pub referenced: u64,
    pub deleted: u64,
    pub freed: u64,
    /// Unreferenced, but younger than the grace period.
    pub recent: u64,
    /// Unreferenced, but announced or used by a push since the run started (on any replica).
    pub protected: u64,
}

/// A blob the sweep removes: sha256 blobs by their bytes alone (48 bytes in all, where a
/// `Digest` takes twice that on the heap), others with their digest.
pub struct Doomed {
    key: Key,
    size: u64,
    other: Option<Box<Digest>>,
}

impl Doomed {
    fn new(digest: Digest, size: u64) -> Doomed {
        let key = key_of(digest.algorithm(), digest.hex());
        let other = (digest.algorithm() != Algorithm::Sha256).then(|| Box::new(digest));
        Doomed { key, size, other }
    }

    pub fn digest(&self) -> Digest {
        match &self.other {
            Some(d) => (**d).clone(),
            None => Digest::sha256_from_bytes(&self.key),
        }
    }
}

/// What one thread of the walk found.
#[derive(Default)]
struct Walked {
    blobs: u64,
    recent: u64,
}

impl Sweep {
    /// Removes the `doomed` blobs (from `find`) except those `spared` (referenced by a push on
    /// another replica), links first.
    pub fn remove<S: Store>(
        &self,
        store: &S,
        repositories: &[String],
        doomed: &[Doomed],
        spared: &HashSet<Key>,
        mut counts: SweepCounts,
    ) -> Result<SweepCounts, GcError> {
        if !self.dry_run {
            self.remove_links(store, repositories, doomed, spared)?;
        }
        let parts = parallel::for_each(doomed, self.threads, SweepCounts::default, |c, blob| {
            self.remove_content(store, blob, spared, c)
        })?;
        for part in parts {
            counts.deleted += part.deleted;
            counts.freed += part.freed;
            counts.protected += part.protected;
        }
        Ok(counts)
    }

    /// Every unreferenced blob old enough to go, sorted by key (so that removals walk the
    /// store's directories in order).
    pub fn find<S: Store>(
        &self,
        store: &S,
        referenced: Vec<Key>,
        counts: &mut SweepCounts,
    ) -> Result<Vec<Doomed>, GcError> {
        let groups = store.blob_shards()?;
        let doomed = Mutex::new(Vec::new());
        let parts = parallel::for_each(&groups, self.threads, Walked::default, |walked, group| {
            let (blobs, unreferenced) = store.walk_blob_shard(group, &mut |algorithm, hex| {
                referenced.binary_search(&key_of(algorithm, hex)).is_err()
            })?;
            walked.blobs += blobs;
            let mut old = Vec::with_capacity(unreferenced.len());
            for blob in unreferenced {
                let age = self
                    .started_at
                    .duration_since(blob.modified)
                    .unwrap_or_default();
                match age >= self.grace {
                    true => old.push(Doomed::new(blob.digest, blob.size)),
                    false => walked.recent += 1,
                }
            }
            doomed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(&mut old);
            Ok(())
        })?;
        drop(referenced);
        let mut doomed = doomed.into_inner().unwrap_or_else(|e| e.into_inner());
        doomed.sort_unstable_by_key(|d| d.key);
        for part in parts {
            counts.blobs += part.blobs;
            counts.recent += part.recent;
        }
        counts.referenced = counts.blobs - counts.recent - doomed.len() as u64;
        Ok(doomed)
    }

    /// Removes every repository's links to `doomed` blobs a push has not claimed since.
    fn remove_links<S: Store>(
        &self,
        store: &S,
        repositories: &[String],
        doomed: &[Doomed],
        spared: &HashSet<Key>,
    ) -> Result<(), GcError> {
        parallel::for_each(
            repositories,
            self.threads,
            || (),
            |_, repository| {
                let mut linked = Vec::new();
                store.each_layer_link(repository, &mut |algorithm, hex| {
                    let key = key_of(algorithm, hex);
                    if let Ok(i) = doomed.binary_search_by(|d| d.key.cmp(&key))
                        && !spared.contains(&key)
                    {
                        linked.push(i);
                    }
                })?;
                for i in linked {
                    let digest = doomed[i].digest();
                    let shard = self.protections.lock(&digest);
                    if !shard.protects(&digest, self.started) {
                        store.remove_layer_link(repository, &digest)?;
                    }
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    fn remove_content<S: Store>(
        &self,
        store: &S,
        blob: &Doomed,
        spared: &HashSet<Key>,
        counts: &mut SweepCounts,
    ) -> Result<(), GcError> {
        let digest = blob.digest();
        let shard = self.protections.lock(&digest);
        if spared.contains(&blob.key) || shard.protects(&digest, self.started) {
            counts.protected += 1;
            return Ok(());
        }
        // Written again since the walk (an upload of the same bytes): young, so it stays.
        let keep_since = self
            .started_at
            .checked_sub(self.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let existed = self.dry_run || store.remove_blob(&digest, keep_since)?;
        drop(shard);
        if existed {
            counts.deleted += 1;
            counts.freed += blob.size;
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
