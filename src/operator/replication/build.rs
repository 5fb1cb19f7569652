//! Everything a ReplicationPolicy owns, built from the policy and the Registries it names
//! (pure, unit-tested): the ConfigMap runs mount, the CronJob, on-demand and push-triggered
//! Jobs, each running `wharf replicate` in the operator's image.

use super::names::{POLICY_LABEL, PUSHED_ANNOTATION, PolicyNames, Side, labels};
use crate::crd::registry::Registry;
use crate::crd::replication_policy::{ReplicationEndpoint, ReplicationPolicy};
use crate::operator::policy_runs::{cron_job_spec, run_job_spec};
use crate::operator::registry::build::{job_pod, registry_ca, registry_url};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, EnvVar, KeyToPath, PodSpec, SecretVolumeSource, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use std::collections::BTreeMap;

const POLICY_DIR: &str = "/etc/wharf/replication";
/// Finished on-demand Jobs go after a day, push-triggered ones after an hour (there is one per
/// push); status keeps the newest result.
const REQUESTED_JOB_TTL: i32 = 86_400;
const PUSH_JOB_TTL: i32 = 3_600;
/// Blobs stream through a run in bounded buffers; the limit leaves room above the 64 MiB a
/// run is measured to stay under (docs/benchmarks.md).
const RUN_MEMORY_LIMIT: &str = "128Mi";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("the {0} Registry serves TLS but names no CA to trust")]
    NoCa(&'static str),
}

/// One end of the copy, as the spec and the cluster give it.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Wharf(&'a Registry),
    Endpoint(&'a ReplicationEndpoint),
}

/// What starts a run, and so what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunKind {
    Scheduled,
    /// `wharf.dev/requested-at`; `dry_run` overrides the spec's (`wharf.dev/requested-dry-run`).
    Requested {
        requested_at: String,
        dry_run: Option<bool>,
    },
    /// A push the source Registry reported: only that repository and tag.
    Pushed {
        repository: String,
        tag: String,
        digest: String,
    },
}

fn names(policy: &ReplicationPolicy) -> (String, String) {
    (policy.name_any(), policy.namespace().unwrap_or_default())
}

fn meta(policy: &ReplicationPolicy, owner: &OwnerReference, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: policy.namespace(),
        labels: Some(labels(&policy.name_any())),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The spec as `wharf replicate --policy` reads it.
pub fn policy_json(policy: &ReplicationPolicy) -> String {
    serde_json::to_string_pretty(&policy.spec).unwrap_or_default()
}

pub fn config_map(policy: &ReplicationPolicy, owner: &OwnerReference) -> ConfigMap {
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    ConfigMap {
        metadata: meta(policy, owner, names.config()),
        data: Some(BTreeMap::from([(
            "policy.json".to_owned(),
            policy_json(policy),
        )])),
        ..ConfigMap::default()
    }
}

fn secret_volume(name: String, secret: &str, items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        name,
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items,
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: String, path: String) -> VolumeMount {
    VolumeMount {
        name,
        mount_path: path,
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Arguments, volumes and mounts that give a run one side: its URL, credential and CA.
struct SideParts {
    args: Vec<String>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    env: Vec<EnvVar>,
}

fn side_parts(side: Side, target: Target<'_>, robot_secret: &str) -> Result<SideParts, BuildError> {
    let word = side.word();
    let credentials_dir = format!("/etc/wharf/{word}-credentials");
    let ca_dir = format!("/etc/wharf/{word}-ca");
    let ca_env = format!("WHARF_{}_CA_FILE", word.to_uppercase());
    let mut parts = SideParts {
        args: Vec::new(),
        volumes: Vec::new(),
        mounts: Vec::new(),
        env: Vec::new(),
    };
    let credentials = match target {
        Target::Wharf(registry) => {
            parts
                .args
                .extend([format!("--{word}"), registry_url(registry)]);
            if let Some((mut volume, _, _)) = registry_ca(registry).ok_or(BuildError::NoCa(word))? {
                volume.name = format!("{word}-ca");
                parts.volumes.push(volume);
                parts
                    .mounts
                    .push(mount(format!("{word}-ca"), ca_dir.clone()));
                parts.env.push(EnvVar {
                    name: ca_env,
                    value: Some(format!("{ca_dir}/ca.crt")),
                    ..EnvVar::default()
                });
            }
            Some(robot_secret.to_owned())
        }
        Target::Endpoint(endpoint) => {
            parts.args.extend([
                format!("--{word}"),
                endpoint.url.trim_end_matches('/').to_owned(),
            ]);
            if endpoint.insecure == Some(true) {
                parts.args.push(format!("--{word}-insecure"));
            }
            if let Some(ca) = &endpoint.ca_secret_ref {
                let items = Some(vec![KeyToPath {
                    key: "ca.crt".into(),
                    path: "ca.crt".into(),
                    ..KeyToPath::default()
                }]);
                parts
                    .volumes
                    .push(secret_volume(format!("{word}-ca"), &ca.name, items));
                parts
                    .mounts
                    .push(mount(format!("{word}-ca"), ca_dir.clone()));
                parts.env.push(EnvVar {
                    name: ca_env,
                    value: Some(format!("{ca_dir}/ca.crt")),
                    ..EnvVar::default()
                });
            }
            endpoint
                .credentials_secret_ref
                .as_ref()
                .map(|s| s.name.clone())
        }
    };
    if let Some(secret) = credentials {
        parts
            .volumes
            .push(secret_volume(format!("{word}-credentials"), &secret, None));
        parts.mounts.push(mount(
            format!("{word}-credentials"),
            credentials_dir.clone(),
        ));
        parts
            .args
            .extend([format!("--{word}-credentials"), credentials_dir]);
    }
    Ok(parts)
}

/// The pod of one run.
pub fn run_pod(
    policy: &ReplicationPolicy,
    source: Target<'_>,
    destination: Target<'_>,
    image: &str,
    kind: &RunKind,
) -> Result<PodSpec, BuildError> {
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    let mut args = vec![
        "replicate".to_owned(),
        "--policy".to_owned(),
        format!("{POLICY_DIR}/policy.json"),
    ];
    let mut volumes = vec![Volume {
        name: "policy".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.config(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![mount("policy".into(), POLICY_DIR.into())];
    let mut env = Vec::new();
    for (side, target) in [(Side::Source, source), (Side::Destination, destination)] {
        let parts = side_parts(side, target, &names.credential(side))?;
        args.extend(parts.args);
        volumes.extend(parts.volumes);
        mounts.extend(parts.mounts);
        env.extend(parts.env);
    }
    match kind {
        RunKind::Scheduled => {}
        RunKind::Requested { dry_run, .. } => {
            if let Some(dry_run) = dry_run {
                args.push(format!("--dry-run={dry_run}"));
            }
        }
        RunKind::Pushed {
            repository, tag, ..
        } => {
            args.extend([
                "--repository".to_owned(),
                repository.clone(),
                "--tag".to_owned(),
                tag.clone(),
            ]);
        }
    }
    let mut pod = job_pod(
        "replicate",
        (image.to_owned(), "IfNotPresent".to_owned()),
        args,
        env,
        volumes,
        mounts,
        None,
    );
    if let Some(limits) = pod.containers[0]
        .resources
        .as_mut()
        .and_then(|r| r.limits.as_mut())
    {
        limits.insert("memory".into(), Quantity(RUN_MEMORY_LIMIT.into()));
    }
    Ok(pod)
}

fn job_spec(policy: &ReplicationPolicy, pod: PodSpec, ttl: Option<i32>) -> JobSpec {
    // A retried run compares both sides again and copies only what is missing.
    run_job_spec(labels(&policy.name_any()), pod, 2, ttl)
}

/// `None` when the policy has no schedule.
pub fn cron_job(
    policy: &ReplicationPolicy,
    owner: &OwnerReference,
    pod: PodSpec,
) -> Option<CronJob> {
    let trigger = policy.spec.trigger.as_ref()?;
    let schedule = trigger.schedule.clone()?;
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    Some(CronJob {
        metadata: meta(policy, owner, names.cron_job()),
        spec: Some(cron_job_spec(
            schedule,
            trigger.time_zone.clone(),
            trigger.suspend.unwrap_or(false),
            policy.spec.history.as_ref(),
            labels(&name),
            job_spec(policy, pod, None),
        )),
        ..CronJob::default()
    })
}

/// The Job of an on-demand or push-triggered run.
pub fn job(
    policy: &ReplicationPolicy,
    owner: &OwnerReference,
    pod: PodSpec,
    kind: &RunKind,
) -> Job {
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    let (job_name, ttl, annotation) = match kind {
        RunKind::Scheduled => (names.cron_job(), None, None),
        RunKind::Requested { requested_at, .. } => (
            names.requested_job(requested_at),
            Some(REQUESTED_JOB_TTL),
            None,
        ),
        RunKind::Pushed {
            repository,
            tag,
            digest,
        } => (
            names.push_job(repository, tag, digest),
            Some(PUSH_JOB_TTL),
            Some(format!("{repository}:{tag}@{digest}")),
        ),
    };
    let mut metadata = meta(policy, owner, job_name);
    metadata.annotations = annotation.map(|a| BTreeMap::from([(PUSHED_ANNOTATION.to_owned(), a)]));
    Job {
        metadata,
        spec: Some(job_spec(policy, pod, ttl)),
        ..Job::default()
    }
}

/// The label selector of every Job a policy runs.
pub fn jobs_selector(policy: &str) -> String {
    format!("{POLICY_LABEL}={policy}")
}

#[cfg(test)]
mod tests;
