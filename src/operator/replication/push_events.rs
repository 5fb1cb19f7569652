//! The endpoint Registries report pushes to (`POST /events/<namespace>/<registry>`, served by
//! every operator replica like the Pod webhook). A push starts, for each ReplicationPolicy in
//! that namespace with `trigger.onPush` whose source is that Registry and whose rules may
//! select the tag, a Job copying just that repository and tag. The Job's name comes from the
//! policy and the pushed digest, so two replicas (or a retried delivery) start it once.
//!
//! Events are hints, never the record: a lost one (the operator restarting, a full queue in
//! the registry) leaves that tag for the policy's next scheduled or requested run, which
//! compares both sides in full. The Job that was started is the only state.
//!
//! The sender proves itself with the token the operator derived from that Registry's admin
//! password (`registry::credentials::events_token`), which only its pods are given.

use super::build::{self, RunKind};
use super::reconcile::{Ends, check};
use crate::crd::registry::Registry;
use crate::crd::replication_policy::ReplicationPolicy;
use crate::operator::metrics::Metrics;
use crate::operator::registry::credentials::events_token;
use crate::operator::registry::names::ChildNames;
use crate::replication::select::Rules;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Deserialize;
use std::sync::Arc;

/// Bodies larger than this are refused (one event is a few hundred bytes).
const MAX_BODY: usize = 256 * 1024;
/// Events handled from one request at most.
const MAX_EVENTS: usize = 100;

pub struct Receiver {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub default_image: String,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub events: Vec<Event>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub action: String,
    pub repository: String,
    #[serde(default)]
    pub tag: Option<String>,
    pub digest: String,
}

/// Whether `policy` wants a run for a push of `repository:tag` to `registry` (pure). The
/// rules are applied to the tag alone: `newest` can only be decided by the run, which lists
/// the repository.
pub fn wants(policy: &ReplicationPolicy, registry: &str, repository: &str, tag: &str) -> bool {
    let trigger = policy.spec.trigger.clone().unwrap_or_default();
    if trigger.on_push != Some(true) || trigger.suspend == Some(true) {
        return false;
    }
    if policy
        .spec
        .source
        .registry_ref
        .as_ref()
        .map(|r| r.name.as_str())
        != Some(registry)
    {
        return false;
    }
    if policy.meta().deletion_timestamp.is_some() || check(policy).is_err() {
        return false;
    }
    Rules::compile(&policy.spec.rules)
        .map(|rules| !rules.select(repository, &[tag.to_owned()]).is_empty())
        .unwrap_or(false)
}

/// Whether `presented` equals `expected`, in time independent of where they differ.
fn same_token(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({"message": message.into()}).to_string(),
    )
        .into_response()
}

async fn authorized(
    client: &Client,
    namespace: &str,
    registry: &str,
    headers: &HeaderMap,
) -> Result<bool, kube::Error> {
    let Some(presented) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Ok(false);
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let admin = secrets
        .get_opt(&ChildNames::new(registry).admin_secret())
        .await?;
    let password = admin
        .and_then(|s| s.data)
        .and_then(|d| d.get("password").map(|p| p.0.clone()))
        .and_then(|p| String::from_utf8(p).ok());
    Ok(password.is_some_and(|p| same_token(presented.trim(), &events_token(&p))))
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path((namespace, registry)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match authorized(&receiver.client, &namespace, &registry, &headers).await {
        Ok(true) => {}
        Ok(false) => {
            receiver.metrics.push_event("rejected");
            tracing::warn!(namespace = %namespace, registry = %registry, "push event with a missing or wrong token refused");
            return answer(StatusCode::UNAUTHORIZED, "missing or wrong token");
        }
        Err(e) => {
            tracing::warn!(namespace = %namespace, registry = %registry, error = %e, "cannot check a push event's token");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot check the token now",
            );
        }
    }
    if body.len() > MAX_BODY {
        receiver.metrics.push_event("rejected");
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too many events in one request",
        );
    }
    let envelope: Envelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            receiver.metrics.push_event("rejected");
            return answer(StatusCode::BAD_REQUEST, format!("not a push event: {e}"));
        }
    };
    let mut started = Vec::new();
    for event in envelope.events.into_iter().take(MAX_EVENTS) {
        let Some(tag) = event.tag.clone().filter(|_| event.action == "push") else {
            receiver.metrics.push_event("ignored");
            continue;
        };
        match start_runs(&receiver, &namespace, &registry, &event, &tag).await {
            Ok(jobs) if jobs.is_empty() => receiver.metrics.push_event("ignored"),
            Ok(jobs) => {
                receiver.metrics.push_event("started");
                started.extend(jobs);
            }
            Err(e) => {
                receiver.metrics.push_event("failed");
                tracing::warn!(namespace = %namespace, registry = %registry, repository = %event.repository, tag = %tag, error = %e, "cannot start the runs for a push");
                // The registry retries; Jobs already created are found again by name.
                return answer(StatusCode::SERVICE_UNAVAILABLE, "cannot start the runs now");
            }
        }
    }
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        serde_json::json!({"started": started}).to_string(),
    )
        .into_response()
}

async fn start_runs(
    receiver: &Receiver,
    namespace: &str,
    registry: &str,
    event: &Event,
    tag: &str,
) -> Result<Vec<String>, kube::Error> {
    let policies: Api<ReplicationPolicy> = Api::namespaced(receiver.client.clone(), namespace);
    let registries: Api<Registry> = Api::namespaced(receiver.client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(receiver.client.clone(), namespace);
    let mut started = Vec::new();
    for policy in policies.list(&ListParams::default()).await?.items {
        if !wants(&policy, registry, &event.repository, tag) {
            continue;
        }
        let ends = match Ends::fetch(&policy, &registries).await {
            Ok(ends) => ends,
            Err(e) => {
                tracing::warn!(policy = %policy.name_any(), error = %e, "cannot read the policy's Registries");
                continue;
            }
        };
        let Some((source, destination)) = ends.targets(&policy) else {
            // The policy waits for a missing Registry; its status says so.
            continue;
        };
        let kind = RunKind::Pushed {
            repository: event.repository.clone(),
            tag: tag.to_owned(),
            digest: event.digest.clone(),
        };
        let Ok(pod) = build::run_pod(&policy, source, destination, &receiver.default_image, &kind)
        else {
            continue;
        };
        let Some(owner) = policy.controller_owner_ref(&()) else {
            continue;
        };
        let job = build::job(&policy, &owner, pod, &kind);
        crate::operator::policy_runs::start_job(&jobs, &job).await?;
        tracing::info!(policy = %policy.name_any(), namespace, repository = %event.repository, tag, job = %job.name_any(), "push-triggered run started");
        started.push(format!("{}/{}", policy.name_any(), job.name_any()));
    }
    Ok(started)
}

pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/events/{namespace}/{registry}", post(receive))
        .with_state(receiver)
}

/// Serves the endpoint until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    receiver: Arc<Receiver>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router(receiver))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "push events server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(trigger: serde_json::Value) -> ReplicationPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "ReplicationPolicy",
            "metadata": {"name": "p", "namespace": "r"},
            "spec": {
                "source": {"registryRef": {"name": "ci"}},
                "destination": {"registryRef": {"name": "prod"}},
                "rules": [{"repositories": ["team/*"], "tags": {"include": ["v*"], "exclude": ["*-rc*"]}}],
                "trigger": trigger,
            },
        }))
        .unwrap()
    }

    #[test]
    fn only_on_push_policies_of_that_registry_that_select_the_tag_want_a_run() {
        let on = policy(serde_json::json!({"onPush": true}));
        assert!(wants(&on, "ci", "team/app", "v1.2"));
        assert!(!wants(&on, "prod", "team/app", "v1.2"), "another Registry");
        assert!(
            !wants(&on, "ci", "other/app", "v1.2"),
            "a repository no rule covers"
        );
        assert!(!wants(&on, "ci", "team/app", "v1.3-rc1"), "an excluded tag");
        assert!(
            !wants(&on, "ci", "team/app", "latest"),
            "a tag not included"
        );
        let off = policy(serde_json::json!({"schedule": "@hourly"}));
        assert!(!wants(&off, "ci", "team/app", "v1.2"));
        let suspended = policy(serde_json::json!({"onPush": true, "suspend": true}));
        assert!(!wants(&suspended, "ci", "team/app", "v1.2"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("", "abc"));
    }

    #[test]
    fn the_registry_s_event_body_is_understood() {
        let event = crate::registry::notify::PushEvent::push(
            "team/app",
            "v1",
            "sha256:00",
            "application/vnd.oci.image.index.v1+json",
            512,
        );
        let body = serde_json::json!({"events": [event]}).to_string();
        let envelope: Envelope = serde_json::from_str(&body).unwrap();
        assert_eq!(
            envelope.events,
            [Event {
                action: "push".into(),
                repository: "team/app".into(),
                tag: Some("v1".into()),
                digest: "sha256:00".into(),
            }]
        );
    }
}
