//! Hash states of uploads between their requests, keyed by upload id. Losing one is harmless
//! (it is rebuilt from the stored bytes), so the map is simply cleared if it ever grows large
//! from abandoned uploads.

use super::digest::Hasher;
use std::collections::HashMap;
use std::sync::Mutex;

const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct UploadHashes(Mutex<HashMap<String, (u64, Hasher)>>);

impl UploadHashes {
    pub fn put(&self, id: &str, len: u64, hasher: Hasher) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(id.to_owned(), (len, hasher));
    }

    /// The state for `id` if it covers exactly `len` bytes.
    pub fn take_at(&self, id: &str, len: u64) -> Option<Hasher> {
        match self.take(id) {
            Some((at, hasher)) if at == len => Some(hasher),
            _ => None,
        }
    }

    pub fn take(&self, id: &str) -> Option<(u64, Hasher)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}
