//! The RetentionPolicy controller: each policy runs `wharf retention` as a CronJob and on
//! request, with a scoped credential, and reports every run in its status.
//!
//! - `build.rs`: the ConfigMap, CronJob and Jobs a policy owns (pure)
//! - `credential.rs`: the robot account runs use against a wharf Registry
//! - `in_use.rs`: what the cluster runs, which runs never delete
//! - `runs.rs`: the policy's Jobs and what they reported
//! - `reconcile.rs`: one pass; `status.rs`: the status (pure)

pub mod build;
pub mod credential;
pub mod in_use;
pub mod names;
pub mod reconcile;
pub mod runs;
pub mod status;

use crate::crd::registry::Registry;
use crate::crd::retention_policy::RetentionPolicy;
use crate::operator::metrics::Metrics;
use futures_util::StreamExt;
use in_use::InUse;
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
use std::time::Duration;

pub const CONTROLLER: &str = "retentionpolicy";
/// Changes to what the cluster runs are gathered this long before policies are updated.
const IN_USE_DEBOUNCE: Duration = Duration::from_secs(2);

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The operator's own image: runs use the same binary.
    pub default_image: String,
    pub in_use: Arc<InUse>,
}

async fn reconcile_timed(
    policy: Arc<RetentionPolicy>,
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
    policy: Arc<RetentionPolicy>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    crate::operator::policy_runs::retry_after_error(policy.as_ref(), error)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    default_image: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let in_use = in_use::track(&client);
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics,
        default_image,
        in_use: in_use.clone(),
    });
    let labelled = watcher::Config::default()
        .labels(POLICY_LABEL)
        .any_semantic();
    let controller = Controller::new(
        Api::<RetentionPolicy>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let policies = controller.store();
    // Every policy that protects what the cluster runs gets the new list.
    let changes = futures_util::stream::unfold(in_use.changes(), |mut rx| async move {
        rx.changed().await.ok()?;
        tokio::time::sleep(IN_USE_DEBOUNCE).await;
        rx.borrow_and_update();
        Some(((), rx))
    });
    let by_registry = policies.clone();
    controller
        .owns(Api::<CronJob>::all(client.clone()), labelled.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), labelled.clone())
        .owns(Api::<Secret>::all(client.clone()), labelled.clone())
        // Scheduled Jobs belong to the CronJob, so they are mapped by label.
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
                by_registry
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.namespace() == namespace
                            && p.spec.registry_ref.as_ref().is_some_and(|r| r.name == name)
                    })
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_all_on(changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_timed, error_policy, ctx)
        .for_each(super::log_controller_event)
        .await;
}
