//! The policy's status (pure): kstatus conditions from what this pass found, plus
//! `LastRunSucceeded` from the newest finished run.

use crate::crd::registry::GarbageCollectionRun;
use crate::crd::retention_policy::{RetentionPolicy, RetentionPolicyStatus, RetentionRun};
use crate::operator::conditions::{condition, kstatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const LAST_RUN_SUCCEEDED: &str = "LastRunSucceeded";

/// What keeps the policy from being in force, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// Only a spec change helps.
    Invalid(String),
    /// An object the spec names does not exist (its Registry): the user creates it or changes
    /// the spec, as for a Registry's missing Secret. Looked at again when it appears.
    Missing {
        reason: &'static str,
        message: String,
    },
    /// Waiting for something that comes by itself (the cluster listing, the registry's robot).
    Waiting {
        reason: &'static str,
        message: String,
    },
}

pub struct Observed {
    pub blocker: Option<Blocker>,
    pub active_run: Option<String>,
    pub last_run: Option<RetentionRun>,
    pub last_garbage_collection: Option<GarbageCollectionRun>,
    pub last_requested_at: Option<String>,
}

pub fn compute(policy: &RetentionPolicy, observed: Observed, now: &Time) -> RetentionPolicyStatus {
    let previous = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let last_run = observed.last_run.or(previous.last_run.clone());
    let run_stalled = last_run.as_ref().and_then(|r| r.stalled) == Some(true);
    let run_failed = last_run.as_ref().and_then(|r| r.succeeded) == Some(false);
    let run_message = last_run
        .as_ref()
        .and_then(|r| r.message.clone())
        .unwrap_or_default();
    let ready = match (&observed.blocker, run_stalled, run_failed) {
        (Some(Blocker::Invalid(m)), ..) => (false, "InvalidPolicy", m.clone()),
        (Some(Blocker::Waiting { reason, message } | Blocker::Missing { reason, message }), ..) => {
            (false, *reason, message.clone())
        }
        (None, true, _) => (false, "TooManyDeletions", run_message.clone()),
        (None, false, true) => (false, "LastRunFailed", run_message.clone()),
        (None, false, false) => (
            true,
            "Ready",
            match &policy.spec.schedule {
                Some(s) => format!("runs on schedule {s:?} and on request"),
                None => "runs on request (wharf.dev/requested-at)".into(),
            },
        ),
    };
    let reconciling = match (&observed.blocker, &observed.active_run) {
        (Some(Blocker::Waiting { reason, message }), _) => (true, *reason, message.clone()),
        (_, Some(job)) => (true, "Running", format!("Job {job} is running")),
        _ => (false, "Idle", String::new()),
    };
    let stalled = match (&observed.blocker, run_stalled) {
        (Some(Blocker::Invalid(m)), _) => (true, "InvalidPolicy", m.clone()),
        (Some(Blocker::Missing { reason, message }), _) => (true, *reason, message.clone()),
        (_, true) => (true, "TooManyDeletions", run_message.clone()),
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
        let (ok, reason) = match (run.succeeded, run.stalled, run.dry_run) {
            (_, Some(true), _) => (false, "TooManyDeletions"),
            (Some(true), _, Some(true)) => (true, "DryRunCompleted"),
            (Some(true), _, _) => (true, "Completed"),
            _ if run.tags_deleted.unwrap_or(0) + run.manifests_deleted.unwrap_or(0) > 0 => {
                (false, "PartialFailure")
            }
            _ => (false, "Failed"),
        };
        let message = run.message.clone().unwrap_or_else(|| {
            format!(
                "Job {}: {} of {} tags {}",
                run.job_name,
                if run.dry_run == Some(true) {
                    run.tags_to_delete.unwrap_or(0)
                } else {
                    run.tags_deleted.unwrap_or(0)
                },
                run.tags_evaluated.unwrap_or(0),
                if run.dry_run == Some(true) {
                    "would be deleted"
                } else {
                    "deleted"
                }
            )
        });
        conditions.push(condition(
            &previous.conditions,
            LAST_RUN_SUCCEEDED,
            ok,
            reason,
            message,
            generation,
            now,
        ));
    }
    RetentionPolicyStatus {
        observed_generation: generation,
        conditions,
        last_run,
        last_garbage_collection: observed
            .last_garbage_collection
            .or(previous.last_garbage_collection),
        last_requested_at: observed.last_requested_at.or(previous.last_requested_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::conditions::is_true;
    use k8s_openapi::jiff::Timestamp;

    fn policy() -> RetentionPolicy {
        let mut p: RetentionPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": "p", "namespace": "r", "generation": 2},
            "spec": {"registryRef": {"name": "main"}, "schedule": "@daily"},
        }))
        .unwrap();
        p.status = None;
        p
    }

    fn observed(last_run: Option<RetentionRun>) -> Observed {
        Observed {
            blocker: None,
            active_run: None,
            last_run,
            last_garbage_collection: None,
            last_requested_at: None,
        }
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    #[test]
    fn a_dry_run_leaves_the_policy_ready() {
        let run = RetentionRun {
            job_name: "j".into(),
            succeeded: Some(true),
            dry_run: Some(true),
            tags_evaluated: Some(180),
            tags_to_delete: Some(90),
            ..RetentionRun::default()
        };
        let status = compute(&policy(), observed(Some(run)), &now());
        assert!(is_true(&status.conditions, "Ready"));
        assert!(!is_true(&status.conditions, "Stalled"));
        let last = status
            .conditions
            .iter()
            .find(|c| c.type_ == LAST_RUN_SUCCEEDED)
            .unwrap();
        assert_eq!(
            (last.status.as_str(), last.reason.as_str()),
            ("True", "DryRunCompleted")
        );
        assert!(last.message.contains("90 of 180 tags would be deleted"));
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn too_many_deletions_stall_the_policy_with_the_reason() {
        let run = RetentionRun {
            job_name: "j".into(),
            succeeded: Some(false),
            stalled: Some(true),
            message: Some(
                "120 deletions exceed maxDeletionsPerRun (10); nothing was deleted".into(),
            ),
            ..RetentionRun::default()
        };
        let status = compute(&policy(), observed(Some(run)), &now());
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(stalled.status, "True");
        assert_eq!(stalled.reason, "TooManyDeletions");
        assert!(stalled.message.contains("maxDeletionsPerRun (10)"));
        assert!(!is_true(&status.conditions, "Ready"));
    }

    #[test]
    fn waiting_and_invalid_policies_say_why() {
        let mut waiting = observed(None);
        waiting.blocker = Some(Blocker::Waiting {
            reason: "ListingCluster",
            message: "listing the images Pods and workloads use".into(),
        });
        let status = compute(&policy(), waiting, &now());
        assert!(is_true(&status.conditions, "Reconciling"));
        assert!(!is_true(&status.conditions, "Stalled"));

        let mut missing = observed(None);
        missing.blocker = Some(Blocker::Missing {
            reason: "RegistryNotFound",
            message: "Registry main does not exist".into(),
        });
        let status = compute(&policy(), missing, &now());
        assert!(!is_true(&status.conditions, "Reconciling"));
        assert!(!is_true(&status.conditions, "Ready"));
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "RegistryNotFound")
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.type_ != LAST_RUN_SUCCEEDED)
        );

        let mut invalid = observed(None);
        invalid.blocker = Some(Blocker::Invalid(
            "tagRegex \"(\" is not a valid regular expression".into(),
        ));
        let status = compute(&policy(), invalid, &now());
        assert!(is_true(&status.conditions, "Stalled"));
        assert!(!is_true(&status.conditions, "Ready"));
    }

    #[test]
    fn a_second_pass_with_nothing_new_computes_the_same_status() {
        let run = RetentionRun {
            job_name: "j".into(),
            succeeded: Some(true),
            dry_run: Some(false),
            ..RetentionRun::default()
        };
        let mut p = policy();
        let first = compute(&p, observed(Some(run)), &now());
        p.status = Some(first.clone());
        let later = Time(Timestamp::from_second(5_000).unwrap());
        assert_eq!(compute(&p, observed(None), &later), first);
    }
}
