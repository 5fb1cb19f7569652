//! What a collection and the pushes of other replicas tell each other through storage, so that
//! a collection on one replica never removes what a push through another one references. The
//! in-process announcements (`protect.rs`) only see this process; these documents are seen by
//! every process sharing the storage:
//!
//! ```text
//! gc/run                           the collection in progress: id, round, heartbeat
//! gc/doomed/<run>-<round>/<shard>  what this round is about to remove, by digest shard
//! gc/pushes/<id>                   a manifest push: the digests it references, when
//! ```
//!
//! The guarantee is a store-level handshake, each side writing before it reads:
//! - a push writes its marker, then reads `gc/run` and the doomed shards of its digests;
//! - a round writes its doomed shards (and says so in `gc/run`), then reads every marker.
//!
//! With read-after-write consistency (S3, a POSIX filesystem), either the round sees the marker
//! and spares those digests, or the push sees them doomed and waits for the round to end before
//! it checks that its references exist (they are then gone, and the push fails cleanly with
//! MANIFEST_BLOB_UNKNOWN, or they were spared). A manifest written after the collection read
//! its repository is covered the same way: its push wrote the marker before, and keeps it while
//! any collection runs. Markers are removed by their push when no collection runs, else by a
//! later collection once older than `MARKER_TTL`.

use crate::registry::digest::Digest;
use crate::registry::storage::{Documents, StorageError, StorageResult};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RUN: &str = "gc/run";
const PUSHES: &str = "gc/pushes";
/// A collection rewrites its `gc/run` this often...
const HEARTBEAT: Duration = Duration::from_secs(10);
/// ...and one whose heartbeat is older than this has died: pushes stop waiting for it and the
/// next collection replaces it. A live collection that cannot write its heartbeat for half of
/// this stops before removing anything more.
const RUN_STALE: Duration = Duration::from_secs(120);
/// Markers older than this belong to pushes that ended (a manifest push takes seconds).
const MARKER_TTL: Duration = Duration::from_secs(3600);
/// How long a push waits for a round that dooms one of its references.
const PUSH_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunDoc {
    run: String,
    round: u32,
    /// Whether this round's doomed shards are written.
    doomed: bool,
    /// Unix seconds of the last heartbeat.
    heartbeat: u64,
}

impl RunDoc {
    fn is_stale(&self) -> bool {
        unix_now().saturating_sub(self.heartbeat) > RUN_STALE.as_secs()
    }

    fn round_prefix(&self) -> String {
        format!("gc/doomed/{}-{}", self.run, self.round)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    at: u64,
    digests: Vec<String>,
}

/// The shard document name of a digest: its algorithm and first two hex digits.
fn shard_of(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().name(), &digest.hex()[..2])
}

async fn read_run(docs: &dyn Documents) -> StorageResult<Option<RunDoc>> {
    Ok(docs
        .get_document(RUN)
        .await?
        .and_then(|raw| serde_json::from_slice(&raw).ok()))
}

/// A manifest push's marker, from before it checks its references until it is stored.
pub struct SharedPush {
    key: String,
}

/// Announces a manifest push referencing `digests`, and returns once none of them is doomed by
/// a collection round in progress (waiting for such a round to end, up to `PUSH_WAIT`).
pub async fn announce(docs: &dyn Documents, digests: &[Digest]) -> StorageResult<SharedPush> {
    let key = format!("{PUSHES}/{}", uuid::Uuid::new_v4().simple());
    let marker = Marker {
        at: unix_now(),
        digests: digests.iter().map(|d| d.to_string()).collect(),
    };
    docs.put_document(
        &key,
        serde_json::to_vec(&marker).expect("marker serializes"),
    )
    .await?;
    let push = SharedPush { key };
    let deadline = Instant::now() + PUSH_WAIT;
    loop {
        let Some(run) = read_run(docs).await? else {
            return Ok(push);
        };
        if run.is_stale() || !run.doomed || !any_doomed(docs, &run, digests).await? {
            return Ok(push);
        }
        tracing::info!(run = %run.run, round = run.round, "push waits for a garbage collection round that removes one of its references");
        // Wait for this round to end; then check again (the next round may doom them too).
        loop {
            if Instant::now() >= deadline {
                return Err(StorageError::Unavailable(
                    "a garbage collection is removing blobs this manifest references".into(),
                ));
            }
            tokio::time::sleep(POLL).await;
            match read_run(docs).await? {
                Some(now) if now.run == run.run && now.round == run.round && !now.is_stale() => {}
                _ => break,
            }
        }
    }
}

async fn any_doomed(docs: &dyn Documents, run: &RunDoc, digests: &[Digest]) -> StorageResult<bool> {
    let mut by_shard: BTreeMap<String, Vec<&Digest>> = BTreeMap::new();
    for d in digests {
        by_shard.entry(shard_of(d)).or_default().push(d);
    }
    for (shard, wanted) in by_shard {
        let key = format!("{}/{shard}", run.round_prefix());
        if let Some(raw) = docs.get_document(&key).await? {
            let text = String::from_utf8_lossy(&raw);
            let doomed: HashSet<&str> = text.lines().collect();
            if wanted.iter().any(|d| doomed.contains(d.hex())) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

impl SharedPush {
    /// The push is stored: its marker goes unless a collection runs (which must still see it).
    pub async fn finish(self, docs: &dyn Documents) {
        match read_run(docs).await {
            Ok(None) => {
                let _ = docs.delete_document(&self.key).await;
            }
            Ok(Some(run)) if run.is_stale() => {
                let _ = docs.delete_document(&self.key).await;
            }
            _ => {}
        }
    }
}

/// A collection's side: the run document (one collection at a time across replicas), the
/// rounds it publishes, and the markers it reads.
pub struct SharedRun {
    docs: Arc<dyn Documents>,
    state: Arc<Mutex<RunDoc>>,
    /// When the heartbeat was last written: a run that cannot write it stops removing.
    last_beat: Arc<Mutex<Instant>>,
    heartbeat: tokio::task::JoinHandle<()>,
    published: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SharedRunError {
    #[error("a garbage collection is already running (run {0})")]
    AlreadyRunning(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl SharedRun {
    pub async fn begin(docs: Arc<dyn Documents>) -> Result<SharedRun, SharedRunError> {
        let doc = RunDoc {
            run: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            round: 0,
            doomed: false,
            heartbeat: unix_now(),
        };
        let raw = serde_json::to_vec(&doc).expect("run document serializes");
        if !docs.create_document(RUN, raw.clone()).await? {
            match read_run(docs.as_ref()).await? {
                Some(other) if !other.is_stale() => {
                    return Err(SharedRunError::AlreadyRunning(other.run));
                }
                stale => {
                    if let Some(stale) = &stale {
                        tracing::warn!(run = %stale.run, "replacing a garbage collection that stopped without finishing");
                        remove_prefix(docs.as_ref(), &stale.round_prefix()).await;
                    }
                    docs.put_document(RUN, raw).await?;
                }
            }
        }
        let state = Arc::new(Mutex::new(doc));
        let last_beat = Arc::new(Mutex::new(Instant::now()));
        let heartbeat = tokio::spawn(beat(docs.clone(), state.clone(), last_beat.clone()));
        Ok(SharedRun {
            docs,
            state,
            last_beat,
            heartbeat,
            published: Vec::new(),
        })
    }

    /// Whether removals may go on: the run's document is fresh for every other replica.
    pub fn is_alive(&self) -> bool {
        self.last_beat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            < RUN_STALE / 2
    }

    /// Starts a round that removes `doomed`: publishes them, then reads every push marker and
    /// returns the digests those reference, which the round must spare. Markers already there
    /// are read first and their digests left out of what is published, so that a push waiting
    /// for an earlier round is not held again by this one.
    pub async fn round(&mut self, doomed: &[Digest]) -> StorageResult<HashSet<Digest>> {
        let mut spared = self.announced().await?;
        let doomed: Vec<&Digest> = doomed.iter().filter(|d| !spared.contains(*d)).collect();
        let doc = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.round += 1;
            state.doomed = false;
            state.heartbeat = unix_now();
            state.clone()
        };
        let prefix = doc.round_prefix();
        let mut shards: BTreeMap<String, String> = BTreeMap::new();
        for d in doomed {
            let text = shards.entry(shard_of(d)).or_default();
            text.push_str(d.hex());
            text.push('\n');
        }
        for (shard, text) in shards {
            self.docs
                .put_document(&format!("{prefix}/{shard}"), text.into_bytes())
                .await?;
        }
        self.published.push(prefix);
        let doc = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.doomed = true;
            state.heartbeat = unix_now();
            state.clone()
        };
        self.docs
            .put_document(
                RUN,
                serde_json::to_vec(&doc).expect("run document serializes"),
            )
            .await?;
        spared.extend(self.announced().await?);
        Ok(spared)
    }

    /// Every digest a live push marker references; removes markers past their TTL.
    async fn announced(&self) -> StorageResult<HashSet<Digest>> {
        let mut spared = HashSet::new();
        let now = unix_now();
        for key in self.docs.list_documents(PUSHES).await? {
            let Some(raw) = self.docs.get_document(&key).await? else {
                continue;
            };
            let Ok(marker) = serde_json::from_slice::<Marker>(&raw) else {
                continue;
            };
            if now.saturating_sub(marker.at) > MARKER_TTL.as_secs() {
                let _ = self.docs.delete_document(&key).await;
                continue;
            }
            spared.extend(marker.digests.iter().filter_map(|d| d.parse().ok()));
        }
        Ok(spared)
    }

    /// The run is over: its documents go, the run document last.
    pub async fn end(self) {
        self.heartbeat.abort();
        for prefix in &self.published {
            remove_prefix(self.docs.as_ref(), prefix).await;
        }
        let _ = self.docs.delete_document(RUN).await;
    }
}

async fn remove_prefix(docs: &dyn Documents, prefix: &str) {
    if let Ok(keys) = docs.list_documents(prefix).await {
        for key in keys {
            let _ = docs.delete_document(&key).await;
        }
    }
}

async fn beat(docs: Arc<dyn Documents>, state: Arc<Mutex<RunDoc>>, last_beat: Arc<Mutex<Instant>>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tick.tick().await;
        let doc = {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.heartbeat = unix_now();
            state.clone()
        };
        let raw = serde_json::to_vec(&doc).expect("run document serializes");
        match docs.put_document(RUN, raw).await {
            Ok(()) => *last_beat.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now(),
            Err(e) => tracing::warn!(error = %e, "garbage collection heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;
    use crate::registry::storage::fs::FsStore;

    fn digest(n: u32) -> Digest {
        Digest::of(Algorithm::Sha256, &n.to_le_bytes())
    }

    #[tokio::test]
    async fn a_round_spares_what_a_push_announced_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Documents> = FsStore::new(dir.path(), false).unwrap();
        let push = announce(store.as_ref(), &[digest(1), digest(2)])
            .await
            .unwrap();
        let mut run = SharedRun::begin(store.clone()).await.unwrap();
        assert!(matches!(
            SharedRun::begin(store.clone()).await,
            Err(SharedRunError::AlreadyRunning(_))
        ));
        let spared = run.round(&[digest(2), digest(3)]).await.unwrap();
        // Spared, and not even published: nobody waits for them.
        let doc = run.state.lock().unwrap().clone();
        assert!(
            !any_doomed(store.as_ref(), &doc, &[digest(2)])
                .await
                .unwrap()
        );
        assert!(
            any_doomed(store.as_ref(), &doc, &[digest(3)])
                .await
                .unwrap()
        );
        assert!(spared.contains(&digest(2)) && spared.contains(&digest(1)));
        assert!(!spared.contains(&digest(3)));
        // A collection runs: the marker must stay for it.
        push.finish(store.as_ref()).await;
        assert_eq!(store.list_documents(PUSHES).await.unwrap().len(), 1);
        let round = run.state.lock().unwrap().round_prefix();
        assert!(!store.list_documents(&round).await.unwrap().is_empty());
        run.end().await;
        assert_eq!(store.get_document(RUN).await.unwrap(), None);
        assert!(store.list_documents(&round).await.unwrap().is_empty());
        // No collection: a finished push removes its marker.
        let push = announce(store.as_ref(), &[digest(4)]).await.unwrap();
        push.finish(store.as_ref()).await;
        assert_eq!(store.list_documents(PUSHES).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_push_that_comes_after_a_round_waits_for_it_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Documents> = FsStore::new(dir.path(), false).unwrap();
        let mut run = SharedRun::begin(store.clone()).await.unwrap();
        run.round(&[digest(7)]).await.unwrap();
        // Not doomed: goes straight on.
        let started = Instant::now();
        announce(store.as_ref(), &[digest(8)]).await.unwrap();
        assert!(started.elapsed() < POLL);
        let waiting = tokio::spawn({
            let store = store.clone();
            async move {
                let started = Instant::now();
                announce(store.as_ref(), &[digest(8), digest(7)])
                    .await
                    .unwrap();
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            !waiting.is_finished(),
            "a doomed reference must hold the push"
        );
        run.end().await;
        let waited = waiting.await.unwrap();
        assert!(waited >= Duration::from_millis(600), "{waited:?}");
    }

    #[tokio::test]
    async fn a_dead_collection_is_replaced_and_does_not_hold_pushes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Documents> = FsStore::new(dir.path(), false).unwrap();
        let dead = RunDoc {
            run: "dead".into(),
            round: 1,
            doomed: true,
            heartbeat: unix_now() - RUN_STALE.as_secs() - 1,
        };
        store
            .put_document(RUN, serde_json::to_vec(&dead).unwrap())
            .await
            .unwrap();
        store
            .put_document(
                &format!("{}/{}", dead.round_prefix(), shard_of(&digest(9))),
                format!("{}\n", digest(9).hex()).into_bytes(),
            )
            .await
            .unwrap();
        let started = Instant::now();
        announce(store.as_ref(), &[digest(9)]).await.unwrap();
        assert!(started.elapsed() < POLL);
        let run = SharedRun::begin(store.clone()).await.unwrap();
        assert!(run.is_alive());
        assert!(
            store
                .list_documents(&dead.round_prefix())
                .await
                .unwrap()
                .is_empty()
        );
        run.end().await;
    }
}
