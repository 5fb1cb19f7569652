//! What the two policy controllers (RetentionPolicy, ReplicationPolicy) share: both run a
//! wharf job as a CronJob and as one-off Jobs, map their labelled children back to the
//! policy, fail a pass the same way and write status with one server-side apply.

use crate::crd::retention_policy::HistorySpec;
use crate::operator::apply::{ApplyError, FIELD_MANAGER};
use k8s_openapi::api::batch::v1::{CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;

/// A run is stopped after this long: a stuck registry must not hold the CronJob's slot.
const RUN_DEADLINE_SECONDS: i64 = 6 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("cannot {what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl ReconcileError {
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::Api { .. } => "api",
            ReconcileError::Apply(_) => "apply",
        }
    }
}

/// Names the API call that failed, for the error.
pub fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let what = what.into();
    move |source| ReconcileError::Api { what, source }
}

/// A failed pass: logged with its category, tried again soon.
pub fn retry_after_error<K: ResourceExt>(policy: &K, error: &ReconcileError) -> Action {
    tracing::warn!(
        policy = %policy.name_any(),
        namespace = policy.namespace().as_deref().unwrap_or(""),
        category = error.category(),
        error = %error,
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(10))
}

/// The policy a child carrying `label` (the policy's name) belongs to.
pub fn owning_policy<K: ResourceExt, P>(label: &'static str) -> impl Fn(K) -> Option<ObjectRef<P>>
where
    P: Resource<DynamicType = ()>,
{
    move |child| {
        let namespace = child.namespace()?;
        let policy = child.labels().get(label)?.clone();
        Some(ObjectRef::new(&policy).within(&namespace))
    }
}

/// Writes `status` unless it is what the policy already shows.
pub async fn write_status<K, S>(
    client: &Client,
    policy: &K,
    kind: &str,
    current: Option<&S>,
    status: &S,
) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(client.clone(), &policy.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "wharf.dev/v1alpha1", "kind": kind, "status": status,
    });
    api.patch_status(
        &policy.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(api_error("update the status"))?;
    Ok(())
}

/// The Job of one run: `retries` more attempts after a failed pod, the common deadline.
pub fn run_job_spec(
    labels: BTreeMap<String, String>,
    pod: PodSpec,
    retries: i32,
    ttl: Option<i32>,
) -> JobSpec {
    JobSpec {
        backoff_limit: Some(retries),
        active_deadline_seconds: Some(RUN_DEADLINE_SECONDS),
        ttl_seconds_after_finished: ttl,
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..ObjectMeta::default()
            }),
            spec: Some(pod),
        },
        ..JobSpec::default()
    }
}

/// A policy's schedule: one run at a time, a missed start given 10 minutes, `history`'s Jobs kept.
pub fn cron_job_spec(
    schedule: String,
    time_zone: Option<String>,
    suspend: bool,
    history: Option<&HistorySpec>,
    labels: BTreeMap<String, String>,
    job: JobSpec,
) -> CronJobSpec {
    let history = history.cloned().unwrap_or_default();
    CronJobSpec {
        schedule,
        time_zone,
        suspend: Some(suspend),
        concurrency_policy: Some("Forbid".into()),
        starting_deadline_seconds: Some(600),
        successful_jobs_history_limit: Some(history.successful.unwrap_or(3)),
        failed_jobs_history_limit: Some(history.failed.unwrap_or(3)),
        job_template: JobTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..ObjectMeta::default()
            }),
            spec: Some(job),
        },
    }
}

/// Applies the policy's CronJob, or prunes it when the policy has no schedule (any more).
pub async fn keep_schedule(
    cron_jobs: &Api<k8s_openapi::api::batch::v1::CronJob>,
    name: &str,
    desired: Option<k8s_openapi::api::batch::v1::CronJob>,
    owner_uid: &str,
) -> Result<(), ReconcileError> {
    let live = cron_jobs
        .get_opt(name)
        .await
        .map_err(api_error("read the CronJob"))?;
    match desired {
        Some(desired) => {
            crate::operator::apply::apply(cron_jobs, &desired, live.as_ref()).await?;
        }
        None => {
            crate::operator::apply::prune(cron_jobs, live.as_ref(), owner_uid).await?;
        }
    }
    Ok(())
}

/// `wharf.dev/requested-dry-run` of an on-demand run: `Some` only for `"true"` or `"false"`.
pub fn requested_dry_run(annotations: &BTreeMap<String, String>) -> Option<bool> {
    match annotations
        .get(crate::crd::retention_policy::REQUESTED_DRY_RUN_ANNOTATION)
        .map(String::as_str)
    {
        Some("false") => Some(false),
        Some("true") => Some(true),
        _ => None,
    }
}

/// Creates a run's Job; one that exists already (the same request, or another replica's
/// push event) is that run.
pub async fn start_job(
    jobs: &Api<k8s_openapi::api::batch::v1::Job>,
    job: &k8s_openapi::api::batch::v1::Job,
) -> Result<(), kube::Error> {
    match jobs.create(&kube::api::PostParams::default(), job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_true_or_false_override_the_dry_run() {
        let with = |v: &str| {
            BTreeMap::from([(
                crate::crd::retention_policy::REQUESTED_DRY_RUN_ANNOTATION.to_owned(),
                v.to_owned(),
            )])
        };
        assert_eq!(requested_dry_run(&with("false")), Some(false));
        assert_eq!(requested_dry_run(&with("true")), Some(true));
        assert_eq!(requested_dry_run(&with("yes")), None);
        assert_eq!(requested_dry_run(&BTreeMap::new()), None);
    }
}
