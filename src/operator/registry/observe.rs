//! What a pass observes beyond the children it owns, to explain a rollout that does not
//! progress: the claims that are not bound (their StorageClass, their events), the node access
//! DaemonSet (its events, its pods). Every API call here happens only while something is stuck;
//! a settled Registry costs none. The decisions are `diagnose.rs`'s.

use super::Context;
use super::diagnose::{Diagnosis, EventSummary, PendingClaim, diagnose, node_access_diagnosis};
use super::status::NodeAccessObservation;
use super::stores::LiveChildren;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

#[derive(Debug, thiserror::Error)]
#[error("cannot read {what}: {source}")]
pub struct ObserveError {
    pub what: String,
    pub source: kube::Error,
}

/// The registry's claims that are not bound, with their StorageClass looked up and their newest
/// event (a warning first). API calls only while a claim is pending.
pub async fn pending_claims(
    ctx: &Context,
    namespace: &str,
    live: &LiveChildren,
) -> Result<Vec<PendingClaim>, ObserveError> {
    let read = |what: String| move |source| ObserveError { what, source };
    let mut pending: Vec<PendingClaim> = live
        .claims
        .iter()
        .filter_map(|c| PendingClaim::of(c))
        .collect();
    if pending.is_empty() {
        return Ok(pending);
    }
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), namespace);
    for claim in &mut pending {
        claim.class_exists = Some(match &claim.storage_class {
            Some(class) => classes
                .get_opt(class)
                .await
                .map_err(read(format!("StorageClass {class}")))?
                .is_some(),
            None => classes
                .list(&ListParams::default())
                .await
                .map_err(read("StorageClasses".into()))?
                .items
                .iter()
                .any(|c| {
                    c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                        .is_some_and(|v| v == "true")
                }),
        });
        claim.event = newest_event(&events, "PersistentVolumeClaim", &claim.name).await?;
    }
    Ok(pending)
}

/// The newest event about an object, a warning before anything else.
pub async fn newest_event(
    events: &Api<Event>,
    kind: &str,
    name: &str,
) -> Result<Option<EventSummary>, ObserveError> {
    let selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
    let mut found = events
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|source| ObserveError {
            what: format!("events of {kind} {name}"),
            source,
        })?
        .items;
    found.sort_by_key(|e| {
        (
            e.type_.as_deref() == Some("Warning"),
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        )
    });
    Ok(found.last().map(|e| EventSummary {
        warning: e.type_.as_deref() == Some("Warning"),
        reason: e.reason.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
    }))
}

/// The node access DaemonSet as observed, with why it does not roll out (events are read only
/// while it has fewer pods than nodes).
pub async fn observe_node_access(
    ctx: &Context,
    namespace: &str,
    hosts: Vec<String>,
    live: &LiveChildren,
) -> Result<NodeAccessObservation, ObserveError> {
    let daemon_set = live.node_access_daemon_set.as_deref();
    let mut observed = NodeAccessObservation::of(hosts, daemon_set);
    let Some(ds) = daemon_set.filter(|_| !observed.rolled_out) else {
        return Ok(observed);
    };
    let name = ds.name_any();
    let event = match observed.missing_pods {
        true => {
            let events: Api<Event> = Api::namespaced(ctx.client.clone(), namespace);
            newest_event(&events, "DaemonSet", &name).await?
        }
        false => None,
    };
    let pods: Vec<&Pod> = live.node_access_pods.iter().map(|p| p.as_ref()).collect();
    observed.problem = node_access_diagnosis(&name, observed.missing_pods, event.as_ref(), &pods);
    Ok(observed)
}

/// Why the rollout is stuck, if it is.
pub async fn diagnosis(
    ctx: &Context,
    namespace: &str,
    live: &LiveChildren,
) -> Result<(Option<Diagnosis>, bool), ObserveError> {
    let claims = pending_claims(ctx, namespace, live).await?;
    let pods: Vec<&Pod> = live.pods.iter().map(|p| p.as_ref()).collect();
    Ok((diagnose(&claims, &pods), !claims.is_empty()))
}
