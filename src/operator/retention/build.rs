//! Everything a RetentionPolicy owns, built from the policy alone (pure, unit-tested): the
//! ConfigMap runs mount, the CronJob, on-demand Jobs, the garbage collection that follows a
//! run, and the report ConfigMap.

use super::names::{GC_COMPONENT, POLICY_LABEL, PolicyNames, RUN_COMPONENT, labels};
use crate::crd::registry::Registry;
use crate::crd::retention_policy::{RetentionPolicy, RetentionRun};
use crate::operator::policy_runs::{cron_job_spec, run_job_spec};
use crate::operator::registry::build::{
    env, env_from_secret, gc_pod, job_pod, registry_ca, registry_url,
};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, KeyToPath, PodSpec, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use std::collections::BTreeMap;

const POLICY_DIR: &str = "/etc/wharf/retention";
const ENDPOINT_CA_DIR: &str = "/etc/wharf/endpoint-ca";
/// Finished on-demand and garbage collection Jobs go after a day; status keeps their results.
const FINISHED_JOB_TTL: i32 = 86_400;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("the Registry serves TLS but names no CA to trust")]
    NoCa,
    #[error("the policy names no registry")]
    NoRegistry,
}

fn names(policy: &RetentionPolicy) -> (String, String) {
    (policy.name_any(), policy.namespace().unwrap_or_default())
}

fn meta(
    policy: &RetentionPolicy,
    owner: &OwnerReference,
    name: String,
    component: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: policy.namespace(),
        labels: Some(labels(&policy.name_any(), component)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The policy as `wharf retention --policy` reads it: the spec's rule fields, with the
/// defaults spelled out so the Job never guesses.
pub fn policy_json(policy: &RetentionPolicy) -> String {
    let spec = &policy.spec;
    let mut value = serde_json::json!({
        "repositories": spec.repositories.clone().unwrap_or_default(),
        "excludeRepositories": spec.exclude_repositories.clone().unwrap_or_default(),
        "keep": spec.keep.clone().unwrap_or_default(),
        "protect": {
            "tags": spec.protect.as_ref().and_then(|p| p.tags.clone()).unwrap_or_default(),
            "inUseByCluster": spec.in_use_protection(),
        },
        "safety": {
            "dryRun": spec.dry_run(),
            "minTagsPerRepository": spec.safety.as_ref().and_then(|s| s.min_tags_per_repository).unwrap_or(0),
        },
        "referrers": spec.referrers.unwrap_or_default(),
    });
    if let Some(max) = spec.safety.as_ref().and_then(|s| s.max_deletions_per_run) {
        value["safety"]["maxDeletionsPerRun"] = max.into();
    }
    if let Some(untagged) = &spec.untagged {
        value["untagged"] = serde_json::to_value(untagged).unwrap_or_default();
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// What every run mounts: the policy and the image references the cluster uses.
pub fn config_map(policy: &RetentionPolicy, owner: &OwnerReference, in_use: &str) -> ConfigMap {
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    ConfigMap {
        metadata: meta(policy, owner, names.config(), RUN_COMPONENT),
        data: Some(BTreeMap::from([
            ("policy.json".to_owned(), policy_json(policy)),
            ("in-use.txt".to_owned(), in_use.to_owned()),
        ])),
        ..ConfigMap::default()
    }
}

fn key(key: &str) -> Option<Vec<KeyToPath>> {
    Some(vec![KeyToPath {
        key: key.into(),
        path: key.into(),
        ..KeyToPath::default()
    }])
}

/// The pod of one run. `dry_run` overrides the policy's `safety.dryRun` (an on-demand run).
pub fn run_pod(
    policy: &RetentionPolicy,
    registry: Option<&Registry>,
    image: &str,
    dry_run: Option<bool>,
) -> Result<PodSpec, BuildError> {
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    let mut volumes = vec![Volume {
        name: "policy".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.config(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "policy".into(),
        mount_path: POLICY_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut args = vec![
        "retention".to_owned(),
        "--policy".to_owned(),
        format!("{POLICY_DIR}/policy.json"),
        "--report-to-log".to_owned(),
    ];
    if policy.spec.in_use_protection() {
        args.extend(["--in-use".to_owned(), format!("{POLICY_DIR}/in-use.txt")]);
    }
    if let Some(dry_run) = dry_run {
        args.push(format!("--dry-run={dry_run}"));
    }
    let mut env_vars = Vec::new();
    match (&policy.spec.registry_ref, &policy.spec.endpoint, registry) {
        (Some(_), _, Some(registry)) => {
            args.extend(["--api".to_owned(), "wharf".to_owned()]);
            env_vars.push(env("WHARF_REGISTRY_URL", &registry_url(registry)));
            env_vars.push(env_from_secret(
                "WHARF_USERNAME",
                &names.credential(),
                "username",
            ));
            env_vars.push(env_from_secret(
                "WHARF_PASSWORD",
                &names.credential(),
                "password",
            ));
            if let Some((volume, mount, ca_env)) = registry_ca(registry).ok_or(BuildError::NoCa)? {
                volumes.push(volume);
                mounts.push(mount);
                env_vars.push(ca_env);
            }
        }
        (None, Some(endpoint), _) => {
            args.extend(["--api".to_owned(), "oci".to_owned()]);
            env_vars.push(env(
                "WHARF_REGISTRY_URL",
                endpoint.url.trim_end_matches('/'),
            ));
            match &endpoint.credentials_secret_ref {
                Some(secret) => {
                    env_vars.push(env_from_secret("WHARF_USERNAME", &secret.name, "username"));
                    env_vars.push(env_from_secret("WHARF_PASSWORD", &secret.name, "password"));
                }
                None => {
                    env_vars.push(env("WHARF_USERNAME", ""));
                    env_vars.push(env("WHARF_PASSWORD", ""));
                }
            }
            if let Some(ca) = &endpoint.ca_secret_ref {
                volumes.push(Volume {
                    name: "endpoint-ca".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(ca.name.clone()),
                        items: key("ca.crt"),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                });
                mounts.push(VolumeMount {
                    name: "endpoint-ca".into(),
                    mount_path: ENDPOINT_CA_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
                env_vars.push(env("WHARF_CA_FILE", &format!("{ENDPOINT_CA_DIR}/ca.crt")));
            }
        }
        _ => return Err(BuildError::NoRegistry),
    }
    Ok(job_pod(
        "retention",
        (image.to_owned(), "IfNotPresent".to_owned()),
        args,
        env_vars,
        volumes,
        mounts,
        None,
    ))
}

fn job_spec(policy: &RetentionPolicy, pod: PodSpec, component: &str, ttl: Option<i32>) -> JobSpec {
    // A retried run decides again from scratch, so one retry is safe; more only hide a
    // persistent problem.
    run_job_spec(labels(&policy.name_any(), component), pod, 1, ttl)
}

/// `None` when the policy has no schedule (it runs only on demand).
pub fn cron_job(policy: &RetentionPolicy, owner: &OwnerReference, pod: PodSpec) -> Option<CronJob> {
    let spec = &policy.spec;
    let schedule = spec.schedule.clone()?;
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    Some(CronJob {
        metadata: meta(policy, owner, names.cron_job(), RUN_COMPONENT),
        spec: Some(cron_job_spec(
            schedule,
            spec.time_zone.clone(),
            spec.suspend.unwrap_or(false),
            spec.history.as_ref(),
            labels(&name, RUN_COMPONENT),
            job_spec(policy, pod, RUN_COMPONENT, None),
        )),
        ..CronJob::default()
    })
}

/// The run a `wharf.dev/requested-at` value asks for.
pub fn requested_job(
    policy: &RetentionPolicy,
    owner: &OwnerReference,
    pod: PodSpec,
    requested_at: &str,
) -> Job {
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    Job {
        metadata: meta(
            policy,
            owner,
            names.requested_job(requested_at),
            RUN_COMPONENT,
        ),
        spec: Some(job_spec(policy, pod, RUN_COMPONENT, Some(FINISHED_JOB_TTL))),
        ..Job::default()
    }
}

/// The garbage collection after the run `run_job`, with the Registry's own settings.
pub fn gc_job(
    policy: &RetentionPolicy,
    owner: &OwnerReference,
    registry: &Registry,
    image: &str,
    run_job: &str,
) -> Result<Job, BuildError> {
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    let pod = gc_pod(registry, image).ok_or(BuildError::NoCa)?;
    let mut metadata = meta(policy, owner, names.gc_job(run_job), GC_COMPONENT);
    metadata.annotations = Some(BTreeMap::from([(
        "wharf.dev/after-run".to_owned(),
        run_job.to_owned(),
    )]));
    Ok(Job {
        metadata,
        spec: Some(job_spec(policy, pod, GC_COMPONENT, Some(FINISHED_JOB_TTL))),
        ..Job::default()
    })
}

/// The candidates of a run and its summary, for `kubectl get configmap -o yaml`.
pub fn report_config_map(
    policy: &RetentionPolicy,
    owner: &OwnerReference,
    run: &RetentionRun,
    candidates: &str,
) -> ConfigMap {
    let (name, namespace) = names(policy);
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    let mut metadata = meta(policy, owner, names.report(), RUN_COMPONENT);
    metadata.annotations = Some(BTreeMap::from([(
        "wharf.dev/run".to_owned(),
        run.job_name.clone(),
    )]));
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([
            ("candidates.json".to_owned(), candidates.to_owned()),
            (
                "summary.json".to_owned(),
                serde_json::to_string_pretty(run).unwrap_or_default(),
            ),
        ])),
        ..ConfigMap::default()
    }
}

/// The label selector of every Job a policy runs.
pub fn jobs_selector(policy: &str) -> String {
    format!("{POLICY_LABEL}={policy}")
}

#[cfg(test)]
mod tests;
