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
//! Replicas sharing one storage see each other's pushes through it (`shared.rs`): each round of
//! removals first publishes what it will remove, then reads the markers pushes write before
//! they check their references, and spares what they name; a push that finds one of its
//! references published waits for the round to end. Only one collection runs at a time across
//! replicas, and every removal re-checks the object's time, so a blob uploaded again since the
//! walk stays.
//!
//! Untagged manifests (not reachable from a tag through index children or as a referrer of a
//! reachable manifest) can be deleted too, after their own grace period.

mod graph;
mod parallel;
mod protect;
pub mod shared;
mod sweep;

use super::digest::Digest;
use super::names::RepoName;
use super::storage::Store;
use super::storage::inventory::Detail;
use graph::{Graph, untagged};
use protect::Protections;
pub use protect::PushGuard;
use serde::Serialize;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    #[error(
        "the collection lost its run document (storage unreachable?); it stopped before removing more"
    )]
    LostRun,
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
    protected: Arc<Protections>,
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
        self.protected.begin_push(digests)
    }

    /// A client just used these digests (mounted, uploaded, checked with HEAD).
    pub fn touch<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        self.protected.touch(digests)
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
        let mut run = shared::SharedRun::begin(store.clone())
            .await
            .map_err(|e| match e {
                shared::SharedRunError::AlreadyRunning(_) => GcError::AlreadyRunning,
                shared::SharedRunError::Storage(e) => GcError::Storage(e),
            })?;
        let result = self.collect(store, options, &mut run).await;
        run.end().await;
        result
    }

    async fn collect<S: Store>(
        &self,
        store: Arc<S>,
        options: GcOptions,
        run: &mut shared::SharedRun,
    ) -> Result<GcReport, GcError> {
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

        let names = Arc::new(store.list_repositories().await?);
        // Ages and tags only matter when untagged manifests may go.
        let detail = match options.untagged_after {
            Some(_) => Detail::Ages,
            None => Detail::Revisions,
        };
        let (load_store, load_names) = (store.clone(), names.clone());
        let mut graph = tokio::task::spawn_blocking(move || {
            Graph::load(load_store.as_ref(), &load_names, parallel::THREADS, detail)
        })
        .await
        .map_err(|e| GcError::Task(e.to_string()))??;
        report.repositories = names.len() as u64;
        report.manifests = graph.manifests as u64;
        self.progress_manifests
            .store(report.manifests, Ordering::Relaxed);

        if let Some(after) = options.untagged_after {
            let doomed: Vec<Digest> = graph
                .repositories
                .iter()
                .flat_map(|repo| untagged(repo, after, started_at))
                .collect();
            let doomed = self.unprotected(doomed, started);
            let spared = match options.dry_run || doomed.is_empty() {
                true => HashSet::new(),
                false => run.round(&doomed).await?,
            };
            if !run.is_alive() {
                return Err(GcError::LostRun);
            }
            let (rest, deleted) = self
                .delete_untagged(
                    store.clone(),
                    graph,
                    after,
                    spared,
                    (started, started_at),
                    options.dry_run,
                )
                .await?;
            graph = rest;
            report.manifests_deleted = deleted;
        }

        let dry_run = options.dry_run;
        let sweep = sweep::Sweep {
            threads: parallel::THREADS,
            protections: self.protected.clone(),
            started,
            started_at,
            grace: options.grace,
            dry_run,
            progress: self.progress_swept.clone(),
        };
        let (sweep_store, finder) = (store.clone(), sweep.clone());
        let (found, doomed) = tokio::task::spawn_blocking(move || {
            let referenced = graph.referenced();
            // From here on only the references matter: the nodes' memory goes back first.
            drop(graph);
            let mut counts = sweep::SweepCounts::default();
            let doomed = finder.find(sweep_store.as_ref(), referenced, &mut counts)?;
            Ok::<_, GcError>((counts, doomed))
        })
        .await
        .map_err(|e| GcError::Task(e.to_string()))??;
        let spared: HashSet<graph::Key> = match dry_run || doomed.is_empty() {
            true => HashSet::new(),
            false => {
                let digests =
                    self.unprotected(doomed.iter().map(|d| d.digest()).collect(), started);
                run.round(&digests).await?.iter().map(graph::key).collect()
            }
        };
        if !run.is_alive() {
            return Err(GcError::LostRun);
        }
        let sweep_store = store.clone();
        let swept = tokio::task::spawn_blocking(move || {
            sweep.remove(sweep_store.as_ref(), &names, &doomed, &spared, found)
        })
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

    /// `doomed` without what pushes in this process protect: those stay whatever happens (a
    /// protection lasts the run), so they are neither published to other replicas nor removed.
    fn unprotected(&self, doomed: Vec<Digest>, started: Instant) -> Vec<Digest> {
        doomed
            .into_iter()
            .filter(|d| !self.protected.lock(d).protects(d, started))
            .collect()
    }

    /// Deletes the untagged manifests older than `after`; returns the graph without them.
    async fn delete_untagged<S: Store>(
        &self,
        store: Arc<S>,
        mut graph: Graph,
        after: Duration,
        spared: HashSet<Digest>,
        (started, started_at): (Instant, SystemTime),
        dry_run: bool,
    ) -> Result<(Graph, u64), GcError> {
        let protections = self.protected.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut deleted = 0;
            for repo in &mut graph.repositories {
                let doomed = untagged(repo, after, started_at);
                let Ok(name) = RepoName::parse(&repo.name) else {
                    continue;
                };
                for digest in doomed {
                    // Checked and deleted under the lock a push of this manifest announces
                    // itself with: a push that tags it again either protects it or comes
                    // after the delete and stores it anew, never leaving a tag to nothing.
                    let shard = protections.lock(&digest);
                    if spared.contains(&digest) || shard.protects(&digest, started) {
                        continue;
                    }
                    if !dry_run {
                        runtime.block_on(store.delete_manifest(&name, &digest))?;
                        if let Some(subject) =
                            repo.manifests.get(&digest).and_then(|m| m.subject.as_ref())
                        {
                            runtime.block_on(store.remove_referrer(&name, subject, &digest))?;
                        }
                    }
                    drop(shard);
                    repo.manifests.remove(&digest);
                    deleted += 1;
                }
            }
            Ok((graph, deleted))
        })
        .await
        .map_err(|e| GcError::Task(e.to_string()))?
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

#[cfg(test)]
mod tests;
