//! A policy's Jobs and what they reported: the newest finished run's summary (its termination
//! message) and candidate list (one line of its log), and the garbage collection after it.

use super::names::{GC_COMPONENT, RUN_COMPONENT};
use crate::crd::common::LocalObjectReference;
use crate::crd::retention_policy::RetentionRun;
use crate::operator::job_results::{Said, finished_at, said_by, succeeded};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, LogParams};

/// The log line of a run that carries its candidates.
const CANDIDATES_PREFIX: &str = "{\"candidates\":";
/// Logs read at most: the candidate line is capped below a ConfigMap's 1 MiB.
const LOG_LIMIT: i64 = 2 * 1024 * 1024;

fn component(job: &Job) -> Option<&str> {
    job.labels()
        .get("app.kubernetes.io/component")
        .map(String::as_str)
}

/// The policy's Jobs, sorted out.
#[derive(Default)]
pub struct Jobs {
    /// A run is going on (scheduled or on demand).
    pub active_run: Option<String>,
    pub newest_run: Option<Job>,
    pub newest_gc: Option<Job>,
    pub all: Vec<Job>,
}

impl Jobs {
    pub fn sort(jobs: Vec<Job>) -> Jobs {
        let mut out = Jobs::default();
        let newest = |current: &mut Option<Job>, job: &Job| {
            let later = current
                .as_ref()
                .is_none_or(|c| finished_at(c) < finished_at(job));
            if later {
                *current = Some(job.clone());
            }
        };
        for job in &jobs {
            let done = finished_at(job).is_some();
            match component(job) {
                Some(RUN_COMPONENT) if !done => out.active_run = Some(job.name_any()),
                Some(RUN_COMPONENT) => newest(&mut out.newest_run, job),
                Some(GC_COMPONENT) if done => newest(&mut out.newest_gc, job),
                _ => {}
            }
        }
        out.all = jobs;
        out
    }

    pub fn named(&self, name: &str) -> Option<&Job> {
        self.all.iter().find(|j| j.name_any() == name)
    }
}

/// The run as status shows it, and its candidate list (JSON) when the log has it.
pub async fn observe_run(
    pods: &Api<Pod>,
    job: &Job,
    report: &str,
) -> Result<(RetentionRun, Option<String>), kube::Error> {
    let said = said_by(pods, &job.name_any()).await?;
    let mut candidates = None;
    if let Some(Said {
        pod,
        summary: Some(_),
        ..
    }) = &said
    {
        let log = pods
            .logs(
                &pod.name_any(),
                &LogParams {
                    container: Some("retention".into()),
                    limit_bytes: Some(LOG_LIMIT),
                    ..LogParams::default()
                },
            )
            .await?;
        candidates = log
            .lines()
            .find(|l| l.starts_with(CANDIDATES_PREFIX))
            .map(str::to_owned);
    }
    let summary = said.as_ref().and_then(|s| s.summary.as_ref());
    let mut run = run_from(job, summary, candidates.is_some(), report);
    if summary.is_none()
        && let Some(said) = &said
        && !said.text.is_empty()
    {
        // The last words of a failed run: `wharf: <error>`.
        let tail: String = said
            .text
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ");
        run.message = Some(tail.chars().take(MESSAGE_LIMIT).collect());
    }
    Ok((run, candidates))
}

/// Characters of a failed run's log kept in status.
const MESSAGE_LIMIT: usize = 500;

/// Status's view of a finished run (pure).
pub fn run_from(
    job: &Job,
    summary: Option<&serde_json::Value>,
    has_report: bool,
    report: &str,
) -> RetentionRun {
    let number = |key: &str| summary.and_then(|s| s[key].as_i64());
    let flag = |key: &str| summary.and_then(|s| s[key].as_bool());
    let failed = number("failed").unwrap_or(0) > 0;
    let message = summary
        .and_then(|s| s["message"].as_str().map(str::to_owned))
        .or_else(|| {
            (!succeeded(job)).then(|| {
                job.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Failed"))
                    .and_then(|c| c.message.clone())
                    .unwrap_or_else(|| "the run failed; see the Job's pod logs".into())
            })
        });
    RetentionRun {
        job_name: job.name_any(),
        completion_time: finished_at(job).map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        succeeded: Some(
            succeeded(job) && summary.is_some() && !failed && flag("stalled") != Some(true),
        ),
        dry_run: flag("dryRun"),
        stalled: flag("stalled"),
        repositories: number("repositories"),
        tags_evaluated: number("tagsEvaluated"),
        tags_to_delete: number("tagsToDelete"),
        manifests_to_delete: number("manifestsToDelete"),
        tags_deleted: number("tagsDeleted"),
        manifests_deleted: number("manifestsDeleted"),
        message,
        report_config_map_ref: has_report.then(|| LocalObjectReference {
            name: report.to_owned(),
        }),
    }
}

/// Whether a run deleted something, so garbage collection has bytes to free.
pub fn deleted_something(run: &RetentionRun) -> bool {
    run.dry_run == Some(false)
        && run.tags_deleted.unwrap_or(0) + run.manifests_deleted.unwrap_or(0) > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(name: &str, component: &str, status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/component": component}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn the_newest_finished_run_and_the_active_one_are_told_apart() {
        let jobs = Jobs::sort(vec![
            job(
                "old",
                RUN_COMPONENT,
                json!({"succeeded": 1, "completionTime": "2026-01-01T00:00:00Z"}),
            ),
            job(
                "new",
                RUN_COMPONENT,
                json!({"succeeded": 1, "completionTime": "2026-01-02T00:00:00Z"}),
            ),
            job(
                "failed",
                RUN_COMPONENT,
                json!({"failed": 2, "conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T12:00:00Z"}]}),
            ),
            job("running", RUN_COMPONENT, json!({"active": 1})),
            job(
                "gc",
                GC_COMPONENT,
                json!({"succeeded": 1, "completionTime": "2026-01-02T01:00:00Z"}),
            ),
        ]);
        assert_eq!(jobs.newest_run.unwrap().name_any(), "new");
        assert_eq!(jobs.active_run.as_deref(), Some("running"));
        assert_eq!(jobs.newest_gc.unwrap().name_any(), "gc");
    }

    #[test]
    fn a_summary_becomes_the_last_run() {
        let done = job(
            "r",
            RUN_COMPONENT,
            json!({"succeeded": 1, "completionTime": "2026-01-02T00:00:00Z"}),
        );
        let summary = json!({"dryRun": false, "repositories": 3, "tagsEvaluated": 180, "tagsToDelete": 90,
            "manifestsToDelete": 80, "tagsDeleted": 90, "manifestsDeleted": 80});
        let run = run_from(&done, Some(&summary), true, "p-retention-report");
        assert_eq!(run.succeeded, Some(true));
        assert_eq!(run.tags_deleted, Some(90));
        assert!(deleted_something(&run));
        assert_eq!(
            run.report_config_map_ref.unwrap().name,
            "p-retention-report"
        );

        let stalled = json!({"dryRun": true, "stalled": true, "message": "120 deletions exceed maxDeletionsPerRun (10); nothing was deleted"});
        let run = run_from(&done, Some(&stalled), false, "x");
        assert_eq!(run.succeeded, Some(false));
        assert_eq!(run.stalled, Some(true));
        assert!(
            run.message
                .as_deref()
                .unwrap()
                .contains("maxDeletionsPerRun")
        );
        assert!(!deleted_something(&run));

        let crashed = job(
            "c",
            RUN_COMPONENT,
            json!({"failed": 2, "conditions": [{"type": "Failed", "status": "True", "message": "Job has reached the specified backoff limit", "lastTransitionTime": "2026-01-01T12:00:00Z"}]}),
        );
        let run = run_from(&crashed, None, false, "x");
        assert_eq!(run.succeeded, Some(false));
        assert!(run.message.unwrap().contains("backoff limit"));
    }
}
