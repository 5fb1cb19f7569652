//! When each manifest was last pulled, for retention rules like "pulled within 30d". Pulls are
//! recorded in memory (one short lock per manifest GET, no I/O) and written out in batches, one
//! document per repository (`pulls/<repository>.json`), merged with what other replicas wrote.
//! When a manifest was pushed needs no bookkeeping: its revision link's modification time says so.

use super::digest::Digest;
use super::names::RepoName;
use super::storage::Documents;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// digest → Unix seconds of the last pull.
pub type LastPulls = BTreeMap<String, u64>;

#[derive(Default)]
pub struct PullLog {
    pending: Mutex<HashMap<RepoName, HashMap<Digest, u64>>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn key(repo: &RepoName) -> String {
    format!("pulls/{}.json", repo.as_str())
}

async fn stored(docs: &dyn Documents, repo: &RepoName) -> LastPulls {
    match docs.get_document(&key(repo)).await {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        _ => LastPulls::new(),
    }
}

fn merge(into: &mut LastPulls, from: impl IntoIterator<Item = (String, u64)>) {
    for (digest, at) in from {
        let entry = into.entry(digest).or_insert(0);
        *entry = (*entry).max(at);
    }
}

impl PullLog {
    pub fn record(&self, repo: &RepoName, digest: &Digest) {
        let at = now();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(repo.clone())
            .or_default()
            .insert(digest.clone(), at);
    }

    /// Writes what was recorded since the last flush; returns how many repositories it wrote.
    pub async fn flush(&self, docs: &dyn Documents) -> usize {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut written = 0;
        for (repo, pulls) in pending {
            let mut merged = stored(docs, &repo).await;
            merge(
                &mut merged,
                pulls.into_iter().map(|(d, at)| (d.to_string(), at)),
            );
            match docs
                .put_document(&key(&repo), serde_json::to_vec(&merged).unwrap_or_default())
                .await
            {
                Ok(()) => written += 1,
                Err(e) => {
                    tracing::warn!(repository = %repo, error = %e, "cannot record pull times")
                }
            }
        }
        written
    }

    /// Last pull per manifest of `repo`: what is stored, plus what is not flushed yet.
    pub async fn last_pulls(&self, docs: &dyn Documents, repo: &RepoName) -> LastPulls {
        let mut merged = stored(docs, repo).await;
        let pending: Vec<(String, u64)> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(repo)
            .map(|m| m.iter().map(|(d, at)| (d.to_string(), *at)).collect())
            .unwrap_or_default();
        merge(&mut merged, pending);
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;
    use crate::registry::storage::fs::FsStore;

    #[tokio::test]
    async fn pulls_are_batched_and_merged_across_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path(), false).unwrap();
        let repo = RepoName::parse("team/app").unwrap();
        let d1 = Digest::of(Algorithm::Sha256, b"one");
        let d2 = Digest::of(Algorithm::Sha256, b"two");
        let a = PullLog::default();
        let b = PullLog::default();
        a.record(&repo, &d1);
        assert_eq!(
            a.last_pulls(store.as_ref(), &repo).await.len(),
            1,
            "unflushed pulls count"
        );
        assert!(
            store
                .get_document("pulls/team/app.json")
                .await
                .unwrap()
                .is_none(),
            "no write per pull"
        );
        assert_eq!(a.flush(store.as_ref()).await, 1);
        b.record(&repo, &d2);
        b.flush(store.as_ref()).await;
        let seen = PullLog::default().last_pulls(store.as_ref(), &repo).await;
        assert_eq!(
            seen.len(),
            2,
            "a second writer merges, it does not overwrite"
        );
        assert_eq!(a.flush(store.as_ref()).await, 0);
    }
}
