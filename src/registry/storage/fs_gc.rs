//! What garbage collection needs from the filesystem backend: an inventory of every repository
//! (revisions with their age, tags, layer links), the blobs nothing references (size, age; the
//! others are only counted, never stat'ed), and removal of a blob together with the links that
//! name it. Blocking; the collector runs it off the runtime, on several threads.

use super::fs::FsStore;
use super::{StorageError, StorageResult};
use crate::registry::digest::Digest;
use crate::registry::names::RepoName;
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// One repository as it is on disk.
#[derive(Debug, Default)]
pub struct RepoInventory {
    pub name: String,
    /// Manifests linked into the repository: when they were linked (pushed), and the media
    /// type they were pushed with (empty unless asked for: it costs a read per manifest).
    pub revisions: Vec<(Digest, SystemTime, String)>,
    /// Digests the tags point to.
    pub tagged: Vec<Digest>,
    /// Blobs linked into the repository.
    pub layer_links: Vec<Digest>,
}

#[derive(Debug, Clone)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

/// Threads garbage collection reads and deletes with: storage work is mostly system calls, so
/// one per core, and a few more than that gains nothing.
pub fn gc_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

fn io_error(path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How much of a repository an inventory reads: every extra costs a system call per manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detail {
    /// Revisions and layer links (what garbage collection of blobs needs).
    Links,
    /// Also when each revision was pushed, and the tags (untagged manifests).
    Ages,
    /// Also each revision's media type (the admin listing).
    Full,
}

/// `<alg>/<hex>` files under `dir` as digests (temporaries and stray names are skipped), with
/// their modification time when `times` (otherwise the epoch: a stat per file saved).
fn digests_in(dir: &Path, times: bool) -> StorageResult<Vec<(Digest, SystemTime)>> {
    let mut out = Vec::new();
    let algorithms = match std::fs::read_dir(dir) {
        Ok(a) => a,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_error(dir, e)),
    };
    for alg in algorithms.filter_map(Result::ok) {
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(alg.path()) else {
            continue;
        };
        for file in files.filter_map(Result::ok) {
            let hex = file.file_name().to_string_lossy().into_owned();
            if let Ok(digest) = format!("{alg_name}:{hex}").parse::<Digest>() {
                let modified = match times {
                    true => file
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(SystemTime::now()),
                    false => SystemTime::UNIX_EPOCH,
                };
                out.push((digest, modified));
            }
        }
    }
    Ok(out)
}

impl FsStore {
    pub fn inventory_repositories(
        &self,
        names: &[String],
        detail: Detail,
    ) -> StorageResult<Vec<RepoInventory>> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let dir = self.root.join("repositories").join(name);
            let revisions_dir = dir.join("_manifests/revisions");
            let revisions = digests_in(&revisions_dir, detail >= Detail::Ages)?
                .into_iter()
                .map(|(d, at)| {
                    let media_type = match detail {
                        Detail::Full => self.revision_media_type(name, &d).unwrap_or_default(),
                        _ => String::new(),
                    };
                    (d, at, media_type)
                })
                .collect();
            let layer_links = digests_in(&dir.join("_layers"), false)?
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            let mut tagged = Vec::new();
            let tags_dir = dir.join("_manifests/tags");
            if detail >= Detail::Ages
                && let Ok(entries) = std::fs::read_dir(&tags_dir)
            {
                for entry in entries.filter_map(Result::ok) {
                    if entry.file_name().to_string_lossy().starts_with('.') {
                        continue;
                    }
                    if let Ok(text) = std::fs::read_to_string(entry.path())
                        && let Ok(d) = text.trim().parse()
                    {
                        tagged.push(d);
                    }
                }
            }
            out.push(RepoInventory {
                name: name.clone(),
                revisions,
                tagged,
                layer_links,
            });
        }
        Ok(out)
    }

    /// The media type a manifest was pushed with (its revision link's content).
    pub fn revision_media_type(&self, repository: &str, digest: &Digest) -> Option<String> {
        let link = self
            .root
            .join("repositories")
            .join(repository)
            .join("_manifests/revisions")
            .join(digest.algorithm().name())
            .join(digest.hex());
        std::fs::read_to_string(link).ok()
    }

    /// Walks every blob on `threads` threads; returns how many there are, and size and age of
    /// those `referenced` says no.
    pub fn unreferenced_blobs(
        &self,
        referenced: &(dyn Fn(&Digest) -> bool + Sync),
        threads: usize,
    ) -> StorageResult<(u64, Vec<BlobEntry>)> {
        let root = self.root.join("blobs");
        let mut prefixes = Vec::new();
        let algorithms = std::fs::read_dir(&root).map_err(|e| io_error(&root, e))?;
        for alg in algorithms.filter_map(Result::ok) {
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            let Ok(dirs) = std::fs::read_dir(alg.path()) else {
                continue;
            };
            prefixes.extend(
                dirs.filter_map(Result::ok)
                    .map(|d| (alg_name.clone(), d.path())),
            );
        }
        let chunk = prefixes.len().div_ceil(threads.max(1)).max(1);
        let walk = |part: &[(String, std::path::PathBuf)]| {
            let mut total = 0u64;
            let mut out = Vec::new();
            for (alg_name, dir) in part {
                let Ok(files) = std::fs::read_dir(dir) else {
                    continue;
                };
                for file in files.filter_map(Result::ok) {
                    let name = file.file_name();
                    let Ok(digest) =
                        format!("{alg_name}:{}", name.to_string_lossy()).parse::<Digest>()
                    else {
                        continue;
                    };
                    total += 1;
                    if referenced(&digest) {
                        continue;
                    }
                    let Ok(meta) = file.metadata() else {
                        continue;
                    };
                    out.push(BlobEntry {
                        digest,
                        size: meta.len(),
                        modified: meta.modified().unwrap_or(SystemTime::now()),
                    });
                }
            }
            (total, out)
        };
        let parts: Vec<(u64, Vec<BlobEntry>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = prefixes
                .chunks(chunk)
                .map(|part| scope.spawn(move || walk(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let total = parts.iter().map(|(t, _)| t).sum();
        let mut all = Vec::with_capacity(parts.iter().map(|(_, e)| e.len()).sum());
        for (_, entries) in parts {
            all.extend(entries);
        }
        Ok((total, all))
    }

    /// The stored bytes of a manifest (manifests are blobs too).
    pub fn read_manifest_blob(&self, digest: &Digest) -> Option<Vec<u8>> {
        std::fs::read(self.blob_file(digest)).ok()
    }

    /// Removes the links first, then the content: a crash in between leaves an unreferenced
    /// blob for the next run, never a link to nothing. Returns whether the content existed.
    pub fn remove_blob_and_links(
        &self,
        digest: &Digest,
        linked_in: &[&str],
    ) -> StorageResult<bool> {
        for repo in linked_in {
            if let Ok(name) = RepoName::parse(repo) {
                let link = self.layer_link_file(&name, digest);
                match std::fs::remove_file(&link) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&link, e)),
                }
            }
        }
        let path = self.blob_file(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path, e)),
        }
    }
}
