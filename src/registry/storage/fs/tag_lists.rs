//! Sorted tag lists by repository, cached for the filesystem backend.

use crate::registry::names::RepoName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Sorted tag lists by repository, each valid while its tags directory's modification time is
/// unchanged: a stat instead of a directory read, and correct when other processes write the
/// same storage. Timestamps are coarse (a clock tick), so a listing taken within
/// `RACY_WINDOW` of the directory's last change is not cached: a second change in the same
/// tick could otherwise go unseen.
#[derive(Default)]
pub(super) struct TagListCache(Mutex<HashMap<RepoName, CachedTags>>);

/// The tags directory's modification time when it was listed, and the sorted listing.
type CachedTags = (SystemTime, Arc<Vec<String>>);

pub(super) const RACY_WINDOW: Duration = Duration::from_millis(100);
const TAG_LIST_CACHE_ENTRIES: usize = 1024;

impl TagListCache {
    pub(super) fn get(
        &self,
        repo: &RepoName,
        modified: Option<SystemTime>,
    ) -> Option<Arc<Vec<String>>> {
        let modified = modified?;
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(repo) {
            Some((at, tags)) if *at == modified => Some(tags.clone()),
            _ => None,
        }
    }

    pub(super) fn put(
        &self,
        repo: &RepoName,
        modified: Option<SystemTime>,
        tags: &Arc<Vec<String>>,
    ) {
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

    pub(super) fn forget(&self, repo: &RepoName) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(repo);
    }
}
