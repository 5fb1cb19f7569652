//! The S3 backend's documents: one object per key under `_wharf/`. A document is replaced by
//! one PUT (whole, atomically); `create_document` is a PUT with `If-None-Match: *`, so that of
//! two replicas creating the same key exactly one wins.

use super::S3Store;
use crate::registry::storage::{
    BoxFuture, Documents, StorageError, StorageResult, valid_document_key,
};
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;

impl S3Store {
    fn document_key(&self, key: &str) -> StorageResult<Path> {
        if !valid_document_key(key) {
            return Err(StorageError::Corrupt(format!(
                "invalid document key {key:?}"
            )));
        }
        Ok(self.key(&format!("_wharf/{key}")))
    }
}

impl Documents for S3Store {
    fn get_document<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StorageResult<Option<Vec<u8>>>> {
        Box::pin(async move {
            let key = self.document_key(key)?;
            Ok(self.get_bytes(&key).await?.map(|b| b.to_vec()))
        })
    }

    fn put_document<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, StorageResult<()>> {
        Box::pin(async move {
            let key = self.document_key(key)?;
            self.put_bytes(&key, Bytes::from(value)).await
        })
    }

    fn create_document<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, StorageResult<bool>> {
        Box::pin(async move {
            let key = self.document_key(key)?;
            self.create_bytes(&key, Bytes::from(value)).await
        })
    }

    fn delete_document<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StorageResult<bool>> {
        Box::pin(async move {
            let key = self.document_key(key)?;
            self.delete_if_present(&key).await
        })
    }

    fn list_documents<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, StorageResult<Vec<String>>> {
        Box::pin(async move {
            let dir = self.document_key(prefix)?;
            let listed = self
                .client
                .list_with_delimiter(Some(&dir))
                .await
                .map_err(|e| super::storage_error("list", &dir, e))?;
            let mut keys: Vec<String> = listed
                .objects
                .iter()
                .filter_map(|meta| meta.location.filename())
                .map(|name| format!("{prefix}/{name}"))
                .filter(|key| valid_document_key(key))
                .collect();
            keys.sort();
            Ok(keys)
        })
    }
}
