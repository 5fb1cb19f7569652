//! The `RetentionPolicy` kind: which tags of which repositories a registry keeps, applied by
//! `wharf retention` Jobs on a schedule or on demand, dry run by default.

use super::common::{LocalObjectReference, bounded_strings};
use super::registry::GarbageCollectionRun;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Set it (to a timestamp, or any new value) to run the policy once now.
pub const REQUESTED_AT_ANNOTATION: &str = "wharf.dev/requested-at";
/// `"false"` with `wharf.dev/requested-at`: that one run deletes even when `safety.dryRun` is
/// true, the way to act on a dry run's report without changing the scheduled runs.
pub const REQUESTED_DRY_RUN_ANNOTATION: &str = "wharf.dev/requested-dry-run";

/// Which tags a registry keeps; everything else a run deletes (after a dry run by default).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wharf.dev",
    version = "v1alpha1",
    kind = "RetentionPolicy",
    namespaced,
    status = "RetentionPolicyStatus",
    shortname = "rp",
    category = "wharf",
    cel,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 42")
        .message("a RetentionPolicy name starts with a letter, has only lowercase letters, digits and '-', and at most 42 characters: it names CronJobs and Jobs"),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Dry Run","type":"boolean","jsonPath":".status.lastRun.dryRun"}"#,
    printcolumn = r#"{"name":"Candidates","type":"integer","jsonPath":".status.lastRun.tagsToDelete"}"#,
    printcolumn = r#"{"name":"Deleted","type":"integer","jsonPath":".status.lastRun.tagsDeleted"}"#,
    printcolumn = r#"{"name":"Last Run","type":"date","jsonPath":".status.lastRun.completionTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.registryRef) != has(self.endpoint)")
    .message("choose exactly one of registryRef (a wharf Registry in this namespace) or endpoint (any OCI registry)"))]
#[x_kube(validation = Rule::new("!has(self.endpoint) || !has(self.keep) || self.keep.all(k, !has(k.pushedWithin) && !has(k.pulledWithin) && !has(k.mostRecentlyPushed) && (!has(k.newest) || has(k.semver)))")
    .message("an endpoint registry does not say when tags were pushed or pulled: its keep rules may use tags, tagRegex and semver (newest only with semver)"))]
#[x_kube(validation = Rule::new("!has(self.endpoint) || !has(self.untagged) || !self.untagged.delete")
    .message("untagged manifests can only be found in a wharf Registry (registryRef): the OCI API cannot list them"))]
#[x_kube(validation = Rule::new("!has(self.endpoint) || !has(self.runGarbageCollection) || !self.runGarbageCollection")
    .message("runGarbageCollection needs registryRef: only a wharf Registry's garbage collection can be run"))]
#[x_kube(validation = Rule::new("has(self.schedule) || !has(self.timeZone)")
    .message("timeZone only applies with a schedule"))]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicySpec {
    /// A wharf Registry in this namespace: the operator gives each run a robot account limited
    /// to pull and delete on `repositories`, and push and pull times are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_ref: Option<LocalObjectReference>,
    /// Any OCI registry that supports deletes; only tag- and version-based rules apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointSpec>,
    /// Repositories the policy covers, as globs (`ci/**`; default: all).
    #[x_kube(validation = Rule::new("self.all(r, r.matches('^[a-z0-9._/*?-]+$'))")
        .message("repositories are globs of lowercase repository-name characters, '/', '*' and '?'"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "repository_globs")]
    pub repositories: Option<Vec<String>>,
    /// Repositories never touched, as globs.
    #[x_kube(validation = Rule::new("self.all(r, r.matches('^[a-z0-9._/*?-]+$'))")
        .message("excludeRepositories are globs of lowercase repository-name characters, '/', '*' and '?'"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "repository_globs")]
    pub exclude_repositories: Option<Vec<String>>,
    /// A tag survives if any rule keeps it. No rules: every tag is a candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50))]
    pub keep: Option<Vec<KeepRuleSpec>>,
    /// Manifests no tag points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untagged: Option<UntaggedSpec>,
    /// What is never deleted, whatever the rules say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protect: Option<ProtectSpec>,
    /// Limits on what a run may do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<SafetySpec>,
    /// Referrers (signatures, SBOMs) of a deleted manifest: `Delete` with it (default) or `Keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers: Option<ReferrersPolicy>,
    /// Cron schedule (`0 2 * * *`, `@daily`); without it the policy runs only on demand.
    #[x_kube(validation = Rule::new("self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$')")
        .message("schedule must be a cron expression with 5 fields, such as \"0 2 * * *\", or a macro such as @daily"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule, e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// Pause scheduled runs (on-demand runs still happen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Finished Jobs kept for inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistorySpec>,
    /// After a run that deleted something, collect the Registry's garbage to free the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_garbage_collection: Option<bool>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// `https://host[:port]` or `http://host[:port]`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/ ]+/?$')")
        .message("url must be http(s)://host[:port], without a path"))]
    #[schemars(length(max = 512))]
    pub url: String,
    /// A Secret with `username` and `password`, allowed to list tags and delete manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// A Secret with `ca.crt` to trust for https. Needed for https: the image is built on
    /// scratch and has no system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectReference>,
}

/// A keep-rule: the tags it selects (every selector given must match), kept when every
/// qualifier given holds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.newest) || !has(self.mostRecentlyPushed)")
    .message("a keep rule has newest or mostRecentlyPushed, not both"))]
#[serde(rename_all = "camelCase")]
pub struct KeepRuleSpec {
    /// Tag globs (`v*.*.*`, `release-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tag_globs")]
    pub tags: Option<Vec<String>>,
    /// A regular expression tags must match (`^main-[0-9a-f]{7}$`).
    #[x_kube(validation = Rule::new("self.size() <= 256").message("tagRegex has at most 256 characters"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub tag_regex: Option<String>,
    /// A semantic version range (`>=1.0.0 <2`, `^1.2`); tags that are not versions never match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub semver: Option<String>,
    /// Keep the N selected tags pushed most recently.
    #[x_kube(validation = Rule::new("self >= 1").message("mostRecentlyPushed is at least 1"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub most_recently_pushed: Option<i32>,
    /// With `semver`: the N highest versions; otherwise the N pushed most recently.
    #[x_kube(validation = Rule::new("self >= 1").message("newest is at least 1"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<i32>,
    /// Keep selected tags pushed within this long (`168h`, `7d`).
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h|d))+$')").message("pushedWithin must be a duration such as 12h or 7d"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub pushed_within: Option<String>,
    /// Keep selected tags pulled within this long.
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h|d))+$')").message("pulledWithin must be a duration such as 12h or 30d"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub pulled_within: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UntaggedSpec {
    /// Delete manifests no tag points to (and that no index or tag needs).
    pub delete: bool,
    /// Only those pushed at least this long ago (default 0: all of them).
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h|d))+$')").message("olderThan must be a duration such as 24h or 7d"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub older_than: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProtectSpec {
    /// Tag globs never deleted (`latest`, `stable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tag_globs")]
    pub tags: Option<Vec<String>>,
    /// Never delete what Pods or pod templates anywhere in this cluster reference, by digest
    /// or by tag (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use_by_cluster: Option<bool>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SafetySpec {
    /// Report candidates without deleting (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// A run with more deletions than this deletes nothing and reports Stalled.
    #[x_kube(validation = Rule::new("self >= 1").message("maxDeletionsPerRun is at least 1"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deletions_per_run: Option<i32>,
    /// Never leave fewer tags than this in a repository (the most recently pushed stay).
    #[x_kube(validation = Rule::new("self >= 0").message("minTagsPerRepository is 0 or more"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tags_per_repository: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ReferrersPolicy {
    #[default]
    Delete,
    Keep,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HistorySpec {
    /// Succeeded Jobs kept (default 3).
    #[schemars(range(min = 0, max = 20))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful: Option<i32>,
    /// Failed Jobs kept (default 3).
    #[schemars(range(min = 0, max = 20))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` (kstatus) and `LastRunSucceeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The newest finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RetentionRun>,
    /// The garbage collection that followed the newest run that deleted something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_garbage_collection: Option<GarbageCollectionRun>,
    /// The `wharf.dev/requested-at` value whose run was started, so it starts only once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_requested_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRun {
    pub job_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// The run found more deletions than `maxDeletionsPerRun` and deleted nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_evaluated: Option<i64>,
    /// Tags the policy does not keep (deleted, or to be deleted by a real run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_to_delete: Option<i64>,
    /// Manifests the policy does not keep (with all their tags, or untagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests_to_delete: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_deleted: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests_deleted: Option<i64>,
    /// Why the run failed or stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The ConfigMap listing every candidate of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_config_map_ref: Option<LocalObjectReference>,
}

fn repository_globs(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_strings(100, 256)
}

fn tag_globs(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_strings(100, 128)
}

impl RetentionPolicySpec {
    pub fn dry_run(&self) -> bool {
        self.safety.as_ref().and_then(|s| s.dry_run).unwrap_or(true)
    }

    pub fn in_use_protection(&self) -> bool {
        self.protect
            .as_ref()
            .and_then(|p| p.in_use_by_cluster)
            .unwrap_or(true)
    }

    pub fn garbage_collection(&self) -> bool {
        self.registry_ref.is_some() && self.run_garbage_collection == Some(true)
    }
}

#[cfg(test)]
mod tests;
