//! What a wharf Job reported: `wharf gc` and `wharf retention` write a JSON summary to the
//! termination message, which the Registry and RetentionPolicy controllers copy into status.

use crate::crd::registry::GarbageCollectionRun;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

pub fn finished(job: &Job) -> bool {
    finished_at(job).is_some()
}

pub fn finished_at(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    status.completion_time.as_ref().map(|t| t.0).or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed" && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
    })
}

pub fn succeeded(job: &Job) -> bool {
    job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0
}

fn terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

/// What the newest pod of a Job that ran to the end said: its summary when it wrote one, or
/// the tail of its log (a failed run's error, through `FallbackToLogsOnError`).
pub struct Said {
    pub pod: Pod,
    pub summary: Option<serde_json::Value>,
    pub text: String,
}

pub async fn said_by(pods: &Api<Pod>, job: &str) -> Result<Option<Said>, kube::Error> {
    let mut listed = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?
        .items;
    listed.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(listed.into_iter().rev().find_map(|pod| {
        let text = terminated(&pod)?.message.clone()?.trim().to_owned();
        let summary = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .filter(serde_json::Value::is_object);
        Some(Said { pod, summary, text })
    }))
}

pub async fn observe_gc(pods: &Api<Pod>, job: &Job) -> Result<GarbageCollectionRun, kube::Error> {
    let name = job.name_any();
    let summary = said_by(pods, &name).await?.and_then(|s| s.summary);
    let number = |key: &str| summary.as_ref().and_then(|s| s[key].as_i64());
    Ok(GarbageCollectionRun {
        job_name: name,
        completion_time: finished_at(job).map(Time),
        blobs_deleted: number("blobsDeleted"),
        bytes_freed: number("bytesFreed"),
        succeeded: Some(succeeded(job) && summary.is_some()),
    })
}
