//! The reference graph garbage collection works on: every blob some manifest revision in some
//! repository is or references, and, when untagged manifests may go, each repository's
//! manifests as nodes with their tags. Loading reads storage (in parallel); the rest is pure.
//! Blobs are known by a 32-byte key rather than a `Digest`, so the references of a hundred
//! thousand blobs take three megabytes.

use super::GcError;
use super::parallel;
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::manifest;
use crate::registry::storage::Store;
use crate::registry::storage::inventory::Detail;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A blob's identity in sets and maps: the sha256 itself, or the sha256 of any other digest's
/// text (a collision would need one of sha256's).
pub type Key = [u8; 32];

pub fn key(digest: &Digest) -> Key {
    key_of(digest.algorithm(), digest.hex())
}

/// The key of a blob known by its algorithm and encoded digest, as storage lists them.
pub fn key_of(algorithm: Algorithm, hex: &str) -> Key {
    let mut out = [0u8; 32];
    if algorithm == Algorithm::Sha256 && hex::decode_to_slice(hex, &mut out).is_ok() {
        return out;
    }
    Sha256::digest(format!("{}:{hex}", algorithm.name()).as_bytes()).into()
}

#[derive(Debug, Clone)]
pub struct ManifestNode {
    pub pushed: SystemTime,
    /// Config, layers and child manifests.
    pub references: Vec<Key>,
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
}

/// One repository's manifests as nodes: what decides which manifests are untagged.
#[derive(Debug, Default)]
pub struct RepoGraph {
    pub name: String,
    pub manifests: HashMap<Digest, ManifestNode>,
    pub tagged: Vec<Digest>,
}

#[derive(Debug, Default)]
pub struct Graph {
    /// Manifests as nodes, only when untagged manifests may be deleted, since nodes cost many
    /// times what `kept` does.
    pub repositories: Vec<RepoGraph>,
    /// Without nodes: every manifest and what it references, as keys.
    pub kept: Vec<Key>,
    /// Manifests read (nodes or not).
    pub manifests: usize,
}

/// What one loading thread gathers.
#[derive(Default)]
struct Loaded {
    repositories: Vec<RepoGraph>,
    manifests: usize,
}

impl Graph {
    /// Reads every repository, on `threads` threads; with `Detail::Ages`, as nodes. A
    /// manifest that cannot be read stops the run: without knowing what it references,
    /// nothing can be deleted safely.
    pub fn load<S: Store>(
        store: &S,
        names: &[String],
        threads: usize,
        detail: Detail,
    ) -> Result<Graph, GcError> {
        // One vector for every thread's keys: appending a repository at a time under a lock
        // is cheap, and it saves the copy (and the doubled peak) of merging per-thread ones.
        let kept = Mutex::new(Vec::new());
        let parts = parallel::for_each(names, threads, Loaded::default, |loaded, name| {
            let repo = load_repository(store, name, detail)?;
            loaded.manifests += repo.manifests.len();
            match detail {
                Detail::Revisions => {
                    let mut keys = Vec::new();
                    for (digest, node) in repo.manifests {
                        keys.push(key(&digest));
                        keys.extend(node.references);
                    }
                    kept.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&keys);
                }
                _ => loaded.repositories.push(repo),
            }
            Ok(())
        })?;
        let mut graph = Graph {
            kept: kept.into_inner().unwrap_or_else(|e| e.into_inner()),
            ..Graph::default()
        };
        for part in parts {
            graph.manifests += part.manifests;
            graph.repositories.extend(part.repositories);
        }
        Ok(graph)
    }

    /// Every blob a remaining manifest is or references, sorted, for `binary_search`: a
    /// third smaller than a hash set of the same keys.
    pub fn referenced(&mut self) -> Vec<Key> {
        let mut out = std::mem::take(&mut self.kept);
        for repo in &self.repositories {
            for (digest, node) in &repo.manifests {
                out.push(key(digest));
                out.extend(node.references.iter().copied());
            }
        }
        out.sort_unstable();
        out.dedup();
        out.shrink_to_fit();
        out
    }
}

fn load_repository<S: Store>(store: &S, name: &str, detail: Detail) -> Result<RepoGraph, GcError> {
    let inventory = store.repository_inventory(name, detail)?;
    let mut manifests = HashMap::with_capacity(inventory.revisions.len());
    for (digest, pushed, _) in inventory.revisions {
        let Some(bytes) = store.manifest_bytes(&digest) else {
            // A revision link whose content is gone references nothing that exists.
            continue;
        };
        // What a manifest references does not depend on its media type; only a manifest that
        // does not say what it is needs the type it was pushed with.
        let parsed = match manifest::parse(&bytes, None) {
            Ok(p) => p,
            Err(_) => {
                let media_type = store.manifest_media_type(name, &digest);
                manifest::parse(&bytes, media_type.as_deref()).map_err(|e| GcError::Unreadable {
                    repository: name.to_owned(),
                    digest: digest.to_string(),
                    reason: e.to_string(),
                })?
            }
        };
        let references = parsed
            .blobs
            .iter()
            .chain(parsed.layers.iter())
            .chain(parsed.children.iter())
            .map(key)
            .collect();
        manifests.insert(
            digest,
            ManifestNode {
                pushed,
                references,
                children: parsed.children,
                subject: parsed.subject,
            },
        );
    }
    Ok(RepoGraph {
        name: name.to_owned(),
        manifests,
        tagged: inventory.tagged,
    })
}

/// Manifests of `repo` that no tag reaches (directly, as an index child, or as a referrer of a
/// reached manifest) and that were pushed more than `after` before `now`.
pub fn untagged(repo: &RepoGraph, after: Duration, now: SystemTime) -> Vec<Digest> {
    let mut reached: HashSet<&Digest> = HashSet::new();
    let mut queue: Vec<&Digest> = repo.tagged.iter().collect();
    loop {
        while let Some(d) = queue.pop() {
            if !reached.insert(d) {
                continue;
            }
            if let Some(node) = repo.manifests.get(d) {
                queue.extend(node.children.iter());
            }
        }
        // Referrers (signatures, SBOMs) live as long as their subject.
        let referrers: Vec<&Digest> = repo
            .manifests
            .iter()
            .filter(|(d, node)| {
                !reached.contains(d) && node.subject.as_ref().is_some_and(|s| reached.contains(s))
            })
            .map(|(d, _)| d)
            .collect();
        if referrers.is_empty() {
            break;
        }
        queue.extend(referrers);
    }
    let mut out: Vec<Digest> = repo
        .manifests
        .iter()
        .filter(|(d, node)| {
            !reached.contains(d) && now.duration_since(node.pushed).unwrap_or_default() >= after
        })
        .map(|(d, _)| d.clone())
        .collect();
    out.sort_by_key(|d| d.to_string());
    out
}
