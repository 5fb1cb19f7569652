//! The status of an ImagePullCredential, computed from what the pass found and did. Pure.

use super::source::{Credential, SourceProblem};
use crate::crd::image_pull_credential::{
    ImagePullCredentialStatus, NamespaceCounts, NamespaceFailure,
};
use crate::operator::conditions::kstatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// At most this many failures are listed; the counts cover the rest.
pub const MAX_FAILURES_LISTED: usize = 10;

#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub matched: usize,
    pub failures: Vec<NamespaceFailure>,
    pub written: usize,
}

pub fn compute(
    previous: Option<&ImagePullCredentialStatus>,
    generation: Option<i64>,
    source: Result<&Credential, &SourceProblem>,
    outcome: Option<&SyncOutcome>,
    now: &Time,
) -> ImagePullCredentialStatus {
    let old = previous.cloned().unwrap_or_default();
    let prev = &old.conditions;
    let mut status = ImagePullCredentialStatus {
        observed_generation: generation,
        source_hash: old.source_hash.clone(),
        namespaces: old.namespaces.clone(),
        failures: old.failures.clone(),
        credential_expires_at: old.credential_expires_at.clone(),
        conditions: Vec::new(),
    };
    match (source, outcome) {
        (Err(problem), _) => {
            let stalled = !matches!(problem, SourceProblem::Unreachable(_));
            let message = format!("{problem}; existing copies are kept");
            let reason = problem.reason();
            status.conditions = kstatus(
                prev,
                (false, reason, message.clone()),
                (!stalled, reason, message.clone()),
                (stalled, reason, message),
                generation,
                now,
            );
        }
        (Ok(credential), Some(outcome)) => {
            let failed = outcome.failures.len();
            let synced = outcome.matched.saturating_sub(failed);
            status.source_hash = Some(credential.hash.clone());
            status.credential_expires_at = credential
                .expires_at
                .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t).ok())
                .map(Time);
            status.namespaces = Some(NamespaceCounts {
                matched: outcome.matched as i32,
                synced: synced as i32,
                failed: failed as i32,
            });
            let mut failures = outcome.failures.clone();
            failures.sort_by(|a, b| a.namespace.cmp(&b.namespace));
            failures.truncate(MAX_FAILURES_LISTED);
            status.failures = failures;
            let (ready, reason, message) = match failed {
                0 => (
                    true,
                    "Synced",
                    format!("synced to {synced} of {} namespaces", outcome.matched),
                ),
                n => (
                    false,
                    "PartiallySynced",
                    format!("{n} of {} namespaces failed", outcome.matched),
                ),
            };
            status.conditions = kstatus(
                prev,
                (ready, reason, message.clone()),
                (!ready, reason, message.clone()),
                (false, reason, message),
                generation,
                now,
            );
        }
        (Ok(_), None) => {}
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred() -> Credential {
        Credential {
            docker_config: b"{}".to_vec(),
            hash: "sha256:1".into(),
            expires_at: Some(2_000_000_000),
            renew_at: None,
        }
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())
    }

    #[test]
    fn synced_partially_synced_and_stalled() {
        let ok = compute(
            None,
            Some(3),
            Ok(&cred()),
            Some(&SyncOutcome {
                matched: 4,
                failures: vec![],
                written: 4,
            }),
            &now(),
        );
        assert_eq!(
            ok.namespaces,
            Some(NamespaceCounts {
                matched: 4,
                synced: 4,
                failed: 0
            })
        );
        assert_eq!(ok.conditions[0].status, "True");
        assert_eq!(ok.observed_generation, Some(3));
        assert!(ok.credential_expires_at.is_some());

        let failures: Vec<NamespaceFailure> = (0..12)
            .map(|i| NamespaceFailure {
                namespace: format!("ns-{i:02}"),
                reason: "Conflict".into(),
                message: "m".into(),
            })
            .collect();
        let partial = compute(
            Some(&ok),
            Some(3),
            Ok(&cred()),
            Some(&SyncOutcome {
                matched: 20,
                failures,
                written: 0,
            }),
            &now(),
        );
        assert_eq!(partial.conditions[0].reason, "PartiallySynced");
        assert_eq!(partial.conditions[0].message, "12 of 20 namespaces failed");
        assert_eq!(partial.failures.len(), MAX_FAILURES_LISTED);
        assert_eq!(partial.namespaces.unwrap().synced, 8);

        let problem = SourceProblem::NotFound("Secret ops/pull does not exist".into());
        let stalled = compute(Some(&ok), Some(4), Err(&problem), None, &now());
        assert_eq!(stalled.conditions[2].status, "True");
        assert_eq!(stalled.conditions[0].reason, "SourceNotFound");
        assert_eq!(
            stalled.source_hash.as_deref(),
            Some("sha256:1"),
            "the last good state is kept"
        );
        let down = compute(
            Some(&ok),
            Some(4),
            Err(&SourceProblem::Unreachable("x".into())),
            None,
            &now(),
        );
        assert_eq!(
            (
                down.conditions[1].status.as_str(),
                down.conditions[2].status.as_str()
            ),
            ("True", "False")
        );
    }

    #[test]
    fn an_unchanged_pass_computes_an_identical_status() {
        let outcome = SyncOutcome {
            matched: 2,
            failures: vec![],
            written: 0,
        };
        let first = compute(None, Some(1), Ok(&cred()), Some(&outcome), &now());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_500).unwrap());
        assert_eq!(
            compute(Some(&first), Some(1), Ok(&cred()), Some(&outcome), &later),
            first
        );
    }
}
