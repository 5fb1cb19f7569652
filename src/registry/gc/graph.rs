//! The reference graph garbage collection works on: per repository, every manifest revision with
//! what it references, the tags, and the blob links. Loading reads storage (in parallel); the
//! rest is pure. Blobs are known by a 32-byte key rather than a `Digest`, so a graph of a
//! hundred thousand blobs stays a few megabytes.

use super::GcError;
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::manifest;
use crate::registry::storage::Store;
use crate::registry::storage::fs_gc::Detail;
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

/// A blob's identity in sets and maps: the sha256 itself, or the sha256 of any other digest's
/// text (a collision would need one of sha256's).
pub type Key = [u8; 32];

pub fn key(digest: &Digest) -> Key {
    let mut out = [0u8; 32];
    if digest.algorithm() == Algorithm::Sha256
        && hex::decode_to_slice(digest.hex(), &mut out).is_ok()
    {
        return out;
    }
    Sha256::digest(digest.to_string().as_bytes()).into()
}

#[derive(Debug, Clone)]
pub struct ManifestNode {
    pub pushed: SystemTime,
    /// Config, layers and child manifests.
    pub references: Vec<Key>,
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
}

#[derive(Debug, Default)]
pub struct RepoGraph {
    pub name: String,
    /// Every manifest as a node: only when untagged manifests may be deleted (the nodes are
    /// what decides which), since they cost far more than `kept`.
    pub manifests: HashMap<Digest, ManifestNode>,
    /// Without nodes: every manifest and what it references, as keys.
    pub kept: Vec<Key>,
    pub tagged: Vec<Digest>,
    pub layer_links: Vec<Key>,
    /// Manifests read (nodes or not).
    pub revisions: usize,
}

#[derive(Debug, Default)]
pub struct Graph {
    pub repositories: Vec<RepoGraph>,
}

impl Graph {
    /// Reads every repository, on several threads. A manifest that cannot be read stops the
    /// run: without knowing what it references, nothing can be deleted safely.
    pub fn load<S: Store>(
        store: &S,
        names: &[String],
        threads: usize,
        detail: Detail,
    ) -> Result<Graph, GcError> {
        let chunk = names.len().div_ceil(threads.max(1)).max(1);
        let parts: Vec<Result<Vec<RepoGraph>, GcError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = names
                .chunks(chunk)
                .map(|part| scope.spawn(move || load_part(store, part, detail)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(GcError::Task("a loading thread panicked".into())))
                })
                .collect()
        });
        let mut repositories = Vec::with_capacity(names.len());
        for part in parts {
            repositories.extend(part?);
        }
        Ok(Graph { repositories })
    }

    pub fn manifest_count(&self) -> usize {
        self.repositories.iter().map(|r| r.revisions).sum()
    }

    /// Every blob a remaining manifest is or references, sorted, for `binary_search`: a
    /// third smaller than a hash set of the same keys.
    pub fn referenced(&self) -> Vec<Key> {
        let mut out: Vec<Key> = Vec::with_capacity(
            self.repositories
                .iter()
                .map(|r| r.kept.len() + r.manifests.len() * 6)
                .sum(),
        );
        for repo in &self.repositories {
            out.extend_from_slice(&repo.kept);
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

    /// For each of `blobs`, the repositories that link it (indexes into `repositories`).
    pub fn links_of(&self, blobs: &HashSet<Key>) -> HashMap<Key, Vec<usize>> {
        let mut out: HashMap<Key, Vec<usize>> = HashMap::new();
        for (index, repo) in self.repositories.iter().enumerate() {
            for k in repo.layer_links.iter().filter(|k| blobs.contains(*k)) {
                out.entry(*k).or_default().push(index);
            }
        }
        out
    }
}

fn load_part<S: Store>(
    store: &S,
    names: &[String],
    detail: Detail,
) -> Result<Vec<RepoGraph>, GcError> {
    let mut repositories = Vec::with_capacity(names.len());
    // One repository at a time: its links as `Digest`s live only until they become keys.
    for one in names.chunks(1) {
        let Some(inventory) = store.gc_repositories(one, detail)?.pop() else {
            continue;
        };
        let mut manifests = HashMap::new();
        let mut kept = Vec::new();
        let mut revisions = 0;
        for (digest, pushed, _) in inventory.revisions {
            let Some(bytes) = store.gc_read(&digest) else {
                // A revision link whose content is gone references nothing that exists.
                continue;
            };
            // What a manifest references does not depend on its media type; only a manifest
            // that does not say what it is needs the type it was pushed with.
            let parsed = match manifest::parse(&bytes, None) {
                Ok(p) => p,
                Err(_) => {
                    let media_type = store.gc_media_type(&inventory.name, &digest);
                    manifest::parse(&bytes, media_type.as_deref()).map_err(|e| {
                        GcError::Unreadable {
                            repository: inventory.name.clone(),
                            digest: digest.to_string(),
                            reason: e.to_string(),
                        }
                    })?
                }
            };
            revisions += 1;
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
        kept.shrink_to_fit();
        repositories.push(RepoGraph {
            name: inventory.name,
            manifests,
            kept,
            revisions,
            tagged: inventory.tagged,
            layer_links: inventory.layer_links.iter().map(key).collect(),
        });
    }
    Ok(repositories)
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
