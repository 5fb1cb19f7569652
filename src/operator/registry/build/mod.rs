//! Build: everything a Registry owns, as objects, from the Registry and the prepared secrets.
//! Pure (no API calls, no clock, no randomness), so every choice here is unit-tested offline and a
//! second pass with the same inputs yields the same objects, which is what lets apply write
//! nothing when nothing changed.

mod gc_job;
mod node_access;

pub use gc_job::{
    GC_COMPONENT, cron_job_name, env, env_from_secret, gc_labels, gc_pod, job_pod, registry_ca,
    registry_url,
};
pub use node_access::{NODE_ACCESS_COMPONENT, node_access_name, node_access_selector, node_hosts};

use super::credentials::{AdminCredentials, PASSWORD_SHA256_ANNOTATION};
use super::names::*;
use super::tls::{DNS_NAMES_ANNOTATION, NOT_AFTER_ANNOTATION, SelfSignedTls};
use crate::crd::registry::{PullPolicy, Registry, ServiceType, VolumeDeletionPolicy};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const CONFIG_DIR: &str = "/etc/wharf/config";
const ADMIN_HTPASSWD_DIR: &str = "/etc/wharf/auth/admin";
const USERS_HTPASSWD_DIR: &str = "/etc/wharf/auth/users";
const TLS_DIR: &str = "/etc/wharf/tls";
const DATA_DIR: &str = "/var/lib/wharf";
const S3_CA_DIR: &str = "/etc/wharf/s3-ca";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("the Registry has no namespace or uid yet")]
    Incomplete,
}

pub struct BuildInputs<'a> {
    pub registry: &'a Registry,
    /// The image the operator itself runs, used unless `spec.image` overrides it.
    pub default_image: &'a str,
    /// Where the registry reports pushes (the operator's events endpoint), if anywhere.
    pub events_url: Option<&'a str>,
    pub admin: &'a AdminCredentials,
    /// Present when `spec.tls.selfSigned` is set.
    pub self_signed: Option<&'a SelfSignedTls>,
    /// The Service's cluster IP, once it has one: node access points containerd at it.
    pub cluster_ip: Option<&'a str>,
}

/// What `spec.nodeAccess` deploys.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAccessChildren {
    pub config: ConfigMap,
    pub daemon_set: k8s_openapi::api::apps::v1::DaemonSet,
    /// The host names the nodes can pull from.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
}

/// Every object a Registry owns. `None` members are pruned if they exist from an earlier spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub service_account: ServiceAccount,
    pub config: ConfigMap,
    pub admin_secret: Secret,
    pub htpasswd_secret: Secret,
    pub ca_secret: Option<Secret>,
    pub ca_config_map: Option<ConfigMap>,
    pub tls_secret: Option<Secret>,
    pub workload: Workload,
    pub service: Service,
    pub ingress: Option<Ingress>,
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// `spec.garbageCollection`'s schedule.
    pub gc_cron_job: Option<k8s_openapi::api::batch::v1::CronJob>,
    /// `spec.nodeAccess`, once the Service has a cluster IP.
    pub node_access: Option<NodeAccessChildren>,
}

/// DNS names the serving certificate must cover: the Service's names, the Ingress host,
/// localhost for `kubectl port-forward`, and the cluster IP once known (nodes' containerd pulls
/// by it: it cannot resolve the Service's name).
pub fn dns_names(registry: &Registry, cluster_ip: Option<&str>) -> Vec<String> {
    let name = registry.name_any();
    let namespace = registry.namespace().unwrap_or_default();
    let mut names = vec![
        name.clone(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ];
    if let Some(ingress) = &registry.spec.ingress {
        names.push(ingress.host.clone());
    }
    names.push("localhost".into());
    names.push("127.0.0.1".into());
    names.extend(cluster_ip.map(str::to_owned));
    names
}

pub fn service_port(registry: &Registry) -> i32 {
    registry
        .spec
        .service
        .as_ref()
        .and_then(|s| s.port)
        .unwrap_or(DEFAULT_SERVICE_PORT)
}

/// `<service>.<namespace>.svc:<port>`
pub fn endpoint(registry: &Registry) -> String {
    format!(
        "{}.{}.svc:{}",
        registry.name_any(),
        registry.namespace().unwrap_or_default(),
        service_port(registry)
    )
}

pub fn replicas(registry: &Registry) -> i32 {
    registry.spec.replicas.unwrap_or(1)
}

fn meta(registry: &Registry, owner: &OwnerReference, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: registry.namespace(),
        labels: Some(labels(&registry.name_any())),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn bytes(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

fn tls_enabled(registry: &Registry) -> bool {
    registry.spec.tls.is_some()
}

fn user_htpasswd_secret(registry: &Registry) -> Option<String> {
    registry
        .spec
        .auth
        .as_ref()?
        .htpasswd_secret_ref
        .as_ref()
        .map(|r| r.name.clone())
}

/// The Secret holding the serving certificate: the user's, or the operator's `<name>-tls`.
fn serving_secret(registry: &Registry) -> Option<String> {
    let tls = registry.spec.tls.as_ref()?;
    match &tls.secret_ref {
        Some(r) => Some(r.name.clone()),
        None => Some(ChildNames::new(&registry.name_any()).tls_secret()),
    }
}

/// The registry's own configuration file (see `src/registry/config.rs`). With `events_url`,
/// pushes are reported to `<events_url>/events/<namespace>/<name>`, with the token in the
/// htpasswd Secret.
pub fn registry_config(registry: &Registry, events_url: Option<&str>) -> String {
    let mut htpasswd = vec![format!("{ADMIN_HTPASSWD_DIR}/htpasswd")];
    if user_htpasswd_secret(registry).is_some() {
        htpasswd.push(format!("{USERS_HTPASSWD_DIR}/htpasswd"));
    }
    let anonymous_pull = registry
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.anonymous_pull)
        .unwrap_or(false);
    let storage = match &registry.spec.storage.s3 {
        // Credentials are not in the file: they reach the pod as environment variables from
        // the user's Secret (see `s3_env`).
        Some(s3) => {
            let mut s3_config = serde_json::json!({
                "bucket": s3.bucket,
                "pathStyle": s3.force_path_style.unwrap_or(false),
                "redirect": s3.redirect.unwrap_or(false),
            });
            for (key, value) in [
                ("prefix", &s3.prefix),
                ("region", &s3.region),
                ("endpoint", &s3.endpoint),
            ] {
                if let Some(v) = value {
                    s3_config[key] = serde_json::json!(v);
                }
            }
            if s3.ca_secret_ref.is_some() {
                s3_config["caBundle"] = serde_json::json!(format!("{S3_CA_DIR}/ca.crt"));
            }
            serde_json::json!({"s3": s3_config})
        }
        None => serde_json::json!({"filesystem": {"root": DATA_DIR}}),
    };
    let mut config = serde_json::json!({
        "listen": format!(":{CONTAINER_PORT}"),
        "storage": storage,
        "auth": {
            "htpasswd": htpasswd,
            "realm": registry.name_any(),
            "anonymousPull": anonymous_pull,
            // Docker token auth: clients trade credentials for short-lived scoped tokens; the
            // signing key lives in the registry's storage, shared by whatever shares that.
            "token": {
                "enabled": true,
                "service": format!("{}.{}", registry.name_any(), registry.namespace().unwrap_or_default()),
            },
        },
        "log": {"format": "json"},
    });
    if let Some(url) = events_url {
        config["notifications"] = serde_json::json!({"endpoints": [{
            "name": "operator",
            "url": format!(
                "{}/events/{}/{}",
                url.trim_end_matches('/'),
                registry.namespace().unwrap_or_default(),
                registry.name_any()
            ),
            "tokenFile": format!("{ADMIN_HTPASSWD_DIR}/events-token"),
        }]});
    }
    if tls_enabled(registry) {
        config["tls"] = serde_json::json!({
            "certFile": format!("{TLS_DIR}/tls.crt"),
            "keyFile": format!("{TLS_DIR}/tls.key"),
        });
    }
    // serde_json's Value serializes maps in key order, so the text is stable.
    serde_saphyr::to_string(&config).unwrap_or_default()
}

fn image(registry: &Registry, default_image: &str) -> (String, String) {
    let spec = registry.spec.image.clone().unwrap_or_default();
    let image = match (&spec.repository, &spec.tag) {
        (None, None) => default_image.to_owned(),
        (repository, tag) => {
            let (default_repository, default_tag) = split_image(default_image);
            let repository = repository.clone().unwrap_or(default_repository);
            match tag.clone().or(default_tag) {
                Some(t) if t.starts_with("sha256:") => format!("{repository}@{t}"),
                Some(t) => format!("{repository}:{t}"),
                None => repository,
            }
        }
    };
    let pull_policy = match spec.pull_policy.unwrap_or(PullPolicy::IfNotPresent) {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    };
    (image, pull_policy.to_owned())
}

/// `repo[:tag|@digest]` into the repository and the tag or digest.
fn split_image(image: &str) -> (String, Option<String>) {
    if let Some((repository, digest)) = image.split_once('@') {
        return (repository.to_owned(), Some(digest.to_owned()));
    }
    // A colon after the last slash is a tag; before it, a registry port.
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => {
            (image[..i].to_owned(), Some(image[i + 1..].to_owned()))
        }
        _ => (image.to_owned(), None),
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".into())),
            ("memory".to_owned(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("1Gi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn secret_volume(name: &str, secret: String) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        // `readOnly: false` is left out: the API server drops it, and a field it drops would read
        // as drift on every pass.
        read_only: (name != "data").then_some(true),
        ..VolumeMount::default()
    }
}

fn probe(path: &str, https: bool, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            scheme: Some(if https { "HTTPS" } else { "HTTP" }.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// A hash of everything mounted that the registry reads only at start, so a change rolls the pods.
/// User-owned Secrets (an extra htpasswd, a `tls.secretRef` from cert-manager) are left out on
/// purpose: the registry reloads those files in place, without a restart.
fn config_hash(config: &str, admin: &AdminCredentials, tls: Option<&SelfSignedTls>) -> String {
    let mut hash = Sha256::new();
    hash.update(config.as_bytes());
    hash.update([0]);
    hash.update(admin.htpasswd.as_bytes());
    if let Some(tls) = tls {
        hash.update([0]);
        hash.update(tls.cert_pem.as_bytes());
    }
    hex::encode(&hash.finalize()[..16])
}

fn pod_template(inputs: &BuildInputs, config: &str, persistent: bool) -> PodTemplateSpec {
    let registry = inputs.registry;
    let name = registry.name_any();
    let names = ChildNames::new(&name);
    let https = tls_enabled(registry);
    let (image, pull_policy) = image(registry, inputs.default_image);

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret_volume("admin-htpasswd", names.htpasswd_secret()),
    ];
    let s3 = registry.spec.storage.s3.as_ref();
    let mut mounts = vec![
        mount("config", CONFIG_DIR),
        mount("admin-htpasswd", ADMIN_HTPASSWD_DIR),
    ];
    if s3.is_none() {
        mounts.push(mount("data", DATA_DIR));
    }
    if let Some(ca) = s3.and_then(|s3| s3.ca_secret_ref.as_ref()) {
        volumes.push(secret_volume("s3-ca", ca.name.clone()));
        mounts.push(mount("s3-ca", S3_CA_DIR));
    }
    if let Some(secret) = user_htpasswd_secret(registry) {
        volumes.push(secret_volume("users-htpasswd", secret));
        mounts.push(mount("users-htpasswd", USERS_HTPASSWD_DIR));
    }
    if let Some(secret) = serving_secret(registry) {
        volumes.push(secret_volume("tls", secret));
        mounts.push(mount("tls", TLS_DIR));
    }
    if !persistent && s3.is_none() {
        let size_limit = registry
            .spec
            .storage
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.clone());
        volumes.push(Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit,
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let container = Container {
        name: "registry".into(),
        image: Some(image),
        image_pull_policy: Some(pull_policy),
        args: Some(vec![
            "registry".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/config.yaml"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: CONTAINER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", https, 5, 3)),
        liveness_probe: Some(probe("/healthz", https, 10, 6)),
        resources: Some(
            registry
                .spec
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        // Every field a hand edit could loosen is set, so a change to it reads as drift.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        env: s3.map(s3_env).filter(|env| !env.is_empty()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    let mut pod_labels = selector_labels(&name);
    pod_labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.to_owned());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_owned(),
                config_hash(config, inputs.admin, inputs.self_signed),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(name.clone()),
            automount_service_account_token: Some(false),
            // The registry drains for up to 30 s on SIGTERM (see `registry/server.rs`).
            termination_grace_period_seconds: Some(40),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![container],
            volumes: Some(volumes),
            topology_spread_constraints: spread(registry),
            ..PodSpec::default()
        }),
    }
}

/// The S3 credentials as environment variables read from the user's Secret, which the standard
/// AWS credential chain picks up; they never appear in the config or in the pod spec.
fn s3_env(s3: &crate::crd::registry::S3Storage) -> Vec<EnvVar> {
    let mut env = Vec::new();
    if let Some(secret) = &s3.credentials_secret_ref {
        for (name, key) in [
            ("AWS_ACCESS_KEY_ID", "accessKeyId"),
            ("AWS_SECRET_ACCESS_KEY", "secretAccessKey"),
        ] {
            env.push(EnvVar {
                name: name.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.name.clone(),
                        key: key.into(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    env
}

/// Replicas spread over nodes and zones where the cluster allows it (a preference, never a
/// reason to leave a pod pending).
fn spread(registry: &Registry) -> Option<Vec<TopologySpreadConstraint>> {
    if replicas(registry) <= 1 {
        return None;
    }
    let selector = LabelSelector {
        match_labels: Some(selector_labels(&registry.name_any())),
        ..LabelSelector::default()
    };
    Some(
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
            .into_iter()
            .map(|key| TopologySpreadConstraint {
                max_skew: 1,
                topology_key: key.into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(selector.clone()),
                ..TopologySpreadConstraint::default()
            })
            .collect(),
    )
}

fn workload(inputs: &BuildInputs, owner: &OwnerReference, config: &str) -> Workload {
    let registry = inputs.registry;
    let name = registry.name_any();
    let selector = LabelSelector {
        match_labels: Some(selector_labels(&name)),
        ..LabelSelector::default()
    };
    let metadata = meta(registry, owner, ChildNames::new(&name).workload());
    match &registry.spec.storage.persistent_volume {
        Some(volume) => {
            let when_deleted = match volume
                .deletion_policy
                .unwrap_or(VolumeDeletionPolicy::Retain)
            {
                VolumeDeletionPolicy::Retain => "Retain",
                VolumeDeletionPolicy::Delete => "Delete",
            };
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(labels(&name)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: volume.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_owned(),
                            volume.size.clone(),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            };
            Workload::StatefulSet(StatefulSet {
                metadata,
                spec: Some(StatefulSetSpec {
                    replicas: Some(replicas(registry)),
                    selector,
                    service_name: Some(name.clone()),
                    pod_management_policy: Some("Parallel".into()),
                    persistent_volume_claim_retention_policy: Some(
                        StatefulSetPersistentVolumeClaimRetentionPolicy {
                            when_deleted: Some(when_deleted.into()),
                            when_scaled: Some("Retain".into()),
                        },
                    ),
                    template: pod_template(inputs, config, true),
                    volume_claim_templates: Some(vec![claim]),
                    ..StatefulSetSpec::default()
                }),
                ..StatefulSet::default()
            })
        }
        None => Workload::Deployment(Deployment {
            metadata,
            spec: Some(DeploymentSpec {
                replicas: Some(replicas(registry)),
                selector,
                // Surge first so the registry keeps serving through a rollout.
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                revision_history_limit: Some(3),
                template: pod_template(inputs, config, false),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }),
    }
}

pub fn service(registry: &Registry, owner: &OwnerReference) -> Service {
    let name = registry.name_any();
    let spec = registry.spec.service.clone().unwrap_or_default();
    let type_ = match spec.type_.unwrap_or(ServiceType::ClusterIP) {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let mut metadata = meta(registry, owner, ChildNames::new(&name).workload());
    metadata.annotations = spec.annotations.filter(|a| !a.is_empty());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: service_port(registry),
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                node_port: spec.node_port,
                protocol: Some("TCP".into()),
                app_protocol: Some(
                    if tls_enabled(registry) {
                        "https"
                    } else {
                        "http"
                    }
                    .into(),
                ),
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn ingress(registry: &Registry, owner: &OwnerReference) -> Option<Ingress> {
    let spec = registry.spec.ingress.as_ref()?;
    let name = registry.name_any();
    let mut metadata = meta(registry, owner, ChildNames::new(&name).workload());
    metadata.annotations = spec.annotations.clone().filter(|a| !a.is_empty());
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: spec.tls_secret_ref.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(secret.name.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: name.clone(),
                                port: Some(ServiceBackendPort {
                                    name: Some(PORT_NAME.into()),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

fn pod_disruption_budget(
    registry: &Registry,
    owner: &OwnerReference,
) -> Option<PodDisruptionBudget> {
    if replicas(registry) <= 1 {
        return None;
    }
    let name = registry.name_any();
    Some(PodDisruptionBudget {
        metadata: meta(registry, owner, ChildNames::new(&name).workload()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

fn self_signed_objects(
    registry: &Registry,
    owner: &OwnerReference,
    tls: &SelfSignedTls,
) -> (Secret, ConfigMap, Secret) {
    let names = ChildNames::new(&registry.name_any());
    let mut ca_meta = meta(registry, owner, names.ca());
    ca_meta.annotations = Some(BTreeMap::from([(
        NOT_AFTER_ANNOTATION.to_owned(),
        tls.ca_not_after.to_string(),
    )]));
    let ca_secret = Secret {
        metadata: ca_meta,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(bytes(&[
            ("tls.crt", &tls.ca_cert_pem),
            ("tls.key", &tls.ca_key_pem),
        ])),
        ..Secret::default()
    };
    let ca_config_map = ConfigMap {
        metadata: meta(registry, owner, names.ca()),
        data: Some(BTreeMap::from([(
            "ca.crt".to_owned(),
            tls.ca_cert_pem.clone(),
        )])),
        ..ConfigMap::default()
    };
    let mut tls_meta = meta(registry, owner, names.tls_secret());
    tls_meta.annotations = Some(BTreeMap::from([
        (NOT_AFTER_ANNOTATION.to_owned(), tls.not_after.to_string()),
        (DNS_NAMES_ANNOTATION.to_owned(), tls.dns_names.join(",")),
    ]));
    let tls_secret = Secret {
        metadata: tls_meta,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(bytes(&[
            ("tls.crt", &tls.cert_pem),
            ("tls.key", &tls.key_pem),
            ("ca.crt", &tls.ca_cert_pem),
        ])),
        ..Secret::default()
    };
    (ca_secret, ca_config_map, tls_secret)
}

/// Everything the Registry owns.
pub fn build(inputs: &BuildInputs) -> Result<Children, BuildError> {
    let registry = inputs.registry;
    let owner = registry
        .controller_owner_ref(&())
        .ok_or(BuildError::Incomplete)?;
    if registry.namespace().is_none() {
        return Err(BuildError::Incomplete);
    }
    let name = registry.name_any();
    let names = ChildNames::new(&name);
    let config_text = registry_config(registry, inputs.events_url);

    let mut admin_secret_meta = meta(registry, &owner, names.admin_secret());
    admin_secret_meta.annotations = Some(BTreeMap::from([(
        "wharf.dev/endpoint".to_owned(),
        endpoint(registry),
    )]));
    let admin_secret = Secret {
        metadata: admin_secret_meta,
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(bytes(&[
            ("username", &inputs.admin.username),
            ("password", &inputs.admin.password),
        ])),
        ..Secret::default()
    };
    let mut htpasswd_meta = meta(registry, &owner, names.htpasswd_secret());
    htpasswd_meta.annotations = Some(BTreeMap::from([(
        PASSWORD_SHA256_ANNOTATION.to_owned(),
        inputs.admin.password_sha256.clone(),
    )]));
    let htpasswd_secret = Secret {
        metadata: htpasswd_meta,
        type_: Some("Opaque".into()),
        data: Some(bytes(&[
            ("htpasswd", &inputs.admin.htpasswd),
            ("events-token", &inputs.admin.events_token),
        ])),
        ..Secret::default()
    };
    let self_signed = match (
        registry
            .spec
            .tls
            .as_ref()
            .and_then(|t| t.self_signed.as_ref()),
        inputs.self_signed,
    ) {
        (Some(_), Some(tls)) => Some(self_signed_objects(registry, &owner, tls)),
        _ => None,
    };
    let (ca_secret, ca_config_map, tls_secret) = match self_signed {
        Some((a, b, c)) => (Some(a), Some(b), Some(c)),
        None => (None, None, None),
    };

    Ok(Children {
        service_account: ServiceAccount {
            metadata: meta(registry, &owner, names.workload()),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        config: ConfigMap {
            metadata: meta(registry, &owner, names.config()),
            data: Some(BTreeMap::from([(
                "config.yaml".to_owned(),
                config_text.clone(),
            )])),
            ..ConfigMap::default()
        },
        admin_secret,
        htpasswd_secret,
        ca_secret,
        ca_config_map,
        tls_secret,
        workload: workload(inputs, &owner, &config_text),
        service: service(registry, &owner),
        ingress: ingress(registry, &owner),
        pod_disruption_budget: pod_disruption_budget(registry, &owner),
        gc_cron_job: gc_job::gc_cron_job(registry, &owner, inputs.default_image),
        node_access: inputs.cluster_ip.and_then(|ip| {
            let hosts = node_hosts(
                registry,
                ip,
                inputs.self_signed.map(|t| t.ca_cert_pem.as_str()),
            );
            let (config, daemon_set) =
                node_access::node_access(registry, &owner, inputs.default_image, &hosts)?;
            Some(NodeAccessChildren {
                config,
                daemon_set,
                hosts: hosts.namespaces.into_iter().map(|n| n.name).collect(),
            })
        }),
    })
}

#[cfg(test)]
mod tests;
