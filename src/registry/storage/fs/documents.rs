//! The filesystem backend's documents: one file per key under `_wharf/`, replaced by rename.

use super::FsStore;
use crate::registry::storage::{
    BoxFuture, Documents, StorageError, StorageResult, valid_document_key,
};
use std::io;
use std::path::PathBuf;

impl FsStore {
    fn document_path(&self, key: &str) -> StorageResult<PathBuf> {
        if !valid_document_key(key) {
            return Err(StorageError::Corrupt(format!(
                "invalid document key {key:?}"
            )));
        }
        Ok(self.root.join("_wharf").join(key))
    }
}

fn io_error(path: &std::path::Path, source: io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Documents for FsStore {
    fn get_document<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StorageResult<Option<Vec<u8>>>> {
        Box::pin(async move {
            let path = self.document_path(key)?;
            match tokio::fs::read(&path).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error(&path, e)),
            }
        })
    }

    fn put_document<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, StorageResult<()>> {
        Box::pin(async move {
            let path = self.document_path(key)?;
            self.write_atomic(&path, &value).await
        })
    }

    fn create_document<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, StorageResult<bool>> {
        Box::pin(async move {
            let path = self.document_path(key)?;
            let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
            tokio::task::spawn_blocking(move || -> StorageResult<bool> {
                let dir = path.parent().expect("document paths have a parent");
                std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
                std::fs::write(&tmp, &value).map_err(|e| io_error(&tmp, e))?;
                // A hard link fails when the target exists: first writer wins, across processes.
                let created = match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(io_error(&path, e));
                    }
                };
                let _ = std::fs::remove_file(&tmp);
                Ok(created)
            })
            .await
            .map_err(|e| StorageError::Corrupt(format!("document task failed: {e}")))?
        })
    }

    fn delete_document<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StorageResult<bool>> {
        Box::pin(async move {
            let path = self.document_path(key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_error(&path, e)),
            }
        })
    }

    fn list_documents<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, StorageResult<Vec<String>>> {
        Box::pin(async move {
            let dir = self.document_path(prefix)?;
            let mut keys = Vec::new();
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(keys),
                Err(e) => return Err(io_error(&dir, e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| io_error(&dir, e))? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = format!("{prefix}/{name}");
                if valid_document_key(&key) && !name.contains(".tmp-") {
                    keys.push(key);
                }
            }
            keys.sort();
            Ok(keys)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn documents_round_trip_and_create_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path(), false).unwrap();
        assert_eq!(store.get_document("robots/a.json").await.unwrap(), None);
        assert!(
            store
                .create_document("robots/a.json", b"1".to_vec())
                .await
                .unwrap()
        );
        assert!(
            !store
                .create_document("robots/a.json", b"2".to_vec())
                .await
                .unwrap()
        );
        assert_eq!(
            store.get_document("robots/a.json").await.unwrap().unwrap(),
            b"1"
        );
        store
            .put_document("robots/b.json", b"3".to_vec())
            .await
            .unwrap();
        assert_eq!(
            store.list_documents("robots").await.unwrap(),
            ["robots/a.json", "robots/b.json"]
        );
        assert!(store.delete_document("robots/a.json").await.unwrap());
        assert!(!store.delete_document("robots/a.json").await.unwrap());
        assert!(store.get_document("../escape").await.is_err());
    }
}
