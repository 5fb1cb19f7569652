//! The upload path of the filesystem backend: an upload is a directory under `uploads/` with
//! its data file and the repository it belongs to; appends hash and write in one pass (large
//! bodies on a pipeline of threads), and a commit renames the data into the blob store.

use super::{FsStore, PIPELINE_QUEUE, PIPELINE_THRESHOLD, io_err, stream_file};
use crate::registry::digest::{Digest, Hasher};
use crate::registry::names::RepoName;
use crate::registry::storage::{BlobBody, StorageError, StorageResult};
use crate::registry::storage::{Store, Uploads};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Releases an upload's in-progress mark however the append ends.
struct UploadGuard<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Uploads for FsStore {
    async fn create_upload(&self, repo: &RepoName) -> StorageResult<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.upload_dir(&id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err(&dir))?;
        tokio::fs::File::create(dir.join("data"))
            .await
            .map_err(io_err(&dir))?;
        // Written last: an upload without its owner file is invisible and gets purged.
        self.write_atomic(&dir.join("repository"), repo.as_str().as_bytes())
            .await?;
        Ok(id)
    }

    async fn upload_len(&self, repo: &RepoName, id: &str) -> StorageResult<u64> {
        let dir = self.check_upload_owner(repo, id).await?;
        let data = dir.join("data");
        let meta = tokio::fs::metadata(&data).await.map_err(io_err(&data))?;
        Ok(meta.len())
    }

    async fn append_upload<S>(
        &self,
        repo: &RepoName,
        id: &str,
        offset: u64,
        mut body: S,
        mut hasher: Hasher,
    ) -> StorageResult<(u64, Hasher)>
    where
        S: futures_util::Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let dir = self.check_upload_owner(repo, id).await?;
        if !self
            .uploads_in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned())
        {
            return Err(StorageError::UploadBusy);
        }
        let _guard = UploadGuard {
            set: &self.uploads_in_progress,
            id: id.to_owned(),
        };
        let path = dir.join("data");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let actual = file.metadata().map_err(io_err(&path))?.len();
        if actual != offset {
            return Err(StorageError::OffsetMismatch {
                expected: offset,
                actual,
            });
        }
        file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;

        // Small bodies (most layers of most images, every config) are hashed and written inline:
        // for them, handing chunks to other threads costs more than it saves.
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0;
        let mut failure = None;
        let mut rest_follows = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    head_len += chunk.len();
                    head.push(chunk);
                    if head_len >= PIPELINE_THRESHOLD {
                        rest_follows = true;
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !rest_follows {
            // What was received is always stored, so that a resumed upload continues from a file
            // that matches every byte the client managed to send.
            for chunk in &head {
                hasher.update(chunk);
                file.write_all(chunk).map_err(io_err(&path))?;
            }
            if self.fsync {
                file.sync_data().map_err(io_err(&path))?;
            }
            return match failure {
                Some(e) => Err(io_err(&path)(e)),
                None => Ok((offset + head_len as u64, hasher)),
            };
        }

        // Large bodies: receive here, hash on one blocking thread, write on another, so that the
        // three overlap on the machine's cores; the received buffers are handed on, never copied.
        let (to_hash, mut hash_queue) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_QUEUE);
        let (to_write, mut write_queue) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_QUEUE);
        let hashing = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = hash_queue.blocking_recv() {
                hasher.update(&chunk);
                if to_write.blocking_send(chunk).is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            hasher
        });
        let fsync = self.fsync;
        let writing = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let mut written = 0u64;
            while let Some(chunk) = write_queue.blocking_recv() {
                file.write_all(&chunk)?;
                written += chunk.len() as u64;
            }
            if fsync {
                file.sync_data()?;
            }
            Ok(written)
        });
        let mut pending = head.into_iter();
        loop {
            let next = match pending.next() {
                Some(chunk) => Some(Ok(chunk)),
                None => body.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    if to_hash.send(chunk).await.is_err() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                None => break,
            }
        }
        drop(to_hash);
        let hasher = hashing
            .await
            .map_err(|e| StorageError::Corrupt(format!("upload hasher failed: {e}")))?;
        let written = writing
            .await
            .map_err(|e| StorageError::Corrupt(format!("upload writer failed: {e}")))?
            .map_err(io_err(&path))?;
        match failure {
            Some(e) => Err(io_err(&path)(e)),
            None => Ok((offset + written, hasher)),
        }
    }

    async fn read_upload(&self, repo: &RepoName, id: &str) -> StorageResult<BlobBody> {
        let dir = self.check_upload_owner(repo, id).await?;
        let path = dir.join("data");
        let len = tokio::fs::metadata(&path)
            .await
            .map_err(io_err(&path))?
            .len();
        tokio::task::spawn_blocking(move || stream_file(path, 0, len))
            .await
            .map_err(|e| StorageError::Corrupt(format!("reader task failed: {e}")))?
    }

    async fn commit_upload(&self, repo: &RepoName, id: &str, digest: &Digest) -> StorageResult<()> {
        let dir = self.check_upload_owner(repo, id).await?;
        let data = dir.join("data");
        let target = self.blob_path(digest);
        let parent = target.parent().expect("blob paths have a parent");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io_err(parent))?;
        if self.fsync {
            let f = tokio::fs::File::open(&data).await.map_err(io_err(&data))?;
            f.sync_all().await.map_err(io_err(&data))?;
        }
        // Replacing an existing blob is harmless: same digest, same bytes; readers keep the old inode.
        tokio::fs::rename(&data, &target)
            .await
            .map_err(io_err(&target))?;
        self.link_blob(repo, digest).await?;
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(io_err(&dir))?;
        Ok(())
    }

    async fn cancel_upload(&self, repo: &RepoName, id: &str) -> StorageResult<()> {
        let dir = self.check_upload_owner(repo, id).await?;
        tokio::fs::remove_dir_all(&dir).await.map_err(io_err(&dir))
    }

    async fn purge_uploads(&self, max_age: Duration) -> StorageResult<usize> {
        let uploads = self.root.join("uploads");
        let busy: HashSet<String> = self
            .uploads_in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio::task::spawn_blocking(move || -> StorageResult<usize> {
            let now = SystemTime::now();
            let mut purged = 0;
            for entry in std::fs::read_dir(&uploads).map_err(io_err(&uploads))? {
                let entry = entry.map_err(io_err(&uploads))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if busy.contains(&name) {
                    continue;
                }
                let modified = std::fs::metadata(entry.path().join("data"))
                    .or_else(|_| entry.metadata())
                    .and_then(|m| m.modified())
                    .unwrap_or(now);
                if now.duration_since(modified).unwrap_or_default() > max_age
                    && std::fs::remove_dir_all(entry.path()).is_ok()
                {
                    purged += 1;
                }
            }
            Ok(purged)
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("purge task failed: {e}")))?
    }
}
