//! The `ReplicationPolicy` kind: which images of one registry are copied, digest for digest,
//! into another, by `wharf replicate` Jobs on a schedule, on demand, or when the source (a
//! wharf Registry) reports a push.

use super::common::{LocalObjectReference, bounded_strings};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Failures kept in `status.lastRun.failures`; the count says how many there were.
pub const FAILURES_REPORTED: usize = 10;

/// Copies the images its rules select from `source` to `destination`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wharf.dev",
    version = "v1alpha1",
    kind = "ReplicationPolicy",
    namespaced,
    status = "ReplicationPolicyStatus",
    shortname = "repl",
    category = "wharf",
    cel,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 42")
        .message("a ReplicationPolicy name starts with a letter, has only lowercase letters, digits and '-', and at most 42 characters: it names CronJobs and Jobs"),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.trigger.schedule"}"#,
    printcolumn = r#"{"name":"Copied","type":"integer","jsonPath":".status.lastRun.copied"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.lastRun.failed"}"#,
    printcolumn = r#"{"name":"Last Run","type":"date","jsonPath":".status.lastRun.completionTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.trigger) || !has(self.trigger.onPush) || !self.trigger.onPush || has(self.source.registryRef)")
    .message("trigger.onPush needs source.registryRef: only a wharf Registry reports its pushes"))]
#[serde(rename_all = "camelCase")]
pub struct ReplicationPolicySpec {
    /// Where images are read.
    pub source: RegistrySide,
    /// Where they are written, and under which names.
    pub destination: DestinationSpec,
    /// An image is copied when any rule selects it.
    #[schemars(length(min = 1, max = 50))]
    pub rules: Vec<ReplicationRule>,
    /// When runs start; without it, only on demand (`wharf.dev/requested-at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<OptionsSpec>,
    /// Finished Jobs kept for inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<super::retention_policy::HistorySpec>,
}

/// A wharf Registry in this namespace (the operator mints a robot for each run: pull on a
/// source, push on a destination) or any OCI registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.registryRef) != has(self.endpoint)")
    .message("choose exactly one of registryRef (a wharf Registry in this namespace) or endpoint (any OCI registry)"))]
#[serde(rename_all = "camelCase")]
pub struct RegistrySide {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_ref: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<ReplicationEndpoint>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.registryRef) != has(self.endpoint)")
    .message("choose exactly one of registryRef (a wharf Registry in this namespace) or endpoint (any OCI registry)"))]
#[serde(rename_all = "camelCase")]
pub struct DestinationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_ref: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<ReplicationEndpoint>,
    /// Removed from the start of each source repository name (`library/`).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9._/-]*$')")
        .message("stripPrefix has only lowercase repository-name characters and '/'"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub strip_prefix: Option<String>,
    /// Put in front of each repository name at the destination (`mirror/`).
    #[x_kube(validation = Rule::new("self.matches('^([a-z0-9]+([._-][a-z0-9]+)*/)*$')")
        .message("repositoryPrefix is repository path components each followed by '/', such as \"mirror/\""))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub repository_prefix: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationEndpoint {
    /// `https://host[:port]` or `http://host[:port]`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/ ]+/?$')")
        .message("url must be http(s)://host[:port], without a path"))]
    #[schemars(length(max = 512))]
    pub url: String,
    /// A Secret of type `kubernetes.io/dockerconfigjson` (the entry for this host is used) or
    /// `kubernetes.io/basic-auth` (`username`, `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// A Secret with `ca.crt` to trust for https (the image has no system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectReference>,
    /// Accept any certificate from this endpoint. Only for tests: anyone on the path can
    /// then read and change what is copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

/// What one rule selects: every filter given must hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRule {
    /// Source repositories, as globs (`library/alpine`, `team/**`).
    #[x_kube(validation = Rule::new("self.all(r, r.matches('^[a-z0-9._/*?-]+$'))")
        .message("repositories are globs of lowercase repository-name characters, '/', '*' and '?'"))]
    #[x_kube(validation = Rule::new("self.size() >= 1").message("a rule names at least one repository glob (\"**\" for all)"))]
    #[schemars(schema_with = "repository_globs")]
    pub repositories: Vec<String>,
    /// Source repositories this rule skips, as globs.
    #[x_kube(validation = Rule::new("self.all(r, r.matches('^[a-z0-9._/*?-]+$'))")
        .message("excludeRepositories are globs of lowercase repository-name characters, '/', '*' and '?'"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "repository_globs")]
    pub exclude_repositories: Option<Vec<String>>,
    /// Which tags (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<TagFilter>,
    /// Copy only these platforms of an index (`linux/amd64`, `linux/arm64/v8`). The copy is
    /// then a new index, with its own digest, listing the source's manifests of those
    /// platforms unchanged. Omitted: the whole index, byte for byte.
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$'))")
        .message("platforms are os/architecture[/variant], such as linux/amd64 or linux/arm/v7"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "platform_list")]
    pub platforms: Option<Vec<String>>,
    /// Copy signatures, SBOMs and attestations that refer to a copied manifest (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers: Option<bool>,
}

/// Tag filters; every one given must hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.newest) || self.newest >= 1").message("newest is at least 1"))]
#[serde(rename_all = "camelCase")]
pub struct TagFilter {
    /// Tag globs to copy (`3.*`, `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tag_globs")]
    pub include: Option<Vec<String>>,
    /// Tag globs never copied (`*-rc*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tag_globs")]
    pub exclude: Option<Vec<String>>,
    /// A regular expression tags must match (`^v[0-9]+\.[0-9]+$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub regex: Option<String>,
    /// A semantic version range (`>=3.18 <4`); tags that are not versions never match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub semver: Option<String>,
    /// Of the tags the other filters pass, the N highest semantic versions (tags that are not
    /// versions do not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.schedule) || !has(self.timeZone)")
    .message("timeZone only applies with a schedule"))]
#[serde(rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Cron schedule (`*/30 * * * *`, `@hourly`).
    #[x_kube(validation = Rule::new("self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$')")
        .message("schedule must be a cron expression with 5 fields, such as \"*/30 * * * *\", or a macro such as @hourly"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule, e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// Pause scheduled and push-triggered runs (requested runs still happen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Start a run for a repository and tag within seconds of a push to it (source must be a
    /// wharf Registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_push: Option<bool>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OptionsSpec {
    /// Move a destination tag that points to another manifest (default false: the run reports
    /// a conflict and leaves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<bool>,
    /// Delete destination tags the rules select whose source tag is gone (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate_deletion: Option<bool>,
    /// Images copied at once (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: Option<i32>,
    /// Report what a run would copy and delete, and change nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Upper bound on blob bytes read from the source per second (`50Mi`, `1Gi`).
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(Ki|Mi|Gi)?$')")
        .message("bandwidthLimit is bytes per second, such as 50Mi or 1Gi"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub bandwidth_limit: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` (kstatus) and `LastRunSucceeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The newest finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ReplicationRun>,
    /// The `wharf.dev/requested-at` value whose run was started, so it starts only once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_requested_at: Option<String>,
}

/// What one run did: the summary `wharf replicate` writes to its termination message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRun {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub dry_run: bool,
    /// Tags the rules selected.
    #[serde(default)]
    pub tags_selected: i64,
    /// Tags written at the destination (or, in a dry run, that would be).
    #[serde(default)]
    pub copied: i64,
    /// Tags the destination already had at the same digest.
    #[serde(default)]
    pub skipped: i64,
    /// Destination tags that point elsewhere and were left (`overwrite: false`).
    #[serde(default)]
    pub conflicts: i64,
    /// Destination tags deleted because their source tag is gone (`replicateDeletion`).
    #[serde(default)]
    pub deleted: i64,
    /// Tags (or whole repositories) that could not be copied.
    #[serde(default)]
    pub failed: i64,
    /// Referrers (signatures, SBOMs) copied with their subjects.
    #[serde(default)]
    pub referrers_copied: i64,
    /// Blob bodies sent to the destination (in a dry run, that would be).
    #[serde(default)]
    pub blobs_copied: i64,
    /// Blobs the destination took by cross-repository mount, without a body.
    #[serde(default)]
    pub blobs_mounted: i64,
    /// Blobs the destination already had.
    #[serde(default)]
    pub blobs_present: i64,
    /// Bytes of the blob bodies sent (in a dry run, that would be).
    #[serde(default)]
    pub bytes_transferred: i64,
    #[serde(default)]
    pub duration_seconds: f64,
    /// The first failures, each with the repository and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<ReplicationFailure>,
    /// Why the run as a whole failed (no listing of the source, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationFailure {
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub reason: String,
}

fn repository_globs(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_strings(100, 256)
}

fn tag_globs(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_strings(100, 128)
}

fn platform_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_strings(20, 64)
}

impl ReplicationPolicySpec {
    pub fn dry_run(&self) -> bool {
        self.options
            .as_ref()
            .and_then(|o| o.dry_run)
            .unwrap_or(false)
    }

    pub fn on_push(&self) -> bool {
        self.trigger
            .as_ref()
            .and_then(|t| t.on_push)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests;
