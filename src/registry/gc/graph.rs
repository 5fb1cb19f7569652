//! The reference graph garbage collection works on: per repository, every manifest revision with
//! what it references, the tags, and the blob links. Loading reads storage; the rest is pure.

use super::GcError;
use crate::registry::digest::Digest;
use crate::registry::manifest;
use crate::registry::storage::Store;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct ManifestNode {
    pub pushed: SystemTime,
    /// Config, layers and child manifests.
    pub references: Vec<Digest>,
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
}

#[derive(Debug, Default)]
pub struct RepoGraph {
    pub name: String,
    pub manifests: HashMap<Digest, ManifestNode>,
    pub tagged: Vec<Digest>,
    pub layer_links: Vec<Digest>,
}

#[derive(Debug, Default)]
pub struct Graph {
    pub repositories: Vec<RepoGraph>,
}

impl Graph {
    /// Reads every repository. A manifest that cannot be read stops the run: without knowing
    /// what it references, nothing can be deleted safely.
    pub fn load<S: Store>(store: &S, names: &[String]) -> Result<Graph, GcError> {
        let mut repositories = Vec::with_capacity(names.len());
        for inventory in store.gc_repositories(names)? {
            let mut manifests = HashMap::with_capacity(inventory.revisions.len());
            for (digest, pushed, media_type) in inventory.revisions {
                let unreadable = |reason: String| GcError::Unreadable {
                    repository: inventory.name.clone(),
                    digest: digest.to_string(),
                    reason,
                };
                let Some(bytes) = store.gc_read(&digest) else {
                    // A revision link whose content is gone references nothing that exists.
                    continue;
                };
                let content_type = (!media_type.is_empty()).then_some(media_type.as_str());
                let parsed =
                    manifest::parse(&bytes, content_type).map_err(|e| unreadable(e.to_string()))?;
                let mut references = parsed.blobs.clone();
                references.extend(parsed.layers.iter().cloned());
                references.extend(parsed.children.iter().cloned());
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
            repositories.push(RepoGraph {
                name: inventory.name,
                manifests,
                tagged: inventory.tagged,
                layer_links: inventory.layer_links,
            });
        }
        Ok(Graph { repositories })
    }

    pub fn manifest_count(&self) -> usize {
        self.repositories.iter().map(|r| r.manifests.len()).sum()
    }

    /// Every digest a remaining manifest is or references.
    pub fn referenced(&self) -> HashSet<&Digest> {
        let mut out = HashSet::new();
        for repo in &self.repositories {
            for (digest, node) in &repo.manifests {
                out.insert(digest);
                out.extend(node.references.iter());
            }
        }
        out
    }

    /// For each blob, the repositories that link it.
    pub fn links(&self) -> HashMap<Digest, Vec<String>> {
        let mut out: HashMap<Digest, Vec<String>> = HashMap::new();
        for repo in &self.repositories {
            for d in &repo.layer_links {
                out.entry(d.clone()).or_default().push(repo.name.clone());
            }
        }
        out
    }
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
