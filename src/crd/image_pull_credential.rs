//! The `ImagePullCredential` kind: a registry credential copied into many namespaces as a
//! `kubernetes.io/dockerconfigjson` Secret and injected as `imagePullSecrets`. Cluster-scoped,
//! so that it can own its copies in every namespace.

use super::common::bounded_strings;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Namespaces that never receive copies unless `excludeNamespaces` is set explicitly.
pub const DEFAULT_EXCLUDED_NAMESPACES: [&str; 3] =
    ["kube-system", "kube-public", "kube-node-lease"];
/// A namespace with this label set to `"false"` never receives copies or injections.
pub const OPT_OUT_LABEL: &str = "wharf.dev/pull-credentials";

/// Registry credentials distributed to namespaces and injected into pods.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wharf.dev",
    version = "v1alpha1",
    kind = "ImagePullCredential",
    status = "ImagePullCredentialStatus",
    shortname = "ipc",
    category = "wharf",
    cel,
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 58")
        .message("an ImagePullCredential name has only lowercase letters, digits and '-', and at most 58 characters: it names a label value and a robot account"),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.inject.mode"}"#,
    printcolumn = r#"{"name":"Matched","type":"integer","jsonPath":".status.namespaces.matched"}"#,
    printcolumn = r#"{"name":"Synced","type":"integer","jsonPath":".status.namespaces.synced"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.namespaces.failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.namespaceSelector) || has(self.namespaces)")
    .message("choose target namespaces with namespaceSelector ({} selects all), namespaces, or both"))]
#[serde(rename_all = "camelCase")]
pub struct ImagePullCredentialSpec {
    /// Where the credential comes from.
    pub source: CredentialSource,
    /// Name of the Secret in each namespace (default: the ImagePullCredential's name).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$') && self.size() <= 253")
        .message("secretName must be a DNS subdomain: lowercase letters, digits, '-' and '.'"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Namespaces whose labels match; `{}` selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces by name, in addition to those the selector matches.
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))")
        .message("namespaces must be namespace names (DNS labels)"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "namespace_names")]
    pub namespaces: Option<Vec<String>>,
    /// Namespaces never targeted (default: kube-system, kube-public, kube-node-lease). A
    /// namespace labelled `wharf.dev/pull-credentials: "false"` is always excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_namespaces: Option<Vec<String>>,
    /// How the Secret reaches pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<InjectSpec>,
    /// How often a minted credential is renewed (Go duration, at least 30s; default 1h). The
    /// credential lives twice as long, so copies are always refreshed well before it expires.
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$') && duration(self) >= duration('30s')")
        .message("refreshInterval must be a duration like 30m or 1h30m, at least 30s"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// What happens to the copies when this object is deleted (default Delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<CredentialDeletionPolicy>,
}

/// Exactly one source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.registryRef) != has(self.secretRef)")
    .message("source needs exactly one of registryRef or secretRef"))]
#[serde(rename_all = "camelCase")]
pub struct CredentialSource {
    /// A wharf Registry: the operator mints a robot account limited to `repositories`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_ref: Option<RegistrySource>,
    /// An existing `kubernetes.io/dockerconfigjson` Secret, copied as is and re-synced on change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<NamespacedName>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySource {
    /// Namespace of the Registry.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.size() <= 63").message("namespace must be a namespace name"))]
    pub namespace: String,
    /// Name of the Registry.
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("name has 1 to 253 characters"))]
    pub name: String,
    /// Repositories the credential may pull, as globs (`team-a/**`; default: all).
    #[x_kube(validation = Rule::new("self.all(r, r.matches('^[a-z0-9._/*?-]+$'))")
        .message("repositories are globs of lowercase repository-name characters, '/', '*' and '?'"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "repository_globs")]
    pub repositories: Option<Vec<String>>,
    /// More registry hosts (`host[:port]`) that pods name in image references, such as a NodePort
    /// address or a mirror; the Service's names, its cluster IP and the Ingress host are included
    /// anyway.
    #[x_kube(validation = Rule::new("self.all(h, h.matches('^[a-zA-Z0-9.:-]+$'))")
        .message("hosts are host or host:port, without a scheme or path"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "host_names")]
    pub hosts: Option<Vec<String>>,
    /// What the credential may do. Only `Pull`: pods only ever pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<CredentialAccess>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum CredentialAccess {
    #[default]
    Pull,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct NamespacedName {
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.size() <= 63").message("namespace must be a namespace name"))]
    pub namespace: String,
    #[x_kube(validation = Rule::new("self.size() > 0 && self.size() <= 253").message("name has 1 to 253 characters"))]
    pub name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.serviceAccounts) || (has(self.mode) && self.mode == 'ServiceAccount')")
    .message("serviceAccounts only applies to mode ServiceAccount"))]
#[serde(rename_all = "camelCase")]
pub struct InjectSpec {
    /// PodWebhook (default): new Pods in target namespaces get the Secret in imagePullSecrets.
    /// ServiceAccount: the named ServiceAccounts list it. None: only the Secrets are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<InjectMode>,
    /// ServiceAccounts to patch in ServiceAccount mode (default: `default`).
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'))")
        .message("serviceAccounts must be ServiceAccount names"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "service_account_names")]
    pub service_accounts: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum InjectMode {
    #[default]
    PodWebhook,
    ServiceAccount,
    None,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum CredentialDeletionPolicy {
    #[default]
    Delete,
    Orphan,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullCredentialStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `sha256:` of the credential being distributed (changes on every rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespaceCounts>,
    /// Up to 10 namespaces that could not be synced, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<NamespaceFailure>,
    /// When the minted credential expires (registry sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_expires_at: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct NamespaceCounts {
    pub matched: i32,
    pub synced: i32,
    pub failed: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct NamespaceFailure {
    pub namespace: String,
    pub reason: String,
    pub message: String,
}

fn namespace_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_strings(1000, 63)
}

fn repository_globs(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_strings(100, 256)
}

fn host_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_strings(50, 260)
}

fn service_account_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_strings(50, 253)
}

impl ImagePullCredentialSpec {
    pub fn mode(&self) -> InjectMode {
        self.inject
            .as_ref()
            .and_then(|i| i.mode)
            .unwrap_or_default()
    }

    pub fn service_accounts(&self) -> Vec<String> {
        self.inject
            .as_ref()
            .and_then(|i| i.service_accounts.clone())
            .unwrap_or_else(|| vec!["default".into()])
    }

    pub fn excluded(&self) -> Vec<String> {
        self.exclude_namespaces.clone().unwrap_or_else(|| {
            DEFAULT_EXCLUDED_NAMESPACES
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::common::cel_table::{assert_cases, verdict};
    use serde_json::{Value, json};

    fn check_named(name: &str, spec: Value) -> Result<(), String> {
        verdict::<ImagePullCredential>(json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "ImagePullCredential",
            "metadata": {"name": name}, "spec": spec,
        }))
    }

    fn check(spec: Value) -> Result<(), String> {
        check_named("corp", spec)
    }

    #[test]
    fn cel_rules_accept_good_specs_and_explain_bad_ones() {
        let reg = json!({"registryRef": {"namespace": "registry", "name": "main", "repositories": ["team-a/**"]}});
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            (
                "registry source, selector",
                json!({"source": reg, "namespaceSelector": {"matchLabels": {"a": "b"}}}),
                None,
            ),
            (
                "secret source, names",
                json!({"source": {"secretRef": {"namespace": "ops", "name": "pull"}}, "namespaces": ["payments"]}),
                None,
            ),
            (
                "all namespaces",
                json!({"source": reg, "namespaceSelector": {}}),
                None,
            ),
            (
                "no target",
                json!({"source": reg}),
                Some("choose target namespaces"),
            ),
            (
                "two sources",
                json!({"source": {"registryRef": {"namespace": "r", "name": "m"}, "secretRef": {"namespace": "o", "name": "p"}}, "namespaces": ["a"]}),
                Some("exactly one of registryRef or secretRef"),
            ),
            (
                "no source",
                json!({"source": {}, "namespaces": ["a"]}),
                Some("exactly one of registryRef or secretRef"),
            ),
            (
                "bad namespace",
                json!({"source": reg, "namespaces": ["Team_A"]}),
                Some("namespace names"),
            ),
            (
                "bad secretName",
                json!({"source": reg, "namespaces": ["a"], "secretName": "Pull_Secret"}),
                Some("DNS subdomain"),
            ),
            (
                "service accounts in SA mode",
                json!({"source": reg, "namespaces": ["a"], "inject": {"mode": "ServiceAccount", "serviceAccounts": ["default", "builder"]}}),
                None,
            ),
            (
                "service accounts in webhook mode",
                json!({"source": reg, "namespaces": ["a"], "inject": {"mode": "PodWebhook", "serviceAccounts": ["default"]}}),
                Some("serviceAccounts only applies to mode ServiceAccount"),
            ),
            (
                "refresh 30m",
                json!({"source": reg, "namespaces": ["a"], "refreshInterval": "30m"}),
                None,
            ),
            (
                "refresh 10s",
                json!({"source": reg, "namespaces": ["a"], "refreshInterval": "10s"}),
                Some("at least 30s"),
            ),
            (
                "refresh in days",
                json!({"source": reg, "namespaces": ["a"], "refreshInterval": "1d"}),
                Some("refreshInterval must be a duration"),
            ),
            (
                "hosts",
                json!({"source": {"registryRef": {"namespace": "r", "name": "m", "hosts": ["10.0.0.1:30500", "mirror.local"]}}, "namespaces": ["a"]}),
                None,
            ),
            (
                "host with scheme",
                json!({"source": {"registryRef": {"namespace": "r", "name": "m", "hosts": ["https://x"]}}, "namespaces": ["a"]}),
                Some("without a scheme"),
            ),
            (
                "bad repository glob",
                json!({"source": {"registryRef": {"namespace": "r", "name": "m", "repositories": ["Team A"]}}, "namespaces": ["a"]}),
                Some("repositories are globs"),
            ),
        ];
        assert_cases(cases, check);
        let long = "x".repeat(59);
        assert!(
            check_named(&long, json!({"source": reg, "namespaces": ["a"]}))
                .unwrap_err()
                .contains("at most 58")
        );
        assert!(check_named("Corp", json!({"source": reg, "namespaces": ["a"]})).is_err());
    }

    #[test]
    fn defaults() {
        let spec: ImagePullCredentialSpec = serde_json::from_value(
            json!({"source": {"secretRef": {"namespace": "o", "name": "p"}}, "namespaces": ["a"]}),
        )
        .unwrap();
        assert_eq!(spec.mode(), InjectMode::PodWebhook);
        assert_eq!(spec.service_accounts(), ["default"]);
        assert_eq!(spec.excluded(), DEFAULT_EXCLUDED_NAMESPACES);
    }
}
