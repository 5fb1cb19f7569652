//! What garbage collection reads from the filesystem backend: a repository's inventory from its
//! `_manifests` directories, a blob shard from one `blobs/<alg>/<prefix>` directory (only the
//! unreferenced blobs are stat'ed), and removal of one link or one blob.

use super::FsStore;
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::names::RepoName;
use crate::registry::storage::inventory::{
    BlobEntry, BlobShard, Detail, RepoInventory, algorithm_named, digest_from, is_encoded,
};
use crate::registry::storage::{Inventory, StorageError, StorageResult};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn io_error(path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
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
}

impl Inventory for FsStore {
    fn repository_inventory(&self, name: &str, detail: Detail) -> StorageResult<RepoInventory> {
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
                    Detail::Full => self.manifest_media_type(name, &digest).unwrap_or_default(),
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

    /// The revision link's content.
    fn manifest_media_type(&self, repository: &str, digest: &Digest) -> Option<String> {
        let link = self
            .repository_dir(repository)
            .join("_manifests/revisions")
            .join(digest.algorithm().name())
            .join(digest.hex());
        std::fs::read_to_string(link).ok()
    }

    fn each_layer_link(
        &self,
        repository: &str,
        visit: &mut dyn FnMut(Algorithm, &str),
    ) -> StorageResult<()> {
        each_digest_file(
            &self.repository_dir(repository).join("_layers"),
            &mut |algorithm, hex, _| visit(algorithm, hex),
        )
    }

    fn remove_layer_link(&self, repository: &str, digest: &Digest) -> StorageResult<()> {
        let name = RepoName::parse(repository)
            .map_err(|e| StorageError::Corrupt(format!("repository {repository:?}: {e}")))?;
        remove_if_present(&self.layer_link_file(&name, digest)).map(drop)
    }

    /// The prefix directories that exist.
    fn blob_shards(&self) -> StorageResult<Vec<BlobShard>> {
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
                let prefix = prefix.file_name().to_string_lossy().into_owned();
                if prefix.len() == 2 {
                    groups.push(BlobShard { algorithm, prefix });
                }
            }
        }
        Ok(groups)
    }

    fn walk_blob_shard(
        &self,
        group: &BlobShard,
        unreferenced: &mut dyn FnMut(Algorithm, &str) -> bool,
    ) -> StorageResult<(u64, Vec<BlobEntry>)> {
        let dir = self
            .root
            .join("blobs")
            .join(group.algorithm.name())
            .join(&group.prefix);
        let files = match std::fs::read_dir(&dir) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, Vec::new())),
            Err(e) => return Err(io_error(&dir, e)),
        };
        let mut total = 0;
        let mut found = Vec::new();
        for file in files {
            let file = file.map_err(|e| io_error(&dir, e))?;
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

    /// Manifests are blobs too.
    fn manifest_bytes(&self, digest: &Digest) -> Option<Vec<u8>> {
        std::fs::read(self.blob_file(digest)).ok()
    }

    fn remove_blob(&self, digest: &Digest, keep_since: SystemTime) -> StorageResult<bool> {
        let path = self.blob_file(digest);
        // A commit of the same bytes renames a new file into place: its time says so.
        match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(modified) if modified >= keep_since => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(&path, e)),
        }
        remove_if_present(&path)
    }

    fn blob_bytes(&self) -> StorageResult<u64> {
        let mut total = 0;
        let mut stack = vec![self.root.join("blobs")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                match entry.metadata() {
                    Ok(m) if m.is_dir() => stack.push(entry.path()),
                    Ok(m) => total += m.len(),
                    Err(_) => {}
                }
            }
        }
        Ok(total)
    }
}
