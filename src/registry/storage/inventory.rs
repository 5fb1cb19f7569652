//! What garbage collection and the admin listing read from a store, in terms every backend
//! shares: repositories, digests, sizes and times. The blob store is offered in shards (one
//! algorithm and the first two hex digits of the digest) so that a collection can walk them in
//! parallel; a filesystem backend lists one directory per shard, an object store one key prefix.

use crate::registry::digest::{Algorithm, Digest};
use std::time::SystemTime;

/// One repository's manifests and tags.
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

/// A part of the blob store that can be walked on its own: the blobs of one algorithm whose
/// encoded digest starts with `prefix` (two hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobShard {
    pub algorithm: Algorithm,
    pub prefix: String,
}

impl BlobShard {
    /// Every shard there can be: 256 per algorithm.
    pub fn all() -> Vec<BlobShard> {
        [Algorithm::Sha256, Algorithm::Sha512]
            .into_iter()
            .flat_map(|algorithm| {
                (0..=255u8).map(move |b| BlobShard {
                    algorithm,
                    prefix: format!("{b:02x}"),
                })
            })
            .collect()
    }
}

/// How much of a repository an inventory reads: every extra costs a request per manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detail {
    /// The revisions (what garbage collection of blobs needs).
    Revisions,
    /// Also when each revision was pushed, and the tags (untagged manifests).
    Ages,
    /// Also each revision's media type (the admin listing).
    Full,
}

pub fn algorithm_named(name: &str) -> Option<Algorithm> {
    match name {
        "sha256" => Some(Algorithm::Sha256),
        "sha512" => Some(Algorithm::Sha512),
        _ => None,
    }
}

/// Whether a stored name is an encoded digest of `algorithm`: temporaries and strays are not.
pub fn is_encoded(algorithm: Algorithm, hex: &str) -> bool {
    hex.len() == algorithm.hex_len()
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn digest_from(algorithm: Algorithm, hex: &str) -> Option<Digest> {
    format!("{}:{hex}", algorithm.name()).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_digest_once() {
        let shards = BlobShard::all();
        assert_eq!(shards.len(), 512);
        for n in 0..200u32 {
            let d = Digest::of(Algorithm::Sha512, &n.to_le_bytes());
            let owning: Vec<_> = shards
                .iter()
                .filter(|s| s.algorithm == d.algorithm() && d.hex().starts_with(&s.prefix))
                .collect();
            assert_eq!(owning.len(), 1);
        }
        assert!(is_encoded(Algorithm::Sha256, &"a".repeat(64)));
        assert!(!is_encoded(Algorithm::Sha256, ".tmp-123"));
    }
}
