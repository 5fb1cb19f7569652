//! Why a rollout does not progress, in the words of the objects that know: a claim that cannot
//! bind (its StorageClass, the provisioner's or binder's event), pods whose image cannot be
//! pulled, that crash (their last log line), or that no node takes (the scheduler's message).
//! Pure: the reconcile observes, this decides; `status.rs` turns it into conditions.

use k8s_openapi::api::core::v1::{ContainerStatus, PersistentVolumeClaim, Pod};
use kube::ResourceExt;

/// A cause the user has to act on (`stalled`), or a wait that explains itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub reason: &'static str,
    pub message: String,
    pub stalled: bool,
}

/// The newest event about an object, as the reconcile found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// A claim of the registry that is not bound yet, with what the reconcile learnt about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClaim {
    pub name: String,
    pub storage_class: Option<String>,
    /// `Some(false)`: the named StorageClass does not exist, or none is named and the cluster
    /// has no default; `None`: not looked up.
    pub class_exists: Option<bool>,
    pub event: Option<EventSummary>,
}

impl PendingClaim {
    pub fn of(claim: &PersistentVolumeClaim) -> Option<PendingClaim> {
        let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
        (phase == Some("Pending") && claim.metadata.deletion_timestamp.is_none()).then(|| {
            PendingClaim {
                name: claim.name_any(),
                storage_class: claim
                    .spec
                    .as_ref()
                    .and_then(|s| s.storage_class_name.clone()),
                class_exists: None,
                event: None,
            }
        })
    }
}

/// Reasons a container waits that no retry fixes: the image reference, the registry's
/// credentials or the pod's configuration has to change.
const PULL_FAILURES: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
const CONFIG_FAILURES: [&str; 2] = ["CreateContainerConfigError", "CreateContainerError"];

/// The first cause found, claims first (a pod waiting for its volume is unschedulable only
/// because of the claim), then containers, then scheduling.
pub fn diagnose(claims: &[PendingClaim], pods: &[&Pod]) -> Option<Diagnosis> {
    let found: Vec<Diagnosis> = claims
        .iter()
        .map(claim_diagnosis)
        .chain(pods.iter().filter_map(|p| pod_diagnosis(p)))
        .collect();
    let first_stalled = found.iter().position(|d| d.stalled);
    found.into_iter().nth(first_stalled.unwrap_or(0))
}

fn claim_diagnosis(claim: &PendingClaim) -> Diagnosis {
    let class = match &claim.storage_class {
        Some(c) => format!("StorageClass {c}"),
        None => "no StorageClass".to_owned(),
    };
    let event = claim
        .event
        .as_ref()
        .map(|e| format!(": {}: {}", e.reason, e.message))
        .unwrap_or_default();
    match (&claim.storage_class, claim.class_exists) {
        (Some(c), Some(false)) => Diagnosis {
            reason: "VolumeClaimPending",
            message: format!(
                "PersistentVolumeClaim {} cannot bind: StorageClass {c} does not exist (storage.persistentVolume.storageClassName){event}",
                claim.name
            ),
            stalled: true,
        },
        (None, Some(false)) => Diagnosis {
            reason: "VolumeClaimPending",
            message: format!(
                "PersistentVolumeClaim {} cannot bind: it names no StorageClass and the cluster has no default one{event}",
                claim.name
            ),
            stalled: true,
        },
        _ => Diagnosis {
            reason: "VolumeClaimPending",
            message: format!(
                "PersistentVolumeClaim {} ({class}) is not bound yet{event}",
                claim.name
            ),
            // The provisioner said it failed: it retries, but the same request fails the same way.
            stalled: claim
                .event
                .as_ref()
                .is_some_and(|e| e.warning && e.reason == "ProvisioningFailed"),
        },
    }
}

/// Why the node access DaemonSet has fewer pods than nodes: the newest warning about it (a
/// Pod Security level that forbids its hostPath, a quota), which only a change fixes; then what
/// its pods say, as for the registry's own.
pub fn node_access_diagnosis(
    daemon_set: &str,
    missing_pods: bool,
    event: Option<&EventSummary>,
    pods: &[&Pod],
) -> Option<Diagnosis> {
    if missing_pods && let Some(e) = event.filter(|e| e.warning) {
        return Some(Diagnosis {
            reason: "NodeAccessFailed",
            message: format!(
                "DaemonSet {daemon_set} (spec.nodeAccess) cannot run on every node: {}: {}",
                e.reason, e.message
            ),
            stalled: true,
        });
    }
    diagnose(&[], pods).map(|d| Diagnosis {
        message: format!("node access: {}", d.message),
        ..d
    })
}

fn pod_diagnosis(pod: &Pod) -> Option<Diagnosis> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        if let Some(d) = container_diagnosis(&name, c) {
            return Some(d);
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    Some(Diagnosis {
        reason: "Unschedulable",
        message: format!(
            "pod {name} cannot be scheduled: {}",
            unschedulable.message.as_deref().unwrap_or("no node fits")
        ),
        // The scheduler retries as nodes change; a cluster autoscaler may add one.
        stalled: true,
    })
}

fn container_diagnosis(pod: &str, c: &ContainerStatus) -> Option<Diagnosis> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    let message = waiting.message.as_deref().unwrap_or_default();
    if PULL_FAILURES.contains(&reason) {
        let image = &c.image;
        return Some(Diagnosis {
            reason: "ImagePullFailed",
            message: format!(
                "pod {pod} cannot pull {image} ({reason}){}",
                suffix(message)
            ),
            stalled: true,
        });
    }
    if CONFIG_FAILURES.contains(&reason) {
        return Some(Diagnosis {
            reason: "ContainerConfigError",
            message: format!(
                "pod {pod}: container {} cannot be created ({reason}){}",
                c.name,
                suffix(message)
            ),
            stalled: true,
        });
    }
    if reason == "CrashLoopBackOff" {
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let exit = last
            .map(|t| format!(", exit code {}", t.exit_code))
            .unwrap_or_default();
        let line = last
            .and_then(|t| t.message.as_deref())
            .and_then(last_log_line)
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        // The registry checks its bucket at start and exits saying what is wrong (wrong keys,
        // no such bucket, an endpoint that does not answer): that is the cause to report.
        let storage = last
            .and_then(|t| t.message.as_deref())
            .and_then(last_log_line)
            .filter(|l| l.contains("cannot use S3 storage"));
        if let Some(storage) = storage {
            return Some(Diagnosis {
                reason: "StorageUnavailable",
                message: format!("pod {pod}: the registry cannot use its storage: {storage}"),
                stalled: true,
            });
        }
        return Some(Diagnosis {
            reason: "CrashLoopBackOff",
            message: format!(
                "pod {pod}: container {} keeps crashing ({} restarts{exit}){line}",
                c.name, c.restart_count
            ),
            stalled: true,
        });
    }
    None
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The last line of a termination message (`FallbackToLogsOnError` puts the log's tail there).
/// The registry logs JSON: its `message` field (and `error`, when there is one) is what a person
/// reads.
pub fn last_log_line(text: &str) -> Option<String> {
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let Ok(serde_json::Value::Object(entry)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        return Some(truncate(line));
    };
    let fields = entry.get("fields").and_then(|f| f.as_object());
    let field = |k: &str| {
        fields
            .and_then(|f| f.get(k))
            .or_else(|| entry.get(k))
            .and_then(|v| v.as_str())
    };
    match (field("message"), field("error")) {
        (Some(m), Some(e)) => Some(truncate(&format!("{m}: {e}"))),
        (Some(m), None) => Some(truncate(m)),
        _ => Some(truncate(line)),
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 512;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "main-0"}, "status": status})).unwrap()
    }

    fn claim(
        class: Option<&str>,
        exists: Option<bool>,
        event: Option<(bool, &str, &str)>,
    ) -> PendingClaim {
        PendingClaim {
            name: "data-main-0".into(),
            storage_class: class.map(Into::into),
            class_exists: exists,
            event: event.map(|(warning, reason, message)| EventSummary {
                warning,
                reason: reason.into(),
                message: message.into(),
            }),
        }
    }

    #[test]
    fn a_missing_storage_class_stalls_and_names_claim_class_and_event() {
        let unschedulable = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "pod has unbound immediate PersistentVolumeClaims"}]}),
        );
        let d = diagnose(
            &[claim(
                Some("fast"),
                Some(false),
                Some((
                    true,
                    "ProvisioningFailed",
                    "storageclass.storage.k8s.io \"fast\" not found",
                )),
            )],
            &[&unschedulable],
        )
        .unwrap();
        assert_eq!(d.reason, "VolumeClaimPending");
        assert!(d.stalled);
        for part in [
            "data-main-0",
            "StorageClass fast does not exist",
            "ProvisioningFailed",
            "\"fast\" not found",
        ] {
            assert!(d.message.contains(part), "{part} in {}", d.message);
        }
        let d = diagnose(&[claim(None, Some(false), None)], &[]).unwrap();
        assert!(d.stalled && d.message.contains("no default"));
    }

    #[test]
    fn a_claim_waiting_normally_explains_itself_without_stalling() {
        let d = diagnose(
            &[claim(
                Some("standard"),
                Some(true),
                Some((
                    false,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                )),
            )],
            &[],
        )
        .unwrap();
        assert!(!d.stalled);
        assert!(d.message.contains("not bound yet") && d.message.contains("WaitForFirstConsumer"));
        let failed = diagnose(
            &[claim(
                Some("standard"),
                Some(true),
                Some((true, "ProvisioningFailed", "quota exceeded")),
            )],
            &[],
        )
        .unwrap();
        assert!(failed.stalled);
    }

    #[test]
    fn image_pull_errors_stall_with_the_image_and_the_kubelets_message() {
        for reason in ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"] {
            let p = pod(
                json!({"containerStatuses": [{"name": "registry", "image": "wharf.local/wharf:nope",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "Back-off pulling image \"wharf.local/wharf:nope\""}}}]}),
            );
            let d = diagnose(&[], &[&p]).unwrap();
            assert_eq!(d.reason, "ImagePullFailed");
            assert!(d.stalled);
            assert!(
                d.message.contains("wharf.local/wharf:nope") && d.message.contains(reason),
                "{}",
                d.message
            );
        }
    }

    #[test]
    fn a_crash_loop_stalls_with_the_last_log_line() {
        let log = "{\"level\":\"INFO\",\"fields\":{\"message\":\"starting\"}}\n\
                   {\"level\":\"ERROR\",\"fields\":{\"message\":\"cannot open storage\",\"error\":\"permission denied: /var/lib/wharf\"}}\n";
        let p = pod(
            json!({"containerStatuses": [{"name": "registry", "image": "wharf", "imageID": "", "ready": false,
            "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 1, "message": log}}}]}),
        );
        let d = diagnose(&[], &[&p]).unwrap();
        assert_eq!(d.reason, "CrashLoopBackOff");
        assert!(d.stalled);
        assert!(
            d.message.contains("4 restarts, exit code 1"),
            "{}",
            d.message
        );
        assert!(
            d.message
                .ends_with("cannot open storage: permission denied: /var/lib/wharf"),
            "{}",
            d.message
        );
        assert_eq!(
            last_log_line("plain text\n\n").as_deref(),
            Some("plain text")
        );
        assert_eq!(last_log_line("  \n"), None);
        assert!(truncate(&"é".repeat(600)).ends_with('…'));
    }

    #[test]
    fn a_registry_that_cannot_use_its_bucket_says_so() {
        let log = "wharf: cannot use S3 storage: bucket \"images\" is not usable: the bucket does not exist\n";
        let p = pod(
            json!({"containerStatuses": [{"name": "registry", "image": "wharf", "imageID": "", "ready": false,
            "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
            "lastState": {"terminated": {"exitCode": 1, "message": log}}}]}),
        );
        let d = diagnose(&[], &[&p]).unwrap();
        assert_eq!(d.reason, "StorageUnavailable");
        assert!(d.stalled);
        assert!(
            d.message
                .ends_with("bucket \"images\" is not usable: the bucket does not exist"),
            "{}",
            d.message
        );
    }

    #[test]
    fn unschedulable_pods_and_config_errors_stall() {
        let p = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient memory."}]}),
        );
        let d = diagnose(&[], &[&p]).unwrap();
        assert_eq!(d.reason, "Unschedulable");
        assert!(d.message.contains("Insufficient memory"));
        let p = pod(
            json!({"containerStatuses": [{"name": "registry", "image": "wharf", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "CreateContainerConfigError",
            "message": "secret \"x\" not found"}}}]}),
        );
        assert_eq!(diagnose(&[], &[&p]).unwrap().reason, "ContainerConfigError");
    }

    #[test]
    fn a_node_access_daemon_set_that_cannot_create_pods_stalls_with_the_admission_message() {
        let forbidden = EventSummary {
            warning: true,
            reason: "FailedCreate".into(),
            message: "pods \"main-node-access-x\" is forbidden: violates PodSecurity \"baseline:latest\": hostPath volumes".into(),
        };
        let d = node_access_diagnosis("main-node-access", true, Some(&forbidden), &[]).unwrap();
        assert_eq!(d.reason, "NodeAccessFailed");
        assert!(
            d.stalled
                && d.message.contains("PodSecurity")
                && d.message.contains("main-node-access")
        );
        // All pods exist: the event is old news; their own state decides.
        assert_eq!(
            node_access_diagnosis("main-node-access", false, Some(&forbidden), &[]),
            None
        );
        let pulling = pod(
            json!({"containerStatuses": [{"name": "node-config", "image": "wharf:x", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
        );
        let d = node_access_diagnosis("main-node-access", false, None, &[&pulling]).unwrap();
        assert_eq!(d.reason, "ImagePullFailed");
        assert!(d.message.starts_with("node access: "));
    }

    #[test]
    fn healthy_or_starting_pods_say_nothing() {
        let running = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "registry", "image": "wharf", "imageID": "", "ready": true,
            "restartCount": 0, "state": {"running": {}}}]}),
        );
        let creating = pod(
            json!({"containerStatuses": [{"name": "registry", "image": "wharf", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(diagnose(&[], &[&running, &creating]), None);
    }
}
