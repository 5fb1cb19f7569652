//! Retention: which tags and manifests of a repository a policy deletes. `evaluate` is a pure
//! function over a listing (what `GET /admin/v1/manifests` returns), so every rule is unit-tested
//! and a dry run reports exactly what a real run deletes.
//!
//! A tag survives if any keep-rule keeps it, if it is protected, or if its digest runs in the
//! cluster. A manifest is deleted only when none of its tags survive (otherwise only the other
//! tags are removed), and untagged manifests go after their own age. Referrers (signatures,
//! SBOMs) go with their subject unless the policy keeps them.

pub mod evaluate;
pub mod semver_range;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One manifest of a repository, as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub digest: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Unix seconds.
    pub pushed_at: u64,
    /// Unix seconds; `None` when never pulled or unknown (registries that do not track it).
    #[serde(default)]
    pub last_pulled_at: Option<u64>,
    #[serde(default)]
    pub subject: Option<String>,
    /// Child manifests of an index: they live as long as the index does.
    #[serde(default)]
    pub children: Vec<String>,
}

/// A keep-rule: the tags it selects (all given selectors must match), kept subject to the
/// qualifiers it has (all given qualifiers must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepRule {
    /// Tag globs (`v*.*.*`); none: every tag.
    pub tags: Vec<String>,
    pub tag_regex: Option<String>,
    /// A semver range (`>=1.0.0 <2`, `^1.2`); tags that are not versions never match.
    pub semver: Option<String>,
    pub most_recently_pushed: Option<usize>,
    /// With `semver`: the highest N versions; otherwise the N most recently pushed.
    pub newest: Option<usize>,
    pub pushed_within: Option<Duration>,
    pub pulled_within: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep: Vec<KeepRule>,
    /// Untagged manifests older than this are deleted; `None`: untagged manifests stay.
    pub untagged_older_than: Option<Duration>,
    /// Tag globs never deleted.
    pub protected_tags: Vec<String>,
    /// Never leave fewer tags than this in a repository (the most recently pushed stay).
    pub min_tags_per_repository: usize,
    /// Keep referrers whose subject is deleted (default: they go with it).
    pub keep_referrers: bool,
}
