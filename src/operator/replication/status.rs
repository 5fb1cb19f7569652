//! The policy's status (pure): kstatus conditions from what this pass found, plus
//! `LastRunSucceeded` from the newest finished run.

use crate::crd::replication_policy::{ReplicationPolicy, ReplicationPolicyStatus, ReplicationRun};
use crate::operator::conditions::{condition, kstatus};
use crate::operator::retention::status::{Blocker, LAST_RUN_SUCCEEDED};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub struct Observed {
    pub blocker: Option<Blocker>,
    pub active_runs: Vec<String>,
    pub last_run: Option<ReplicationRun>,
    pub last_requested_at: Option<String>,
}

/// One line about a run, for conditions and events.
pub fn describe(run: &ReplicationRun) -> String {
    let (copied, verb) = match run.dry_run {
        true => (run.copied, "would be copied"),
        false => (run.copied, "copied"),
    };
    let mut line = format!(
        "Job {}: {copied} of {} tags {verb}, {} unchanged, {} conflicts, {} deleted, {} failed; {} blobs ({} bytes) sent, {} mounted",
        run.job_name,
        run.tags_selected,
        run.skipped,
        run.conflicts,
        run.deleted,
        run.failed,
        run.blobs_copied,
        run.bytes_transferred,
        run.blobs_mounted,
    );
    if let Some(reason) = run
        .message
        .as_deref()
        .or(run.failures.first().map(|f| f.reason.as_str()))
    {
        line.push_str(": ");
        line.push_str(reason);
    }
    line
}

fn triggers(policy: &ReplicationPolicy) -> String {
    let trigger = policy.spec.trigger.clone().unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(schedule) = &trigger.schedule {
        parts.push(format!("on schedule {schedule:?}"));
    }
    if trigger.on_push == Some(true) {
        parts.push("on push".to_owned());
    }
    parts.push("on request".to_owned());
    let suspended = match trigger.suspend {
        Some(true) => " (schedule and push suspended)",
        _ => "",
    };
    format!("runs {}{suspended}", parts.join(", "))
}

pub fn compute(
    policy: &ReplicationPolicy,
    observed: Observed,
    now: &Time,
) -> ReplicationPolicyStatus {
    let previous = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let last_run = observed.last_run.or(previous.last_run.clone());
    let run_failed = last_run.as_ref().is_some_and(|r| !r.succeeded);
    let ready = match (&observed.blocker, &last_run) {
        (Some(Blocker::Invalid(m)), _) => (false, "InvalidPolicy", m.clone()),
        (Some(Blocker::Waiting { reason, message } | Blocker::Missing { reason, message }), _) => {
            (false, *reason, message.clone())
        }
        (None, Some(run)) if run_failed => (false, "LastRunFailed", describe(run)),
        (None, _) => (true, "Ready", triggers(policy)),
    };
    let reconciling = match (&observed.blocker, observed.active_runs.as_slice()) {
        (Some(Blocker::Waiting { reason, message }), _) => (true, *reason, message.clone()),
        (_, [one]) => (true, "Running", format!("Job {one} is running")),
        (_, [first, rest @ ..]) => (
            true,
            "Running",
            format!("Job {first} and {} more are running", rest.len()),
        ),
        _ => (false, "Idle", String::new()),
    };
    let stalled = match &observed.blocker {
        Some(Blocker::Invalid(m)) => (true, "InvalidPolicy", m.clone()),
        Some(Blocker::Missing { reason, message }) => (true, *reason, message.clone()),
        _ => (false, "Idle", String::new()),
    };
    let mut conditions = kstatus(
        &previous.conditions,
        ready,
        reconciling,
        stalled,
        generation,
        now,
    );
    if let Some(run) = &last_run {
        let reason = match (run.succeeded, run.dry_run) {
            (true, true) => "DryRunCompleted",
            (true, false) => "Completed",
            (false, _) if run.copied + run.deleted > 0 => "PartialFailure",
            (false, _) => "Failed",
        };
        conditions.push(condition(
            &previous.conditions,
            LAST_RUN_SUCCEEDED,
            run.succeeded,
            reason,
            describe(run),
            generation,
            now,
        ));
    }
    ReplicationPolicyStatus {
        observed_generation: generation,
        conditions,
        last_run,
        last_requested_at: observed.last_requested_at.or(previous.last_requested_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::replication_policy::ReplicationFailure;
    use crate::operator::conditions::is_true;
    use k8s_openapi::jiff::Timestamp;

    fn policy() -> ReplicationPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "ReplicationPolicy",
            "metadata": {"name": "p", "namespace": "r", "generation": 3},
            "spec": {"source": {"registryRef": {"name": "ci"}}, "destination": {"registryRef": {"name": "prod"}},
                     "rules": [{"repositories": ["**"]}], "trigger": {"schedule": "@hourly", "onPush": true}},
        }))
        .unwrap()
    }

    fn observed(last_run: Option<ReplicationRun>) -> Observed {
        Observed {
            blocker: None,
            active_runs: Vec::new(),
            last_run,
            last_requested_at: None,
        }
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    fn get<'a>(
        status: &'a ReplicationPolicyStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_good_run_leaves_the_policy_ready_and_says_what_it_did() {
        let run = ReplicationRun {
            job_name: "p-replication-1".into(),
            succeeded: true,
            tags_selected: 5,
            copied: 2,
            skipped: 3,
            blobs_copied: 4,
            bytes_transferred: 4096,
            ..ReplicationRun::default()
        };
        let status = compute(&policy(), observed(Some(run)), &now());
        assert!(is_true(&status.conditions, "Ready"));
        assert!(
            get(&status, "Ready")
                .message
                .contains("on schedule \"@hourly\", on push")
        );
        let last = get(&status, LAST_RUN_SUCCEEDED);
        assert_eq!(
            (last.status.as_str(), last.reason.as_str()),
            ("True", "Completed")
        );
        assert!(
            last.message.contains("2 of 5 tags copied, 3 unchanged"),
            "{}",
            last.message
        );
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn a_partly_failed_run_names_the_first_reason() {
        let run = ReplicationRun {
            job_name: "j".into(),
            succeeded: false,
            copied: 1,
            failed: 1,
            failures: vec![ReplicationFailure {
                repository: "private/secret".into(),
                tag: None,
                reason: "listing the tags: denied".into(),
            }],
            ..ReplicationRun::default()
        };
        let status = compute(&policy(), observed(Some(run)), &now());
        assert!(!is_true(&status.conditions, "Ready"));
        assert_eq!(get(&status, "Ready").reason, "LastRunFailed");
        let last = get(&status, LAST_RUN_SUCCEEDED);
        assert_eq!(
            (last.status.as_str(), last.reason.as_str()),
            ("False", "PartialFailure")
        );
        assert!(last.message.contains("denied"));
        // A failed run is not a spec problem: nothing stalls.
        assert!(!is_true(&status.conditions, "Stalled"));
    }

    #[test]
    fn a_missing_registry_stalls_and_running_jobs_reconcile() {
        let mut missing = observed(None);
        missing.blocker = Some(Blocker::Missing {
            reason: "RegistryNotFound",
            message: "Registry r/prod does not exist".into(),
        });
        let status = compute(&policy(), missing, &now());
        assert_eq!(get(&status, "Stalled").reason, "RegistryNotFound");
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.type_ != LAST_RUN_SUCCEEDED)
        );

        let mut running = observed(None);
        running.active_runs = vec!["a".into(), "b".into()];
        let status = compute(&policy(), running, &now());
        assert!(is_true(&status.conditions, "Reconciling"));
        assert!(get(&status, "Reconciling").message.contains("1 more"));
    }

    #[test]
    fn a_second_pass_with_nothing_new_computes_the_same_status() {
        let run = ReplicationRun {
            job_name: "j".into(),
            succeeded: true,
            ..ReplicationRun::default()
        };
        let mut p = policy();
        let first = compute(&p, observed(Some(run)), &now());
        p.status = Some(first.clone());
        let later = Time(Timestamp::from_second(5_000).unwrap());
        assert_eq!(compute(&p, observed(None), &later), first);
    }
}
