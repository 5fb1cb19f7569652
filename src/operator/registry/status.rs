//! Status: computed from what was applied and what the workload reports, never from hopes.
//! Pure, like build: the reconcile passes in the observed objects and the clock.

use super::build::{endpoint, replicas};
use super::names::ChildNames;
use crate::crd::common::LocalObjectReference;
use crate::crd::registry::{Registry, RegistryStatus};
use crate::operator::conditions::kstatus;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

/// A reason the Registry cannot be deployed that only a change to the spec (or to an object it
/// references) can fix: kstatus `Stalled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// What the workload controller reports about the registry pods.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkloadObservation {
    pub desired: i32,
    /// The workload controller has seen the latest workload spec.
    pub generation_observed: bool,
    pub total: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// StatefulSets finish a rollout when the current revision is the update revision.
    pub revision_pending: bool,
    /// The Deployment gave up on its rollout (`ProgressDeadlineExceeded`).
    pub deadline_exceeded: Option<String>,
}

impl WorkloadObservation {
    pub fn of_deployment(d: &Deployment) -> WorkloadObservation {
        let status = d.status.clone().unwrap_or_default();
        let deadline_exceeded = status
            .conditions
            .iter()
            .flatten()
            .find(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
            .map(|c| c.message.clone().unwrap_or_default());
        WorkloadObservation {
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            generation_observed: status.observed_generation >= d.metadata.generation,
            total: status.replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            revision_pending: false,
            deadline_exceeded,
        }
    }

    pub fn of_stateful_set(s: &StatefulSet) -> WorkloadObservation {
        let status = s.status.clone().unwrap_or_default();
        WorkloadObservation {
            desired: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            generation_observed: status.observed_generation >= s.metadata.generation,
            total: status.replicas,
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            revision_pending: status.update_revision.is_some()
                && status.current_revision != status.update_revision,
            deadline_exceeded: None,
        }
    }

    fn rolled_out(&self) -> bool {
        self.generation_observed
            && !self.revision_pending
            && self.total == self.desired
            && self.updated == self.desired
            && self.ready == self.desired
            && self.available == self.desired
    }
}

fn external_endpoint(registry: &Registry, service: Option<&Service>) -> Option<String> {
    if let Some(ingress) = &registry.spec.ingress {
        return Some(ingress.host.clone());
    }
    let port = super::build::service_port(registry);
    let balancer = service?
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    balancer
        .ip
        .clone()
        .or_else(|| balancer.hostname.clone())
        .map(|host| format!("{host}:{port}"))
}

/// A condition's status, reason and message.
type Verdict = (bool, &'static str, String);

/// The status for `registry`, given a problem that stopped the build (if any), the workload as
/// observed, and the Service.
pub fn compute(
    registry: &Registry,
    problem: Option<&Problem>,
    workload: Option<&WorkloadObservation>,
    service: Option<&Service>,
    now: &Time,
) -> RegistryStatus {
    let previous = registry.status.clone().unwrap_or_default();
    let generation = registry.metadata.generation;
    let desired = replicas(registry);
    let (ready, reconciling, stalled): (Verdict, Verdict, Verdict) = match (problem, workload) {
        (Some(p), _) => (
            (false, p.reason, p.message.clone()),
            (false, p.reason, String::new()),
            (true, p.reason, p.message.clone()),
        ),
        (None, Some(w)) if w.deadline_exceeded.is_some() => {
            let message = w.deadline_exceeded.clone().unwrap_or_default();
            (
                (false, "ProgressDeadlineExceeded", message.clone()),
                (false, "ProgressDeadlineExceeded", String::new()),
                (true, "ProgressDeadlineExceeded", message),
            )
        }
        (None, Some(w)) if w.rolled_out() && w.desired == desired => {
            let message = match desired {
                0 => "scaled to zero".to_owned(),
                1 => "1 pod ready".to_owned(),
                n => format!("{n} pods ready"),
            };
            (
                (true, "Available", message),
                (false, "Available", String::new()),
                (false, "Available", String::new()),
            )
        }
        (None, observed) => {
            let message = match observed {
                None => "creating the registry workload".to_owned(),
                Some(w) => format!(
                    "rolling out: {} of {desired} pods updated, {} ready",
                    w.updated, w.ready
                ),
            };
            (
                (false, "Progressing", message.clone()),
                (true, "Progressing", message),
                (false, "Progressing", String::new()),
            )
        }
    };
    let conditions = kstatus(
        &previous.conditions,
        ready,
        reconciling,
        stalled,
        generation,
        now,
    );
    RegistryStatus {
        observed_generation: generation,
        conditions,
        endpoint: problem.is_none().then(|| endpoint(registry)),
        external_endpoint: problem
            .is_none()
            .then(|| external_endpoint(registry, service))
            .flatten(),
        ready_replicas: Some(workload.map(|w| w.ready).unwrap_or(0)),
        admin_credentials_secret_ref: problem.is_none().then(|| LocalObjectReference {
            name: ChildNames::new(&registry.name_any()).admin_secret(),
        }),
        last_garbage_collection: previous.last_garbage_collection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::conditions::{READY, RECONCILING, STALLED, is_true};
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn registry(generation: i64) -> Registry {
        serde_json::from_value(json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "main", "namespace": "team", "generation": generation},
            "spec": {"storage": {"emptyDir": {}}},
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn settled() -> WorkloadObservation {
        WorkloadObservation {
            desired: 1,
            generation_observed: true,
            total: 1,
            updated: 1,
            ready: 1,
            available: 1,
            ..Default::default()
        }
    }

    fn kstatus(s: &RegistryStatus) -> (bool, bool, bool) {
        (
            is_true(&s.conditions, READY),
            is_true(&s.conditions, RECONCILING),
            is_true(&s.conditions, STALLED),
        )
    }

    #[test]
    fn ready_only_when_the_rollout_is_complete() {
        let r = registry(3);
        let s = compute(&r, None, Some(&settled()), None, &now());
        assert_eq!(kstatus(&s), (true, false, false));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.endpoint.as_deref(), Some("main.team.svc:5000"));
        assert_eq!(s.ready_replicas, Some(1));
        assert_eq!(s.admin_credentials_secret_ref.unwrap().name, "main-admin");
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );

        let not_yet = [
            WorkloadObservation {
                generation_observed: false,
                ..settled()
            },
            WorkloadObservation {
                total: 2,
                ..settled()
            },
            WorkloadObservation {
                updated: 0,
                ..settled()
            },
            WorkloadObservation {
                ready: 0,
                available: 0,
                ..settled()
            },
            WorkloadObservation {
                revision_pending: true,
                ..settled()
            },
        ];
        for w in not_yet {
            let s = compute(&r, None, Some(&w), None, &now());
            assert_eq!(kstatus(&s), (false, true, false), "{w:?}");
            assert!(s.conditions[0].message.contains("rolling out"));
        }
        let s = compute(&r, None, None, None, &now());
        assert_eq!(kstatus(&s), (false, true, false));
    }

    #[test]
    fn a_scale_change_the_workload_has_not_seen_is_not_ready() {
        let mut r = registry(4);
        r.spec.replicas = Some(2);
        let s = compute(&r, None, Some(&settled()), None, &now());
        assert_eq!(kstatus(&s), (false, true, false));
    }

    #[test]
    fn problems_and_failed_rollouts_stall() {
        let r = registry(1);
        let problem = Problem {
            reason: "SecretNotFound",
            message: "Secret team/users (auth.htpasswdSecretRef) does not exist".into(),
        };
        let s = compute(&r, Some(&problem), Some(&settled()), None, &now());
        assert_eq!(kstatus(&s), (false, false, true));
        assert_eq!(s.conditions[0].reason, "SecretNotFound");
        assert!(s.conditions[2].message.contains("does not exist"));

        let failed = WorkloadObservation {
            deadline_exceeded: Some("ReplicaSet has timed out progressing".into()),
            ..settled()
        };
        let s = compute(&r, None, Some(&failed), None, &now());
        assert_eq!(kstatus(&s), (false, false, true));
    }

    #[test]
    fn an_unchanged_status_is_equal_so_it_is_not_written_again() {
        let mut r = registry(1);
        let first = compute(&r, None, Some(&settled()), None, &now());
        r.status = Some(first.clone());
        let later = Time(Timestamp::from_second(1_900_000_000).unwrap());
        assert_eq!(compute(&r, None, Some(&settled()), None, &later), first);
    }
}
