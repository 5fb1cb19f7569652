//! The Registry controller: deploys wharf's registry server for each `Registry`.
//!
//! - `names.rs`: names and labels of the children
//! - `credentials.rs`, `tls.rs`: generated secrets, reused across passes
//! - `build/`: the pure builders (Deployment/StatefulSet, Service, Ingress, ...)
//! - `stores.rs`: watches and caches of the children
//! - `reconcile.rs`: fetch → build → apply → status
//! - `observe.rs`, `diagnose.rs`: why a rollout does not progress (claims, pulls, crashes,
//!   scheduling, node access): what is read, and what it means
//! - `status.rs`: the status computation

pub mod build;
pub mod credentials;
pub mod diagnose;
pub mod names;
pub mod observe;
pub mod reconcile;
pub mod status;
pub mod stores;
pub mod tls;

use crate::crd::registry::Registry;
use crate::operator::apply::FIELD_MANAGER;
use crate::operator::conditions::{READY, STALLED};
use crate::operator::metrics::Metrics;
use futures_util::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use reconcile::ReconcileError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use stores::ChildStores;

pub const CONTROLLER: &str = "registry";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub default_image: String,
    /// The operator's push events endpoint, which every Registry reports to.
    pub events_url: Option<String>,
    pub stores: ChildStores,
}

/// A Registry the API server holds but that does not match the types: report it on the object
/// and wait for an edit, instead of failing the whole watch (kube's error boundary).
async fn report_invalid(
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Action {
    let (Some(name), Some(namespace)) = (&invalid.metadata.name, &invalid.metadata.namespace)
    else {
        return Action::await_change();
    };
    tracing::warn!(registry = %name, namespace = %namespace, error = %invalid.error, "invalid Registry");
    let api: Api<Registry> = Api::namespaced(ctx.client.clone(), namespace);
    let message = format!("the Registry cannot be read: {}", invalid.error);
    let condition = |type_: &str, status: &str| {
        serde_json::json!({
            "type": type_, "status": status, "reason": "InvalidSpec", "message": message,
            "observedGeneration": invalid.metadata.generation,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        })
    };
    let patch = serde_json::json!({
        "apiVersion": "wharf.dev/v1alpha1", "kind": "Registry",
        "status": {
            "observedGeneration": invalid.metadata.generation,
            "conditions": [condition(READY, "False"), condition(STALLED, "True")],
        },
    });
    if let Err(e) = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot report the invalid Registry in its status");
    }
    let reference = reference(invalid);
    let event = Event {
        type_: EventType::Warning,
        reason: "InvalidSpec".into(),
        note: Some(message),
        action: "Reconcile".into(),
        secondary: None,
    };
    let _ = ctx.recorder.publish(&event, &reference).await;
    Action::await_change()
}

fn reference(
    invalid: &kube::core::error_boundary::InvalidObject,
) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(Registry::api_version(&()).into()),
        kind: Some(Registry::kind(&()).into()),
        name: invalid.metadata.name.clone(),
        namespace: invalid.metadata.namespace.clone(),
        uid: invalid.metadata.uid.clone(),
        resource_version: invalid.metadata.resource_version.clone(),
        ..Default::default()
    }
}

async fn reconcile_guarded(
    guard: Arc<DeserializeGuard<Registry>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let work = async {
        match &guard.0 {
            Ok(registry) => reconcile::reconcile(Arc::new(registry.clone()), ctx.clone()).await,
            Err(invalid) => Ok(report_invalid(invalid, &ctx).await),
        }
    };
    ctx.metrics
        .timed(CONTROLLER, ReconcileError::category, work)
        .await
}

fn error_policy(
    guard: Arc<DeserializeGuard<Registry>>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    let (name, namespace) = match &guard.0 {
        Ok(r) => (r.metadata.name.clone(), r.metadata.namespace.clone()),
        Err(i) => (i.metadata.name.clone(), i.metadata.namespace.clone()),
    };
    tracing::warn!(
        registry = name.as_deref().unwrap_or(""),
        namespace = namespace.as_deref().unwrap_or(""),
        category = error.category(),
        error = %error,
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(10))
}

/// Runs the Registry controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    default_image: String,
    events_url: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (stores, streams) = stores::watch_children(&client);
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics,
        default_image,
        events_url,
        stores,
    });
    let registries = Api::<DeserializeGuard<Registry>>::all(client);
    Controller::new(registries, watcher::Config::default().any_semantic())
        .owns_stream(streams.deployments)
        .owns_stream(streams.daemon_sets)
        .owns_stream(streams.stateful_sets)
        .owns_stream(streams.services)
        .owns_stream(streams.service_accounts)
        .owns_stream(streams.config_maps)
        .owns_stream(streams.secrets)
        .owns_stream(streams.ingresses)
        .owns_stream(streams.pod_disruption_budgets)
        .owns_stream(streams.cron_jobs)
        .watches_stream(streams.jobs, |job| {
            // A finished GC Job → its Registry (the CronJob is `<registry>-gc`).
            let namespace = job.metadata.namespace.clone()?;
            let registry = job.labels().get("app.kubernetes.io/instance")?.clone();
            Some(kube::runtime::reflector::ObjectRef::new(&registry).within(&namespace))
        })
        .watches_stream(streams.pods, |pod| {
            let (name, namespace) = stores::registry_of(&pod)?;
            Some(kube::runtime::reflector::ObjectRef::new(&name).within(&namespace))
        })
        .watches_stream(streams.claims, |claim| {
            let (name, namespace) = stores::registry_of(&claim)?;
            Some(kube::runtime::reflector::ObjectRef::new(&name).within(&namespace))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile_guarded, error_policy, ctx)
        .for_each(super::log_controller_event)
        .await;
}
