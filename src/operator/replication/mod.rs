//! The ReplicationPolicy controller: each policy runs `wharf replicate` as a CronJob, on
//! request and on push, with scoped robot credentials on wharf Registries, and reports the
//! newest run in its status.
//!
//! - `build.rs`: the ConfigMap, CronJob and Jobs a policy owns (pure)
//! - `credentials.rs`: the robots runs use on wharf Registries (pull source, push destination)
//! - `push_events.rs`: the endpoint Registries report pushes to; it starts scoped runs
//! - `runs.rs`: the policy's Jobs and what they reported
//! - `reconcile.rs`: one pass; `status.rs`: the status (pure)

pub mod build;
pub mod credentials;
pub mod names;
pub mod push_events;
pub mod reconcile;
pub mod runs;
pub mod status;

use crate::crd::registry::Registry;
use crate::crd::replication_policy::ReplicationPolicy;
use crate::operator::metrics::Metrics;
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use names::POLICY_LABEL;
use reconcile::ReconcileError;
use std::future::Future;
use std::sync::Arc;

pub const CONTROLLER: &str = "replicationpolicy";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The operator's own image: runs use the same binary.
    pub default_image: String,
}

async fn reconcile_timed(
    policy: Arc<ReplicationPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    ctx.metrics
        .timed(
            CONTROLLER,
            ReconcileError::category,
            reconcile::reconcile(policy, ctx.clone()),
        )
        .await
}

fn error_policy(
    policy: Arc<ReplicationPolicy>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    crate::operator::policy_runs::retry_after_error(policy.as_ref(), error)
}

fn names_registry(policy: &ReplicationPolicy, registry: &str) -> bool {
    [
        &policy.spec.source.registry_ref,
        &policy.spec.destination.registry_ref,
    ]
    .into_iter()
    .flatten()
    .any(|r| r.name == registry)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    default_image: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics,
        default_image,
    });
    let labelled = watcher::Config::default()
        .labels(POLICY_LABEL)
        .any_semantic();
    let controller = Controller::new(
        Api::<ReplicationPolicy>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let policies = controller.store();
    controller
        .owns(Api::<CronJob>::all(client.clone()), labelled.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), labelled.clone())
        .owns(Api::<Secret>::all(client.clone()), labelled.clone())
        // Scheduled Jobs belong to the CronJob, so all Jobs are mapped by label.
        .watches(
            Api::<Job>::all(client.clone()),
            labelled,
            crate::operator::policy_runs::owning_policy(POLICY_LABEL),
        )
        .watches(
            Api::<Registry>::all(client.clone()),
            watcher::Config::default().any_semantic(),
            move |registry| {
                let namespace = registry.namespace();
                let name = registry.name_any();
                policies
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace() == namespace && names_registry(p, &name))
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile_timed, error_policy, ctx)
        .for_each(super::log_controller_event)
        .await;
}
