//! `spec.nodeAccess`: a DaemonSet running `wharf node-config` on every node, and the ConfigMap
//! that tells it which containerd host configuration to write (see `src/node/`). The names images
//! use (`<name>.<namespace>.svc:<port>`, its `.cluster.local` form, and the cluster IP) all point
//! containerd at the Service's cluster IP, which a node reaches through kube-proxy, where it
//! could not resolve the `.svc` name.

use super::{image, meta};
use crate::crd::registry::Registry;
use crate::node::hosts::{Capability, Host, HostNamespace, NodeHosts};
use crate::operator::registry::names::{CONFIG_HASH_ANNOTATION, ChildNames, MANAGED_BY};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, HostPathVolumeSource, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const NODE_ACCESS_COMPONENT: &str = "node-access";
pub const DEFAULT_CERTS_DIR: &str = "/etc/containerd/certs.d";
const CONFIG_DIR: &str = "/etc/wharf/node";
const MOUNTED_CERTS_DIR: &str = "/host/certs.d";

/// Selector labels of the node agent's pods: not `component=registry`, so the Service never
/// sends them traffic.
pub fn node_access_selector(registry: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "wharf".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), registry.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            NODE_ACCESS_COMPONENT.to_owned(),
        ),
    ])
}

pub fn node_access_name(registry: &str) -> String {
    format!("{registry}-node-access")
}

/// `host:port`, with brackets for an IPv6 address.
fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What every node needs: each name the Registry is known by, pointing at the cluster IP.
/// `ca_pem` is the CA to trust (the operator's, with `tls.selfSigned`); without it, a TLS
/// Registry's certificate must chain to the nodes' own trust store.
pub fn node_hosts(registry: &Registry, cluster_ip: &str, ca_pem: Option<&str>) -> NodeHosts {
    let name = registry.name_any();
    let namespace = registry.namespace().unwrap_or_default();
    let port = super::service_port(registry);
    let scheme = if registry.spec.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let target = format!("{scheme}://{}", host_port(cluster_ip, port));
    let names = [
        format!("{name}.{namespace}.svc:{port}"),
        format!("{name}.{namespace}.svc.cluster.local:{port}"),
        host_port(cluster_ip, port),
    ];
    NodeHosts {
        owner: format!("{namespace}/{name}"),
        namespaces: names
            .into_iter()
            .map(|n| HostNamespace {
                name: n,
                server: target.clone(),
                hosts: vec![Host {
                    url: target.clone(),
                    capabilities: vec![Capability::Pull, Capability::Resolve],
                    ca_pem: ca_pem.filter(|_| scheme == "https").map(str::to_owned),
                }],
            })
            .collect(),
    }
}

fn certs_dir(registry: &Registry) -> String {
    registry
        .spec
        .node_access
        .as_ref()
        .and_then(|n| n.certs_dir.clone())
        .unwrap_or_else(|| DEFAULT_CERTS_DIR.to_owned())
}

/// The ConfigMap and DaemonSet, or None without `spec.nodeAccess`.
pub fn node_access(
    registry: &Registry,
    owner: &OwnerReference,
    default_image: &str,
    hosts: &NodeHosts,
) -> Option<(ConfigMap, DaemonSet)> {
    registry.spec.node_access.as_ref()?;
    let name = registry.name_any();
    let object_name = node_access_name(&name);
    let config_text = serde_json::to_string_pretty(hosts).unwrap_or_default();
    let mut labels = node_access_selector(&name);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGED_BY.to_owned(),
    );
    let with_labels = |mut m: ObjectMeta| {
        m.labels = Some(labels.clone());
        m
    };
    let config = ConfigMap {
        metadata: with_labels(meta(registry, owner, object_name.clone())),
        data: Some(BTreeMap::from([(
            "hosts.json".to_owned(),
            config_text.clone(),
        )])),
        ..ConfigMap::default()
    };
    let host_dir = certs_dir(registry);
    let (image, pull_policy) = image(registry, default_image);
    let container = Container {
        name: "node-config".into(),
        image: Some(image),
        image_pull_policy: Some(pull_policy),
        args: Some(vec![
            "node-config".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/hosts.json"),
            "--certs-dir".into(),
            MOUNTED_CERTS_DIR.into(),
            "--host-certs-dir".into(),
            host_dir.clone(),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("5m".into())),
                ("memory".to_owned(), Quantity("8Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("32Mi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        // Root, because containerd's directory belongs to root; nothing else: no capability
        // (owner permissions suffice), a read-only image, one hostPath.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "certs".into(),
                mount_path: MOUNTED_CERTS_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let hash = hex::encode(&Sha256::digest(config_text.as_bytes())[..16]);
    let daemon_set = DaemonSet {
        metadata: with_labels(meta(registry, owner, object_name.clone())),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(node_access_selector(&name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), hash)])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(ChildNames::new(&name).workload()),
                    automount_service_account_token: Some(false),
                    // Every node pulls, control-plane and tainted ones too.
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Toleration::default()
                    }]),
                    termination_grace_period_seconds: Some(15),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: object_name,
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "certs".into(),
                            host_path: Some(HostPathVolumeSource {
                                path: host_dir,
                                type_: Some("DirectoryOrCreate".into()),
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    };
    Some((config, daemon_set))
}
