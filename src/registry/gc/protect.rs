//! What pushes tell a collection: the digests a manifest push references while it runs, and
//! the blobs clients just used. A run never removes a blob that a push in flight references or
//! that was touched since the run started; see the module docs of `gc` for why that is enough.

use crate::registry::digest::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Finished announcements older than this are forgotten at the start of a run.
const PROTECTION_TTL: Duration = Duration::from_secs(3600);

/// Shards of the announcement map. A run's check-and-remove holds one shard's lock across a
/// system call, so there are enough of them that the collection's threads and pushes rarely
/// meet on one.
const SHARDS: usize = 64;

/// What pushes said about one digest.
#[derive(Debug, Clone, Copy)]
struct Protection {
    /// Last announcement or end of a push.
    last: Instant,
    /// Manifest pushes referencing it right now.
    in_flight: u32,
}

/// The announcements of one shard, locked: what a check-and-remove holds.
pub struct Shard<'a>(MutexGuard<'a, HashMap<Digest, Protection>>);

impl Shard<'_> {
    /// Whether a push in flight references `digest`, or one touched it since `since`.
    pub fn protects(&self, digest: &Digest, since: Instant) -> bool {
        self.0
            .get(digest)
            .is_some_and(|p| p.in_flight > 0 || p.last >= since)
    }
}

/// Announcements, sharded by digest: the guarantee is per digest, so one shard's lock is all a
/// check needs.
pub struct Protections {
    shards: [Mutex<HashMap<Digest, Protection>>; SHARDS],
}

impl Default for Protections {
    fn default() -> Self {
        Protections {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

/// The shard of a digest: its first byte. Digests are uniform, so the shards fill evenly.
fn shard_index(digest: &Digest) -> usize {
    let hex = digest.hex().as_bytes();
    let nibble = |b: u8| (b as char).to_digit(16).unwrap_or(0) as usize;
    match hex {
        [a, b, ..] => (nibble(*a) << 4 | nibble(*b)) % SHARDS,
        _ => 0,
    }
}

impl Protections {
    pub fn lock(&self, digest: &Digest) -> Shard<'_> {
        Shard(
            self.shards[shard_index(digest)]
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    pub fn forget_stale(&self) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, p| p.in_flight > 0 || p.last.elapsed() < PROTECTION_TTL);
        }
    }

    /// A manifest push is about to check and then reference these digests.
    pub fn begin_push<'a>(
        self: &Arc<Self>,
        digests: impl IntoIterator<Item = &'a Digest>,
    ) -> PushGuard {
        let now = Instant::now();
        let digests: Vec<Digest> = digests.into_iter().cloned().collect();
        for d in &digests {
            let mut shard = self.lock(d);
            let p = shard.0.entry(d.clone()).or_insert(Protection {
                last: now,
                in_flight: 0,
            });
            p.in_flight += 1;
            p.last = now;
        }
        PushGuard {
            protections: self.clone(),
            digests,
        }
    }

    /// A client just used these digests (mounted, uploaded, checked with HEAD).
    pub fn touch<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        let now = Instant::now();
        for d in digests {
            self.lock(d)
                .0
                .entry(d.clone())
                .and_modify(|p| p.last = now)
                .or_insert(Protection {
                    last: now,
                    in_flight: 0,
                });
        }
    }
}

/// Held by a manifest push from before it checks its references until it is stored.
pub struct PushGuard {
    protections: Arc<Protections>,
    digests: Vec<Digest>,
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        for d in &self.digests {
            if let Some(p) = self.protections.lock(d).0.get_mut(d) {
                p.in_flight = p.in_flight.saturating_sub(1);
                p.last = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;

    #[test]
    fn every_shard_is_used() {
        let mut used = [false; SHARDS];
        for n in 0..10_000u32 {
            used[shard_index(&Digest::of(Algorithm::Sha256, &n.to_le_bytes()))] = true;
        }
        assert!(used.iter().all(|u| *u));
    }

    #[test]
    fn a_push_protects_while_in_flight_and_after_it_ends() {
        let protections = Arc::new(Protections::default());
        let d = Digest::of(Algorithm::Sha256, b"layer");
        let before = Instant::now();
        assert!(!protections.lock(&d).protects(&d, before));
        let push = protections.begin_push([&d]);
        let later = Instant::now() + Duration::from_secs(1);
        assert!(
            protections.lock(&d).protects(&d, later),
            "in flight: whatever the run's start"
        );
        drop(push);
        assert!(protections.lock(&d).protects(&d, before));
        assert!(!protections.lock(&d).protects(&d, later));
    }
}
