//! What garbage collection needs from the filesystem backend, one unit of work at a time so
//! that the collector can spread the units over its threads: one repository's inventory
//! (revisions, optionally with ages, media types and tags) or blob links, one group of blobs
//! (those nothing references: size and age; the others are only counted, never stat'ed), and
//! removal of one link or one blob. Blocking; the collector runs it off the runtime.

use super::fs::FsStore;
use super::{StorageError, StorageResult};
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::names::RepoName;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One repository as it is on disk.
#[derive(Debug, Default)]
pub struct RepoInventory {
    /// Manifests linked into the repository: when they were linked (pushed; the epoch unless
    /// asked for), and the media type they were pushed with (empty unless asked for: it costs
    /// a read per manifest).
    pub revisions: Vec<(Digest, SystemTime, String)>,
    /// Digests the tags point to (empty unless asked for).
    pub tagged: Vec<Digest>,
}

/// A blob nothing references.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

/// A part of the blob store that can be walked on its own: one `<alg>/<prefix>` directory.
#[derive(Debug, Clone)]
pub struct BlobGroup {
    algorithm: Algorithm,
    dir: PathBuf,
}

/// How much of a repository an inventory reads: every extra costs a system call per manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detail {
    /// The revisions (what garbage collection of blobs needs).
    Revisions,
    /// Also when each revision was pushed, and the tags (untagged manifests).
    Ages,
    /// Also each revision's media type (the admin listing).
    Full,
}

fn io_error(path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn algorithm_named(name: &str) -> Option<Algorithm> {
    match name {
        "sha256" => Some(Algorithm::Sha256),
        "sha512" => Some(Algorithm::Sha512),
        _ => None,
    }
}

/// Whether a file name is an encoded digest of `algorithm`: temporaries and strays are not.
fn is_encoded(algorithm: Algorithm, hex: &str) -> bool {
    hex.len() == algorithm.hex_len()
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Calls `visit` for every `<alg>/<hex>` file under `dir` (a missing `dir` has none).
fn each_digest_file(
    dir: &Path,
    visit: &mut dyn FnMut(Algorithm, &str, &std::fs::DirEntry),
) -> StorageResult<()> {
    let algorithms = match std::fs::read_dir(dir) {
        Ok(a) => a,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(dir, e)),
    };
    for alg in algorithms {
        let alg = alg.map_err(|e| io_error(dir, e))?;
        let Some(algorithm) = algorithm_named(&alg.file_name().to_string_lossy()) else {
            continue;
        };
        let alg_dir = alg.path();
        let files = match std::fs::read_dir(&alg_dir) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&alg_dir, e)),
        };
        for file in files {
            let file = file.map_err(|e| io_error(&alg_dir, e))?;
            let name = file.file_name();
            let hex = name.to_string_lossy();
            if is_encoded(algorithm, &hex) {
                visit(algorithm, &hex, &file);
            }
        }
    }
    Ok(())
}

fn digest_from(algorithm: Algorithm, hex: &str) -> Option<Digest> {
    format!("{}:{hex}", algorithm.name()).parse().ok()
}

fn remove_if_present(path: &Path) -> StorageResult<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, e)),
    }
}

impl FsStore {
    fn repository_dir(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }

    pub fn inventory_repository(&self, name: &str, detail: Detail) -> StorageResult<RepoInventory> {
        let dir = self.repository_dir(name);
        let mut revisions = Vec::new();
        let mut failed = None;
        each_digest_file(
            &dir.join("_manifests/revisions"),
            &mut |algorithm, hex, file| {
                let Some(digest) = digest_from(algorithm, hex) else {
                    return;
                };
                let pushed = match detail {
                    Detail::Revisions => SystemTime::UNIX_EPOCH,
                    _ => match file.metadata().and_then(|m| m.modified()) {
                        Ok(t) => t,
                        // Removed while listed: not a revision any more.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                        Err(e) => {
                            failed.get_or_insert_with(|| io_error(&file.path(), e));
                            return;
                        }
                    },
                };
                let media_type = match detail {
                    Detail::Full => self.revision_media_type(name, &digest).unwrap_or_default(),
                    _ => String::new(),
                };
                revisions.push((digest, pushed, media_type));
            },
        )?;
        if let Some(e) = failed {
            return Err(e);
        }
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
        Ok(RepoInventory { revisions, tagged })
    }

    /// The media type a manifest was pushed with (its revision link's content).
    pub fn revision_media_type(&self, repository: &str, digest: &Digest) -> Option<String> {
        let link = self
            .repository_dir(repository)
            .join("_manifests/revisions")
            .join(digest.algorithm().name())
            .join(digest.hex());
        std::fs::read_to_string(link).ok()
    }

    /// Calls `visit` with every blob linked into `repository`.
    pub fn each_layer_link(
        &self,
        repository: &str,
        visit: &mut dyn FnMut(Algorithm, &str),
    ) -> StorageResult<()> {
        each_digest_file(
            &self.repository_dir(repository).join("_layers"),
            &mut |algorithm, hex, _| visit(algorithm, hex),
        )
    }

    pub fn remove_layer_link(&self, repository: &str, digest: &Digest) -> StorageResult<()> {
        let name = RepoName::parse(repository)
            .map_err(|e| StorageError::Corrupt(format!("repository {repository:?}: {e}")))?;
        remove_if_present(&self.layer_link_file(&name, digest)).map(drop)
    }

    /// The blob store's prefix directories.
    pub fn blob_groups(&self) -> StorageResult<Vec<BlobGroup>> {
        let root = self.root.join("blobs");
        let mut groups = Vec::new();
        for alg in std::fs::read_dir(&root).map_err(|e| io_error(&root, e))? {
            let alg = alg.map_err(|e| io_error(&root, e))?;
            let Some(algorithm) = algorithm_named(&alg.file_name().to_string_lossy()) else {
                continue;
            };
            let alg_dir = alg.path();
            for prefix in std::fs::read_dir(&alg_dir).map_err(|e| io_error(&alg_dir, e))? {
                let prefix = prefix.map_err(|e| io_error(&alg_dir, e))?;
                groups.push(BlobGroup {
                    algorithm,
                    dir: prefix.path(),
                });
            }
        }
        Ok(groups)
    }

    /// Counts the blobs of `group`, and returns size and age of those `unreferenced` picks.
    pub fn walk_blob_group(
        &self,
        group: &BlobGroup,
        unreferenced: &mut dyn FnMut(Algorithm, &str) -> bool,
    ) -> StorageResult<(u64, Vec<BlobEntry>)> {
        let files = match std::fs::read_dir(&group.dir) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, Vec::new())),
            Err(e) => return Err(io_error(&group.dir, e)),
        };
        let mut total = 0;
        let mut found = Vec::new();
        for file in files {
            let file = file.map_err(|e| io_error(&group.dir, e))?;
            let name = file.file_name();
            let hex = name.to_string_lossy();
            if !is_encoded(group.algorithm, &hex) {
                continue;
            }
            total += 1;
            if !unreferenced(group.algorithm, &hex) {
                continue;
            }
            let meta = match file.metadata() {
                Ok(m) => m,
                // Deleted since the listing (another replica's collection): nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&file.path(), e)),
            };
            if let Some(digest) = digest_from(group.algorithm, &hex) {
                found.push(BlobEntry {
                    digest,
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::now()),
                });
            }
        }
        Ok((total, found))
    }

    /// The stored bytes of a manifest (manifests are blobs too).
    pub fn read_manifest_blob(&self, digest: &Digest) -> Option<Vec<u8>> {
        std::fs::read(self.blob_file(digest)).ok()
    }

    /// Removes a blob's content; returns whether it existed.
    pub fn remove_blob_content(&self, digest: &Digest) -> StorageResult<bool> {
        remove_if_present(&self.blob_file(digest))
    }
}
