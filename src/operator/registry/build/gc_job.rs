//! The CronJob behind `spec.garbageCollection`: `wharf gc` in the registry's own image, against
//! the registry's Service with the admin credential, reporting through its termination message.

use super::{image, meta};
use crate::crd::registry::Registry;
use crate::operator::registry::names::{ChildNames, RUN_AS, labels};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use std::collections::BTreeMap;

const CA_DIR: &str = "/etc/wharf/ca";
/// The component label of GC Jobs and pods: not `registry`, so the Service never selects them.
pub const GC_COMPONENT: &str = "garbage-collection";

pub fn gc_labels(registry: &str) -> BTreeMap<String, String> {
    let mut l = labels(registry);
    l.insert("app.kubernetes.io/component".into(), GC_COMPONENT.into());
    l
}

pub fn cron_job_name(registry: &str) -> String {
    format!("{registry}-gc")
}

pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The registry's URL inside the cluster, as jobs reach it.
pub fn registry_url(registry: &Registry) -> String {
    let scheme = if registry.spec.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", super::endpoint(registry))
}

/// The volume and mount that give a job the CA the registry's certificate chains to, and the
/// `WHARF_CA_FILE` pointing into it. `Some(None)`: plain HTTP, nothing to trust. `None`: TLS
/// with no CA to trust (a `secretRef` is always there, so this means an invalid spec).
pub fn registry_ca(registry: &Registry) -> Option<Option<(Volume, VolumeMount, EnvVar)>> {
    let Some(t) = registry.spec.tls.as_ref() else {
        return Some(None);
    };
    let names = ChildNames::new(&registry.name_any());
    let items = Some(vec![KeyToPath {
        key: "ca.crt".into(),
        path: "ca.crt".into(),
        ..KeyToPath::default()
    }]);
    let volume = match (&t.self_signed, &t.secret_ref) {
        (Some(_), _) => Volume {
            name: "ca".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.ca(),
                items,
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        (None, Some(secret)) => Volume {
            name: "ca".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items,
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        (None, None) => return None,
    };
    let mount = VolumeMount {
        name: "ca".into(),
        mount_path: CA_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    Some(Some((
        volume,
        mount,
        env("WHARF_CA_FILE", &format!("{CA_DIR}/ca.crt")),
    )))
}

/// The restricted pod every wharf job runs in: non-root, no token, read-only root, no
/// capabilities, a small memory limit.
pub fn job_pod(
    container: &str,
    image: (String, String),
    args: Vec<String>,
    env: Vec<EnvVar>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    service_account: Option<String>,
) -> PodSpec {
    let (image, pull_policy) = image;
    PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: service_account,
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: container.into(),
            image: Some(image),
            image_pull_policy: Some(pull_policy),
            args: Some(args),
            env: Some(env),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity("10m".into())),
                    ("memory".to_owned(), Quantity("16Mi".into())),
                ])),
                limits: Some(BTreeMap::from([(
                    "memory".to_owned(),
                    Quantity("64Mi".into()),
                )])),
                ..ResourceRequirements::default()
            }),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }],
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..PodSpec::default()
    }
}

/// The pod of one `wharf gc` run against `registry`, with its `garbageCollection` settings
/// (or the defaults when it has none). `None` when the spec gives no CA to trust.
pub fn gc_pod(registry: &Registry, default_image: &str) -> Option<PodSpec> {
    let gc = registry.spec.garbage_collection.as_ref();
    let names = ChildNames::new(&registry.name_any());
    let mut args = vec![
        "gc".to_owned(),
        "--grace-period".to_owned(),
        gc.and_then(|g| g.min_blob_age.clone())
            .unwrap_or_else(|| "2h".into()),
    ];
    if gc.and_then(|g| g.delete_untagged) == Some(true) {
        args.push("--delete-untagged".into());
    }
    let mut env = vec![
        env("WHARF_REGISTRY_URL", &registry_url(registry)),
        env_from_secret("WHARF_USERNAME", &names.admin_secret(), "username"),
        env_from_secret("WHARF_PASSWORD", &names.admin_secret(), "password"),
    ];
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    if let Some((volume, mount, ca_env)) = registry_ca(registry)? {
        volumes.push(volume);
        mounts.push(mount);
        env.push(ca_env);
    }
    Some(job_pod(
        "gc",
        image(registry, default_image),
        args,
        env,
        volumes,
        mounts,
        Some(names.workload()),
    ))
}

/// `None` when the Registry asks for no scheduled garbage collection.
pub fn gc_cron_job(
    registry: &Registry,
    owner: &OwnerReference,
    default_image: &str,
) -> Option<CronJob> {
    let gc = registry.spec.garbage_collection.as_ref()?;
    let name = registry.name_any();
    let pod = gc_pod(registry, default_image)?;
    let pod_labels = gc_labels(&name);
    let mut cron_meta = meta(registry, owner, cron_job_name(&name));
    cron_meta.labels = Some(pod_labels.clone());
    Some(CronJob {
        metadata: cron_meta,
        spec: Some(CronJobSpec {
            schedule: gc.schedule.clone(),
            time_zone: gc.time_zone.clone(),
            suspend: Some(gc.suspend.unwrap_or(false)),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(600),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    active_deadline_seconds: Some(6 * 3600),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
        }),
        ..CronJob::default()
    })
}
