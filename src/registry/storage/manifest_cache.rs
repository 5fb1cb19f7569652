//! Manifest bytes by digest, kept in memory by a backend. Manifests are immutable by digest, so a
//! cached copy is always correct; whether a repository holds one is still asked of storage on
//! every request (the link is what a delete removes).

use crate::registry::digest::Digest;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

const ENTRIES: usize = 4096;

#[derive(Default)]
pub struct ManifestCache(Mutex<HashMap<Digest, Bytes>>);

impl ManifestCache {
    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    /// Simply starts over when full: a miss costs one read.
    pub fn put(&self, digest: &Digest, bytes: &Bytes) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= ENTRIES {
            cache.clear();
        }
        cache.insert(digest.clone(), bytes.clone());
    }
}
