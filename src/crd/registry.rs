//! The `Registry` kind: a wharf registry server the operator deploys and runs.

use super::common::LocalObjectReference;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A container registry served by wharf: its workload, storage, access and exposure.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "wharf.dev",
    version = "v1alpha1",
    kind = "Registry",
    namespaced,
    status = "RegistryStatus",
    shortname = "reg",
    category = "wharf",
    cel,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 52")
        .message("a Registry name starts with a letter, has only lowercase letters, digits and '-', and at most 52 characters: it names the Service and StatefulSet"),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.replicas) || self.replicas <= 1 || has(self.storage.s3)")
    .message("replicas above 1 need storage.s3: a persistent volume or an emptyDir belongs to a single pod"))]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Number of registry pods (default 1). More than one needs shared storage (`storage.s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 20))]
    pub replicas: Option<i32>,
    /// Overrides the registry image; by default the operator runs its own image and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
    /// Where blobs and manifests are stored: exactly one of `persistentVolume`, `emptyDir`, `s3`.
    pub storage: StorageSpec,
    /// Who may pull and push. An admin credential is always generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Serve HTTPS: exactly one of `secretRef` or `selfSigned`. Without it, plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// How the registry is exposed inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// Expose the registry outside the cluster through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Scheduled garbage collection of unreferenced blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garbage_collection: Option<GarbageCollectionSpec>,
    /// CPU and memory for each registry pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Let this cluster's own nodes pull from the Registry: a DaemonSet writes containerd's
    /// `hosts.toml` (and the CA, with `tls.selfSigned`) for the Registry's Service names, which
    /// containerd on a node can neither resolve nor trust by itself. Needs containerd with
    /// `config_path` set and a namespace that allows hostPath volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_access: Option<NodeAccessSpec>,
}

/// How the Registry's node access reaches containerd on the nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeAccessSpec {
    /// containerd's registry configuration directory on the nodes (its CRI `registry.config_path`;
    /// default `/etc/containerd/certs.d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.contains('..')").message("certsDir must be an absolute path on the node, such as /etc/containerd/certs.d"))]
    pub certs_dir: Option<String>,
}

/// The container image of the registry pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository, e.g. `ghcr.io/example/wharf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Image tag or `@sha256:` digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// When the kubelet pulls the image (default IfNotPresent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

/// Kubernetes image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Storage backends; exactly one is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("(has(self.persistentVolume) ? 1 : 0) + (has(self.emptyDir) ? 1 : 0) + (has(self.s3) ? 1 : 0) == 1")
    .message("storage needs exactly one of persistentVolume, emptyDir or s3"))]
#[x_kube(validation = Rule::new("has(self.persistentVolume) == has(oldSelf.persistentVolume) && has(self.emptyDir) == has(oldSelf.emptyDir) && has(self.s3) == has(oldSelf.s3)")
    .message("the storage backend cannot change after creation: create a new Registry and copy the images over"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// A PersistentVolumeClaim per pod (the registry runs as a StatefulSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume: Option<PersistentVolumeStorage>,
    /// Scratch storage that disappears with the pod: for development and tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirStorage>,
    /// An S3-compatible object store shared by every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
}

/// Storage on a PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("self.size == oldSelf.size && (has(self.storageClassName) ? has(oldSelf.storageClassName) && self.storageClassName == oldSelf.storageClassName : !has(oldSelf.storageClassName))")
    .message("persistentVolume size and storageClassName cannot change after creation: the StatefulSet's volume claim is fixed"))]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeStorage {
    /// Requested capacity, e.g. `50Gi`.
    pub size: Quantity,
    /// StorageClass of the claim; the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to the volume when the Registry is deleted (default Retain: data is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<VolumeDeletionPolicy>,
}

/// Whether a Registry's volume outlives it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeDeletionPolicy {
    Retain,
    Delete,
}

/// Storage on an emptyDir volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirStorage {
    /// Upper bound on the volume's size, e.g. `5Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

/// Storage in an S3-compatible bucket, shared by every replica: the registry keeps no state of
/// its own, so `replicas` can be raised freely.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Bucket name. The bucket must exist: the registry does not create it.
    #[x_kube(validation = Rule::new("self.size() >= 3 && self.size() <= 63").message("a bucket name has 3 to 63 characters"))]
    pub bucket: String,
    /// Key prefix inside the bucket, so that several registries can share one bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..') && self.size() <= 200").message("prefix is a relative key path without '..'"))]
    pub prefix: Option<String>,
    /// Region of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores (MinIO, Ceph RGW, Garage); AWS when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Address buckets by path rather than by host name (most self-hosted stores need this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Secret with `accessKeyId` and `secretAccessKey`. Unset: the pods' ambient credentials
    /// (IAM roles for service accounts, instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// Secret with `ca.crt`: the CA bundle the endpoint's certificate is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectReference>,
    /// Answer blob downloads with a redirect to a presigned URL of the bucket, so that layers do
    /// not flow through the registry pods (clients must be able to reach the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<bool>,
}

/// Access control.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Let clients without credentials pull (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_pull: Option<bool>,
    /// Secret with an `htpasswd` key of extra users (bcrypt entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd_secret_ref: Option<LocalObjectReference>,
}

/// Serving certificate; exactly one source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.selfSigned)")
    .message("tls needs exactly one of secretRef or selfSigned"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret (for example from cert-manager); reloaded when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// A certificate from the operator's own CA, published in the ConfigMap `<name>-ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signed: Option<SelfSigned>,
}

/// Marker for operator-issued certificates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SelfSigned {}

/// The registry's Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.nodePort) || (has(self.type) && (self.type == 'NodePort' || self.type == 'LoadBalancer'))")
    .message("nodePort needs service type NodePort or LoadBalancer"))]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type (default ClusterIP).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// Service port (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Fixed node port for NodePort and LoadBalancer services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
    /// Annotations for the Service (load balancer settings and the like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Kubernetes Service types the registry supports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// An Ingress in front of the registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass to use; the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Host name clients use, e.g. `registry.example.com`.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("host must be a DNS name such as registry.example.com"))]
    pub host: String,
    /// `kubernetes.io/tls` Secret for the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_ref: Option<LocalObjectReference>,
    /// Annotations for the Ingress (body size limits, timeouts, cert-manager issuers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// When and how garbage collection runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollectionSpec {
    /// Cron schedule, 5 fields (`0 3 * * *`) or a macro such as `@daily`.
    #[x_kube(validation = Rule::new("self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$')")
        .message("schedule must be a cron expression with 5 fields, such as \"0 3 * * *\", or a macro such as @daily"))]
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Europe/Berlin` (default: the controller manager's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Blobs younger than this are never collected (default 2h), so pushes in flight are safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h|d))+$')").message("minBlobAge must be a duration such as 90m, 2h or 7d"))]
    pub min_blob_age: Option<String>,
    /// Also delete manifests no tag points to (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_untagged: Option<bool>,
    /// Pause scheduled runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// What the operator observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` always; `Reconciling` while work is pending; `Stalled` when only a spec change can help.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// In-cluster address clients push to, `<service>.<namespace>.svc:<port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Address outside the cluster, when exposed by Ingress or NodePort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_endpoint: Option<String>,
    /// Registry pods passing their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Secret holding the generated admin credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_credentials_secret_ref: Option<LocalObjectReference>,
    /// The most recent garbage collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_garbage_collection: Option<GarbageCollectionRun>,
    /// Where the nodes' containerd is configured to pull from the Registry (`spec.nodeAccess`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_access: Option<NodeAccessStatus>,
}

/// What the node access DaemonSet has done.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeAccessStatus {
    /// The registry host names images can use on the nodes, e.g. `main.registry.svc:5000/app:1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Nodes that should have the configuration.
    pub nodes: i32,
    /// Nodes whose agent has written it and runs.
    pub configured: i32,
}

/// Result of one garbage collection run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollectionRun {
    /// The Job that ran it.
    pub job_name: String,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Blobs deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobs_deleted: Option<i64>,
    /// Bytes freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<i64>,
    /// Whether the run succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::{Value, json};

    /// Evaluates the CRD's CEL rules on a spec the way the API server would, offline.
    fn check(spec: Value) -> Result<(), String> {
        let registry: Registry = serde_json::from_value(json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "r", "namespace": "ns"}, "spec": spec,
        }))
        .map_err(|e| format!("does not deserialize: {e}"))?;
        registry.validate_cel().map_err(|e| e.to_string())
    }

    #[test]
    fn cel_rules_accept_good_specs_and_explain_bad_ones() {
        let empty_dir = json!({"emptyDir": {}});
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            ("minimal", json!({"storage": empty_dir}), None),
            (
                "persistent volume",
                json!({"storage": {"persistentVolume": {"size": "10Gi"}}}),
                None,
            ),
            (
                "no storage backend",
                json!({"storage": {}}),
                Some("exactly one of persistentVolume, emptyDir or s3"),
            ),
            (
                "two storage backends",
                json!({"storage": {"emptyDir": {}, "persistentVolume": {"size": "1Gi"}}}),
                Some("exactly one of persistentVolume, emptyDir or s3"),
            ),
            (
                "two replicas on a volume",
                json!({"replicas": 2, "storage": {"persistentVolume": {"size": "1Gi"}}}),
                Some("replicas above 1 need storage.s3"),
            ),
            (
                "two replicas on s3",
                json!({"replicas": 2, "storage": {"s3": {"bucket": "oci", "credentialsSecretRef": {"name": "s3"}}}}),
                None,
            ),
            (
                "one replica on a volume",
                json!({"replicas": 1, "storage": {"persistentVolume": {"size": "1Gi"}}}),
                None,
            ),
            (
                "s3 with ambient credentials, a prefix and a CA",
                json!({"storage": {"s3": {"bucket": "oci", "prefix": "team/a", "caSecretRef": {"name": "ca"}, "redirect": true}}}),
                None,
            ),
            (
                "s3 prefix climbing out",
                json!({"storage": {"s3": {"bucket": "oci", "prefix": "../other"}}}),
                Some("prefix is a relative key path without '..'"),
            ),
            (
                "s3 endpoint not a URL",
                json!({"storage": {"s3": {"bucket": "oci", "endpoint": "minio:9000", "credentialsSecretRef": {"name": "s3"}}}}),
                Some("endpoint must be an http:// or https:// URL"),
            ),
            (
                "tls from a secret",
                json!({"storage": empty_dir, "tls": {"secretRef": {"name": "tls"}}}),
                None,
            ),
            (
                "tls self-signed",
                json!({"storage": empty_dir, "tls": {"selfSigned": {}}}),
                None,
            ),
            (
                "tls both",
                json!({"storage": empty_dir, "tls": {"secretRef": {"name": "tls"}, "selfSigned": {}}}),
                Some("tls needs exactly one of secretRef or selfSigned"),
            ),
            (
                "tls neither",
                json!({"storage": empty_dir, "tls": {}}),
                Some("tls needs exactly one of secretRef or selfSigned"),
            ),
            (
                "node access with the default directory",
                json!({"storage": empty_dir, "nodeAccess": {}}),
                None,
            ),
            (
                "node access in another directory",
                json!({"storage": empty_dir, "nodeAccess": {"certsDir": "/var/lib/containerd/certs.d"}}),
                None,
            ),
            (
                "node access with a relative directory",
                json!({"storage": empty_dir, "nodeAccess": {"certsDir": "certs.d"}}),
                Some("certsDir must be an absolute path on the node"),
            ),
            (
                "node access climbing out",
                json!({"storage": empty_dir, "nodeAccess": {"certsDir": "/etc/containerd/../.."}}),
                Some("certsDir must be an absolute path on the node"),
            ),
            (
                "node port on NodePort",
                json!({"storage": empty_dir, "service": {"type": "NodePort", "nodePort": 30500}}),
                None,
            ),
            (
                "node port on ClusterIP",
                json!({"storage": empty_dir, "service": {"type": "ClusterIP", "nodePort": 30500}}),
                Some("nodePort needs service type NodePort or LoadBalancer"),
            ),
            (
                "node port without a type",
                json!({"storage": empty_dir, "service": {"nodePort": 30500}}),
                Some("nodePort needs service type NodePort or LoadBalancer"),
            ),
            (
                "ingress host",
                json!({"storage": empty_dir, "ingress": {"host": "registry.example.com"}}),
                None,
            ),
            (
                "ingress host not DNS",
                json!({"storage": empty_dir, "ingress": {"host": "Registry_Example"}}),
                Some("host must be a DNS name"),
            ),
            (
                "gc cron",
                json!({"storage": empty_dir, "garbageCollection": {"schedule": "0 3 * * *", "minBlobAge": "2h"}}),
                None,
            ),
            (
                "gc macro",
                json!({"storage": empty_dir, "garbageCollection": {"schedule": "@daily"}}),
                None,
            ),
            (
                "gc cron with 4 fields",
                json!({"storage": empty_dir, "garbageCollection": {"schedule": "0 3 * *"}}),
                Some("schedule must be a cron expression with 5 fields"),
            ),
            (
                "gc bad duration",
                json!({"storage": empty_dir, "garbageCollection": {"schedule": "@daily", "minBlobAge": "2 hours"}}),
                Some("minBlobAge must be a duration"),
            ),
            (
                "empty secret name",
                json!({"storage": empty_dir, "tls": {"secretRef": {"name": ""}}}),
                Some("a name has 1 to 253 characters"),
            ),
        ];
        for (name, spec, want) in cases {
            let got = check(spec);
            match (want, &got) {
                (None, Ok(())) => {}
                (Some(message), Err(e)) => {
                    assert!(e.contains(message), "{name}: expected {message:?}, got {e}")
                }
                _ => panic!("{name}: expected {want:?}, got {got:?}"),
            }
        }
    }

    fn registry(name: &str, spec: Value) -> Registry {
        serde_json::from_value(json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": name, "namespace": "ns"}, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn names_must_fit_the_children_they_name() {
        let spec = json!({"storage": {"emptyDir": {}}});
        for (name, ok) in [
            ("main", true),
            ("a-1", true),
            (&"a".repeat(52), true),
            (&"a".repeat(53), false),
            ("1main", false),
            ("main.example", false),
            ("main-", false),
        ] {
            let got = registry(name, spec.clone()).validate_cel();
            assert_eq!(got.is_ok(), ok, "{name}: {got:?}");
            if let Err(e) = got {
                assert!(
                    e.to_string()
                        .contains("a Registry name starts with a letter"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn storage_is_fixed_after_creation() {
        let pv = |size: &str, class: Option<&str>| {
            let mut v = json!({"size": size});
            if let Some(c) = class {
                v["storageClassName"] = json!(c);
            }
            registry("r", json!({"storage": {"persistentVolume": v}}))
        };
        let empty = registry("r", json!({"storage": {"emptyDir": {}}}));
        let cases = [
            (
                "same volume",
                pv("1Gi", Some("fast")),
                pv("1Gi", Some("fast")),
                None,
            ),
            (
                "deletion policy may change",
                registry(
                    "r",
                    json!({"storage": {"persistentVolume": {"size": "1Gi", "deletionPolicy": "Delete"}}}),
                ),
                pv("1Gi", None),
                None,
            ),
            (
                "bigger volume",
                pv("2Gi", None),
                pv("1Gi", None),
                Some("cannot change after creation"),
            ),
            (
                "new class",
                pv("1Gi", Some("slow")),
                pv("1Gi", Some("fast")),
                Some("cannot change after creation"),
            ),
            (
                "class added",
                pv("1Gi", Some("fast")),
                pv("1Gi", None),
                Some("cannot change after creation"),
            ),
            (
                "volume to emptyDir",
                empty.clone(),
                pv("1Gi", None),
                Some("the storage backend cannot change"),
            ),
            (
                "emptyDir to volume",
                pv("1Gi", None),
                empty.clone(),
                Some("the storage backend cannot change"),
            ),
        ];
        for (name, new, old, want) in cases {
            let got = new.validate_cel_update(&old);
            match want {
                None => assert!(got.is_ok(), "{name}: {got:?}"),
                Some(m) => {
                    let e = got.expect_err(name).to_string();
                    assert!(e.contains(m), "{name}: {e}");
                }
            }
        }
    }

    #[test]
    fn crd_metadata_for_kubectl_and_gitops() {
        let crd = Registry::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["reg".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["wharf".to_string()]));
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "status subresource"
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Ready", "Endpoint", "Replicas", "Age"]);
        // Every property carries a description, so `kubectl explain` reads well.
        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let mut missing = Vec::new();
        undocumented(&schema["properties"]["spec"], "spec", &mut missing);
        undocumented(&schema["properties"]["status"], "status", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }

    fn undocumented(schema: &Value, path: &str, missing: &mut Vec<String>) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            // k8s-openapi's own types (resources, conditions) document themselves upstream.
            if prop.get("description").is_none() {
                missing.push(here.clone());
            }
            if !matches!(name.as_str(), "resources" | "conditions") {
                undocumented(prop, &here, missing);
                if let Some(items) = prop.get("items") {
                    undocumented(items, &here, missing);
                }
            }
        }
    }
}
