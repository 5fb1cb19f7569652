//! A policy's Jobs (scheduled, requested and push-triggered runs alike) and what the newest
//! finished one reported in its termination message.

use crate::crd::replication_policy::ReplicationRun;
use crate::operator::job_results::{finished_at, said_by, succeeded};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;

/// Characters of a failed run's last words kept in status.
const MESSAGE_LIMIT: usize = 500;

#[derive(Default)]
pub struct Jobs {
    /// Runs going on, by name.
    pub active: Vec<String>,
    pub newest_finished: Option<Job>,
}

impl Jobs {
    pub fn sort(jobs: Vec<Job>) -> Jobs {
        let mut out = Jobs::default();
        for job in jobs {
            match finished_at(&job) {
                None => out.active.push(job.name_any()),
                Some(at) => {
                    let later = out
                        .newest_finished
                        .as_ref()
                        .is_none_or(|n| finished_at(n) < Some(at));
                    if later {
                        out.newest_finished = Some(job);
                    }
                }
            }
        }
        out.active.sort();
        out
    }
}

/// Status's view of a finished run (pure): the summary the run wrote, or why there is none.
pub fn run_from(
    job: &Job,
    summary: Option<&serde_json::Value>,
    last_words: &str,
) -> ReplicationRun {
    let mut run = summary
        .and_then(|s| serde_json::from_value::<ReplicationRun>(s.clone()).ok())
        .unwrap_or_default();
    run.job_name = job.name_any();
    run.completion_time = finished_at(job).map(Time);
    if summary.is_none() {
        run.succeeded = false;
        let failed_condition = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"))
            .and_then(|c| c.message.clone());
        let words: String = last_words
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ")
            .chars()
            .take(MESSAGE_LIMIT)
            .collect();
        run.message = Some(match (words.is_empty(), failed_condition) {
            (false, _) => words,
            (true, Some(m)) => m,
            (true, None) => "the run ended without a summary; see the Job's pod logs".into(),
        });
    } else {
        // A Job that failed after writing a good summary (killed while exiting) still failed.
        run.succeeded &= succeeded(job);
    }
    run
}

pub async fn observe(pods: &Api<Pod>, job: &Job) -> Result<ReplicationRun, kube::Error> {
    let said = said_by(pods, &job.name_any()).await?;
    Ok(run_from(
        job,
        said.as_ref().and_then(|s| s.summary.as_ref()),
        said.as_ref().map(|s| s.text.as_str()).unwrap_or(""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(name: &str, status: serde_json::Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": status})).unwrap()
    }

    #[test]
    fn active_runs_and_the_newest_finished_one_are_told_apart() {
        let jobs = Jobs::sort(vec![
            job(
                "old",
                json!({"succeeded": 1, "completionTime": "2026-01-01T00:00:00Z"}),
            ),
            job("push-b", json!({"active": 1})),
            job(
                "new",
                json!({"succeeded": 1, "completionTime": "2026-01-02T00:00:00Z"}),
            ),
            job("push-a", json!({"active": 1})),
        ]);
        assert_eq!(jobs.active, ["push-a", "push-b"]);
        assert_eq!(jobs.newest_finished.unwrap().name_any(), "new");
    }

    #[test]
    fn a_summary_becomes_the_last_run_and_a_crash_keeps_its_last_words() {
        let done = job(
            "r",
            json!({"succeeded": 1, "completionTime": "2026-01-02T00:00:00Z"}),
        );
        let summary = json!({"succeeded": true, "dryRun": false, "tagsSelected": 4, "copied": 4,
            "blobsCopied": 9, "bytesTransferred": 1234, "durationSeconds": 1.5});
        let run = run_from(&done, Some(&summary), "");
        assert!(run.succeeded);
        assert_eq!(
            (run.job_name.as_str(), run.copied, run.bytes_transferred),
            ("r", 4, 1234)
        );
        assert!(run.completion_time.is_some());

        let crashed = job(
            "c",
            json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True",
            "message": "Job has reached the specified backoff limit", "lastTransitionTime": "2026-01-01T12:00:00Z"}]}),
        );
        let run = run_from(
            &crashed,
            None,
            "wharf: cannot read /etc/wharf/replication/policy.json: no such file",
        );
        assert!(!run.succeeded);
        assert!(run.message.as_deref().unwrap().contains("policy.json"));
        let run = run_from(&crashed, None, "");
        assert!(run.message.unwrap().contains("backoff limit"));
    }
}
