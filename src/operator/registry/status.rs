//! Status: computed from what was applied and what the workload reports, never from hopes.
//! Pure, like build: the reconcile passes in the observed objects and the clock.

use super::build::{endpoint, replicas};
use super::diagnose::Diagnosis;
use super::names::ChildNames;
use crate::crd::common::LocalObjectReference;
use crate::crd::registry::{NodeAccessStatus, Registry, RegistryStatus};
use crate::operator::conditions::kstatus;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
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

/// The node access DaemonSet, as its controller reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeAccessObservation {
    pub hosts: Vec<String>,
    pub nodes: i32,
    pub configured: i32,
    pub rolled_out: bool,
    /// Whether the DaemonSet has fewer pods than nodes (its events then say why).
    pub missing_pods: bool,
    /// Why it does not roll out, when something says.
    pub problem: Option<Diagnosis>,
}

impl NodeAccessObservation {
    /// `daemon_set` is None while it is not created (or not seen) yet.
    pub fn of(hosts: Vec<String>, daemon_set: Option<&DaemonSet>) -> NodeAccessObservation {
        let Some(ds) = daemon_set else {
            return NodeAccessObservation {
                hosts,
                ..NodeAccessObservation::default()
            };
        };
        let status = ds.status.clone().unwrap_or_default();
        let nodes = status.desired_number_scheduled;
        NodeAccessObservation {
            hosts,
            nodes,
            configured: status.number_ready,
            rolled_out: status.observed_generation >= ds.metadata.generation
                && status.updated_number_scheduled.unwrap_or(0) == nodes
                && status.number_ready == nodes,
            missing_pods: status.current_number_scheduled < nodes,
            problem: None,
        }
    }
}

/// What the reconcile observed besides the Registry itself.
#[derive(Default)]
pub struct Observed<'a> {
    /// A reason the build stopped (a missing Secret, unavailable storage).
    pub problem: Option<&'a Problem>,
    pub workload: Option<&'a WorkloadObservation>,
    /// Why the rollout does not progress, from its claims and pods.
    pub diagnosis: Option<&'a Diagnosis>,
    pub service: Option<&'a Service>,
    /// `spec.nodeAccess`: None without it.
    pub node_access: Option<&'a NodeAccessObservation>,
}

/// The status for `registry`, given what was observed.
pub fn compute(registry: &Registry, observed: &Observed, now: &Time) -> RegistryStatus {
    let Observed {
        problem,
        workload,
        diagnosis,
        service,
        node_access,
    } = *observed;
    let previous = registry.status.clone().unwrap_or_default();
    let generation = registry.metadata.generation;
    let desired = replicas(registry);
    let rolled_out = workload.is_some_and(|w| w.rolled_out() && w.desired == desired);
    // A settled rollout is the answer; a diagnosis only explains one that is not.
    let stuck = diagnosis.filter(|_| !rolled_out);
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
        (None, _) if let Some(d) = stuck.cloned() => {
            if d.stalled {
                (
                    (false, d.reason, d.message.clone()),
                    (false, d.reason, String::new()),
                    (true, d.reason, d.message),
                )
            } else {
                (
                    (false, d.reason, d.message.clone()),
                    (true, d.reason, d.message),
                    (false, d.reason, String::new()),
                )
            }
        }
        (None, Some(_)) if rolled_out && node_access.is_some_and(|n| !n.rolled_out) => {
            let n = node_access.cloned().unwrap_or_default();
            match n.problem {
                Some(d) if d.stalled => (
                    (false, d.reason, d.message.clone()),
                    (false, d.reason, String::new()),
                    (true, d.reason, d.message),
                ),
                _ => {
                    let message = format!(
                        "configuring containerd on the nodes: {} of {} done",
                        n.configured, n.nodes
                    );
                    (
                        (false, "ConfiguringNodes", message.clone()),
                        (true, "ConfiguringNodes", message),
                        (false, "ConfiguringNodes", String::new()),
                    )
                }
            }
        }
        (None, Some(_)) if rolled_out => {
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
        node_access: node_access.map(|n| NodeAccessStatus {
            hosts: n.hosts.clone(),
            nodes: n.nodes,
            configured: n.configured,
        }),
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

    fn observed<'a>(
        problem: Option<&'a Problem>,
        workload: Option<&'a WorkloadObservation>,
    ) -> Observed<'a> {
        Observed {
            problem,
            workload,
            ..Observed::default()
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
        let s = compute(&r, &observed(None, Some(&settled())), &now());
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
            let s = compute(&r, &observed(None, Some(&w)), &now());
            assert_eq!(kstatus(&s), (false, true, false), "{w:?}");
            assert!(s.conditions[0].message.contains("rolling out"));
        }
        let s = compute(&r, &observed(None, None), &now());
        assert_eq!(kstatus(&s), (false, true, false));
    }

    #[test]
    fn a_scale_change_the_workload_has_not_seen_is_not_ready() {
        let mut r = registry(4);
        r.spec.replicas = Some(2);
        let s = compute(&r, &observed(None, Some(&settled())), &now());
        assert_eq!(kstatus(&s), (false, true, false));
    }

    #[test]
    fn problems_and_failed_rollouts_stall() {
        let r = registry(1);
        let problem = Problem {
            reason: "SecretNotFound",
            message: "Secret team/users (auth.htpasswdSecretRef) does not exist".into(),
        };
        let s = compute(&r, &observed(Some(&problem), Some(&settled())), &now());
        assert_eq!(kstatus(&s), (false, false, true));
        assert_eq!(s.conditions[0].reason, "SecretNotFound");
        assert!(s.conditions[2].message.contains("does not exist"));

        let failed = WorkloadObservation {
            deadline_exceeded: Some("ReplicaSet has timed out progressing".into()),
            ..settled()
        };
        let s = compute(&r, &observed(None, Some(&failed)), &now());
        assert_eq!(kstatus(&s), (false, false, true));
    }

    #[test]
    fn a_diagnosis_explains_a_rollout_that_does_not_progress() {
        let r = registry(2);
        let pending = WorkloadObservation {
            ready: 0,
            available: 0,
            ..settled()
        };
        let stuck = Diagnosis {
            reason: "VolumeClaimPending",
            message: "PersistentVolumeClaim data-main-0 cannot bind".into(),
            stalled: true,
        };
        let with = |d: &Diagnosis, w: &WorkloadObservation| {
            compute(
                &r,
                &Observed {
                    workload: Some(w),
                    diagnosis: Some(d),
                    ..Observed::default()
                },
                &now(),
            )
        };
        let s = with(&stuck, &pending);
        assert_eq!(kstatus(&s), (false, false, true));
        assert_eq!(s.conditions[0].reason, "VolumeClaimPending");
        assert!(s.conditions[0].message.contains("data-main-0"));
        let waiting = Diagnosis {
            stalled: false,
            ..stuck.clone()
        };
        let s = with(&waiting, &pending);
        assert_eq!(kstatus(&s), (false, true, false));
        assert_eq!(s.conditions[1].reason, "VolumeClaimPending");
        // Once the rollout is complete, a leftover observation does not matter.
        assert_eq!(kstatus(&with(&stuck, &settled())), (true, false, false));
    }

    #[test]
    fn node_access_is_part_of_ready() {
        let r = registry(1);
        let with = |n: &NodeAccessObservation| {
            compute(
                &r,
                &Observed {
                    workload: Some(&settled()),
                    node_access: Some(n),
                    ..Observed::default()
                },
                &now(),
            )
        };
        let pending = NodeAccessObservation {
            hosts: vec!["main.team.svc:5000".into()],
            nodes: 2,
            configured: 1,
            ..NodeAccessObservation::default()
        };
        let s = with(&pending);
        assert_eq!(kstatus(&s), (false, true, false));
        assert!(s.conditions[0].message.contains("1 of 2"));
        let done = NodeAccessObservation {
            configured: 2,
            rolled_out: true,
            ..pending.clone()
        };
        let s = with(&done);
        assert_eq!(kstatus(&s), (true, false, false));
        let forbidden = NodeAccessObservation {
            problem: Some(Diagnosis {
                reason: "NodeAccessFailed",
                message: "violates PodSecurity".into(),
                stalled: true,
            }),
            ..pending.clone()
        };
        let stalled = with(&forbidden);
        assert_eq!(kstatus(&stalled), (false, false, true));
        assert_eq!(stalled.conditions[2].reason, "NodeAccessFailed");
        let reported = s.node_access.unwrap();
        assert_eq!((reported.nodes, reported.configured), (2, 2));
        assert_eq!(reported.hosts, ["main.team.svc:5000"]);
    }

    #[test]
    fn an_unchanged_status_is_equal_so_it_is_not_written_again() {
        let mut r = registry(1);
        let first = compute(&r, &observed(None, Some(&settled())), &now());
        r.status = Some(first.clone());
        let later = Time(Timestamp::from_second(1_900_000_000).unwrap());
        assert_eq!(
            compute(&r, &observed(None, Some(&settled())), &later),
            first
        );
    }
}
