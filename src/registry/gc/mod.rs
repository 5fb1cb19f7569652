//! Online garbage collection: runs inside the registry while pushes and pulls continue. No
//! read-only window and no global lock; safety comes from three rules:
//!
//! 1. Everything any manifest revision in any repository references is kept (config, layers,
//!    child manifests; referrers are revisions themselves), and so is every blob younger than
//!    the grace period, which covers uploads committed during the run.
//! 2. A manifest push announces what it references (`begin_push`) before it checks that it
//!    exists, and again when it is done. A run never sweeps a blob that a push in flight
//!    references, or that a push touched since the run started (its manifest may have been
//!    written after the run read that repository). The check-and-delete of each blob happens
//!    under the same short lock the announcement takes, so a push either sees the blob gone
//!    (and fails cleanly with MANIFEST_BLOB_UNKNOWN) or the blob survives. Mounts, committed
//!    uploads and HEAD checks `touch` their blob the same way.
//! 3. Links go before content: a crash leaves an unreferenced blob for the next run.
//!
//! Untagged manifests (not reachable from a tag through index children or as a referrer of a
//! reachable manifest) can be deleted too, after their own grace period.

mod graph;

use super::digest::Digest;
use super::names::RepoName;
use super::storage::Store;
use super::storage::fs_gc::BlobEntry;
use graph::{Graph, untagged};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Finished announcements older than this are forgotten at the start of a run.
const PROTECTION_TTL: Duration = Duration::from_secs(3600);

/// What pushes said about one digest.
#[derive(Debug, Clone, Copy)]
struct Protection {
    /// Last announcement or end of a push.
    last: Instant,
    /// Manifest pushes referencing it right now.
    in_flight: u32,
}

/// Announcements, sharded by digest so that deletions on several threads and pushes rarely
/// wait for each other: the guarantee is per digest, so one shard's lock is all a check needs.
#[derive(Default)]
struct Shards {
    shards: [Mutex<HashMap<Digest, Protection>>; SHARDS],
}

const SHARDS: usize = 16;

impl Shards {
    fn of(&self, digest: &Digest) -> std::sync::MutexGuard<'_, HashMap<Digest, Protection>> {
        let first = digest.hex().as_bytes().first().copied().unwrap_or(0);
        self.shards[first as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a push in flight references `digest`, or one touched it since `since`.
    fn protects(&self, digest: &Digest, since: Instant) -> bool {
        Self::protects_in(&self.of(digest), digest, since)
    }

    fn protects_in(map: &HashMap<Digest, Protection>, digest: &Digest, since: Instant) -> bool {
        map.get(digest)
            .is_some_and(|p| p.in_flight > 0 || p.last >= since)
    }

    fn forget_stale(&self) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, p| p.in_flight > 0 || p.last.elapsed() < PROTECTION_TTL);
        }
    }
}

type Protections = Arc<Shards>;

/// Held by a manifest push from before it checks its references until it is stored.
pub struct PushGuard {
    protections: Protections,
    digests: Vec<Digest>,
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        for d in &self.digests {
            if let Some(p) = self.protections.of(d).get_mut(d) {
                p.in_flight = p.in_flight.saturating_sub(1);
                p.last = now;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("a garbage collection is already running")]
    AlreadyRunning,
    #[error("storage failure: {0}")]
    Storage(#[from] super::storage::StorageError),
    #[error("manifest {digest} in {repository} cannot be read ({reason}); nothing was deleted")]
    Unreadable {
        repository: String,
        digest: String,
        reason: String,
    },
    #[error("the collection task failed: {0}")]
    Task(String),
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Unreferenced blobs younger than this are kept.
    pub grace: Duration,
    /// Delete untagged manifests older than this; `None`: keep them.
    pub untagged_after: Option<Duration>,
    /// Remove uploads untouched for this long (abandoned pushes); `None`: leave them.
    pub stale_uploads_after: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    /// Unix seconds.
    pub started_at: u64,
    pub duration_ms: u64,
    pub repositories: u64,
    pub manifests: u64,
    pub manifests_deleted: u64,
    pub blobs: u64,
    pub blobs_referenced: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    /// Unreferenced but younger than the grace period.
    pub blobs_too_recent: u64,
    /// Unreferenced but announced by a push in progress.
    pub blobs_protected: u64,
    /// Abandoned uploads removed.
    pub uploads_purged: u64,
}

#[derive(Default)]
pub struct Collector {
    protected: Protections,
    running: AtomicBool,
    last: Mutex<Option<GcReport>>,
    runs: AtomicU64,
    blobs_deleted: AtomicU64,
    bytes_freed: AtomicU64,
    manifests_deleted: AtomicU64,
    progress_manifests: AtomicU64,
    progress_swept: Arc<AtomicU64>,
}

/// Clears the running flag however a run ends.
struct RunningGuard<'a>(&'a AtomicBool);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Collector {
    /// A manifest push is about to check and then reference these digests.
    pub fn begin_push<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) -> PushGuard {
        let now = Instant::now();
        let digests: Vec<Digest> = digests.into_iter().cloned().collect();
        for d in &digests {
            let mut shard = self.protected.of(d);
            let p = shard.entry(d.clone()).or_insert(Protection {
                last: now,
                in_flight: 0,
            });
            p.in_flight += 1;
            p.last = now;
        }
        PushGuard {
            protections: self.protected.clone(),
            digests,
        }
    }

    /// A client just used these digests (mounted, uploaded, checked with HEAD).
    pub fn touch<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        let now = Instant::now();
        for d in digests {
            self.protected
                .of(d)
                .entry(d.clone())
                .and_modify(|p| p.last = now)
                .or_insert(Protection {
                    last: now,
                    in_flight: 0,
                });
        }
    }

    pub fn last_report(&self) -> Option<GcReport> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub async fn run<S: Store>(
        &self,
        store: Arc<S>,
        options: GcOptions,
    ) -> Result<GcReport, GcError> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(GcError::AlreadyRunning);
        }
        let _running = RunningGuard(&self.running);
        self.progress_manifests.store(0, Ordering::Relaxed);
        self.progress_swept.store(0, Ordering::Relaxed);
        self.protected.forget_stale();
        let started = Instant::now();
        let started_at = SystemTime::now();
        let mut report = GcReport {
            dry_run: options.dry_run,
            started_at: unix(started_at),
            ..GcReport::default()
        };

        let names = store.list_repositories().await?;
        let inventory_store = store.clone();
        let threads = super::storage::fs_gc::gc_threads();
        // Ages and tags only matter when untagged manifests may go.
        let detail = match options.untagged_after {
            Some(_) => super::storage::fs_gc::Detail::Ages,
            None => super::storage::fs_gc::Detail::Links,
        };
        let mut graph = tokio::task::spawn_blocking(move || {
            Graph::load(inventory_store.as_ref(), &names, threads, detail)
        })
        .await
        .map_err(|e| GcError::Task(e.to_string()))??;
        report.repositories = graph.repositories.len() as u64;
        report.manifests = graph.manifest_count() as u64;
        self.progress_manifests
            .store(report.manifests, Ordering::Relaxed);

        if let Some(after) = options.untagged_after {
            let deleted = self
                .delete_untagged(
                    store.as_ref(),
                    &mut graph,
                    after,
                    (started, started_at),
                    options.dry_run,
                )
                .await?;
            report.manifests_deleted = deleted;
        }

        let sweeper = Sweeper {
            threads,
            protected: self.protected.clone(),
            started,
            progress: self.progress_swept.clone(),
            grace: options.grace,
            started_at,
            dry_run: options.dry_run,
        };
        let sweep_store = store.clone();
        let swept = tokio::task::spawn_blocking(move || sweeper.sweep(sweep_store.as_ref(), graph))
            .await
            .map_err(|e| GcError::Task(e.to_string()))??;
        report.blobs = swept.blobs;
        report.blobs_referenced = swept.referenced;
        report.blobs_deleted = swept.deleted;
        report.bytes_freed = swept.freed;
        report.blobs_too_recent = swept.recent;
        report.blobs_protected = swept.protected;
        if let Some(after) = options.stale_uploads_after
            && !options.dry_run
        {
            report.uploads_purged = store.purge_uploads(after).await? as u64;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;

        if !options.dry_run {
            self.blobs_deleted
                .fetch_add(report.blobs_deleted, Ordering::Relaxed);
            self.bytes_freed
                .fetch_add(report.bytes_freed, Ordering::Relaxed);
            self.manifests_deleted
                .fetch_add(report.manifests_deleted, Ordering::Relaxed);
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        tracing::info!(
            dry_run = report.dry_run,
            blobs_deleted = report.blobs_deleted,
            bytes_freed = report.bytes_freed,
            manifests_deleted = report.manifests_deleted,
            duration_ms = report.duration_ms,
            "garbage collection finished"
        );
        Ok(report)
    }

    async fn delete_untagged<S: Store>(
        &self,
        store: &S,
        graph: &mut Graph,
        after: Duration,
        (started, started_at): (Instant, SystemTime),
        dry_run: bool,
    ) -> Result<u64, GcError> {
        let mut deleted = 0;
        for repo in &mut graph.repositories {
            let doomed = untagged(repo, after, started_at);
            let Ok(name) = RepoName::parse(&repo.name) else {
                continue;
            };
            for digest in doomed {
                if self.protected.protects(&digest, started) {
                    continue;
                }
                if !dry_run {
                    store.delete_manifest(&name, &digest).await?;
                    if let Some(subject) =
                        repo.manifests.get(&digest).and_then(|m| m.subject.clone())
                    {
                        store.remove_referrer(&name, &subject, &digest).await?;
                    }
                }
                repo.manifests.remove(&digest);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Prometheus lines for `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, u64); 7] = [
            (
                "wharf_registry_gc_runs_total",
                "counter",
                "Garbage collection runs finished.",
                self.runs.load(Ordering::Relaxed),
            ),
            (
                "wharf_registry_gc_blobs_deleted_total",
                "counter",
                "Blobs deleted by garbage collection.",
                self.blobs_deleted.load(Ordering::Relaxed),
            ),
            (
                "wharf_registry_gc_bytes_freed_total",
                "counter",
                "Bytes freed by garbage collection.",
                self.bytes_freed.load(Ordering::Relaxed),
            ),
            (
                "wharf_registry_gc_manifests_deleted_total",
                "counter",
                "Untagged manifests deleted by garbage collection.",
                self.manifests_deleted.load(Ordering::Relaxed),
            ),
            (
                "wharf_registry_gc_running",
                "gauge",
                "1 while a garbage collection runs.",
                self.is_running() as u64,
            ),
            (
                "wharf_registry_gc_progress_manifests",
                "gauge",
                "Manifests read by the current or last run.",
                self.progress_manifests.load(Ordering::Relaxed),
            ),
            (
                "wharf_registry_gc_progress_blobs_swept",
                "gauge",
                "Blobs deleted so far by the current or last run.",
                self.progress_swept.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

/// What the blocking sweep needs from the collector.
struct Sweeper {
    threads: usize,
    protected: Protections,
    started: Instant,
    progress: Arc<AtomicU64>,
    grace: Duration,
    started_at: SystemTime,
    dry_run: bool,
}

impl Sweeper {
    fn sweep<S: Store>(&self, store: &S, mut graph: Graph) -> Result<SweepCounts, GcError> {
        let referenced = graph.referenced();
        // From here on only names and links matter: the manifests' memory goes back first.
        for repo in &mut graph.repositories {
            repo.manifests = HashMap::new();
            repo.kept = Vec::new();
            repo.tagged = Vec::new();
        }
        let graph = &graph;
        let (total, unreferenced) =
            store.gc_unreferenced_blobs(&|d| referenced.binary_search(&graph::key(d)).is_ok())?;
        drop(referenced);
        let mut counts = SweepCounts {
            blobs: total,
            referenced: total - unreferenced.len() as u64,
            ..SweepCounts::default()
        };
        let (old, recent): (Vec<BlobEntry>, Vec<BlobEntry>) =
            unreferenced.into_iter().partition(|blob| {
                self.started_at
                    .duration_since(blob.modified)
                    .unwrap_or_default()
                    >= self.grace
            });
        counts.recent = recent.len() as u64;
        let doomed: HashSet<graph::Key> = old.iter().map(|b| graph::key(&b.digest)).collect();
        let links = graph.links_of(&doomed);
        let chunk = old.len().div_ceil(self.threads.max(1)).max(1);
        let parts: Vec<Result<SweepCounts, GcError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = old
                .chunks(chunk)
                .map(|part| scope.spawn(|| self.delete(store, graph, &links, part)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(GcError::Task("a sweeping thread panicked".into())))
                })
                .collect()
        });
        for part in parts {
            let part = part?;
            counts.deleted += part.deleted;
            counts.freed += part.freed;
            counts.protected += part.protected;
        }
        Ok(counts)
    }

    fn delete<S: Store>(
        &self,
        store: &S,
        graph: &Graph,
        links: &HashMap<graph::Key, Vec<usize>>,
        blobs: &[BlobEntry],
    ) -> Result<SweepCounts, GcError> {
        let mut counts = SweepCounts::default();
        for blob in blobs {
            // The check and the delete under the lock `begin_push` takes: see the module docs.
            let shard = self.protected.of(&blob.digest);
            if Shards::protects_in(&shard, &blob.digest, self.started) {
                counts.protected += 1;
                continue;
            }
            let existed = match self.dry_run {
                true => true,
                false => {
                    let linked_in: Vec<&str> = links
                        .get(&graph::key(&blob.digest))
                        .into_iter()
                        .flatten()
                        .map(|i| graph.repositories[*i].name.as_str())
                        .collect();
                    store.gc_remove_blob(&blob.digest, &linked_in)?
                }
            };
            drop(shard);
            if existed {
                counts.deleted += 1;
                counts.freed += blob.size;
                self.progress.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(counts)
    }
}

#[derive(Default)]
struct SweepCounts {
    blobs: u64,
    referenced: u64,
    deleted: u64,
    freed: u64,
    recent: u64,
    protected: u64,
}

#[cfg(test)]
mod tests;
