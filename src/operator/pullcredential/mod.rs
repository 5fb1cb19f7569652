//! The ImagePullCredential controller: one credential, copied as a dockerconfigjson Secret into
//! every target namespace and injected into pods.
//!
//! - `targets.rs`: which namespaces (pure)
//! - `source.rs`: the credential (a Secret, or a robot minted through `crate::admin_client`)
//! - `build.rs`: copies, webhook configuration, ServiceAccount patches (pure)
//! - `reconcile.rs`: resolve → write → prune → status; `status.rs`: the status (pure)
//! - `webhook.rs`: the Pod webhook every replica serves; `webhook_config.rs`: its certificate
//!   and configuration, kept by the leader
//! - `cleanup.rs`: the finalizer, and the orphan sweep at start-up
//! - `stores.rs`: the watches

pub mod build;
pub mod cleanup;
pub mod names;
pub mod reconcile;
pub mod source;
pub mod status;
pub mod stores;
pub mod targets;
pub mod webhook;
pub mod webhook_config;

use crate::crd::image_pull_credential::{ImagePullCredential, InjectMode};
use crate::operator::metrics::Metrics;
use futures_util::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use names::PULL_CREDENTIAL_LABEL;
use reconcile::ReconcileError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use stores::Stores;

pub const CONTROLLER: &str = "imagepullcredential";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub stores: Stores,
    pub credentials: Store<ImagePullCredential>,
    /// Where the operator runs: the webhook's Secrets and robot state Secrets live here.
    pub operator_namespace: String,
}

async fn reconcile_timed(
    ipc: Arc<ImagePullCredential>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    ctx.metrics
        .timed(
            CONTROLLER,
            ReconcileError::category,
            reconcile::reconcile(ipc, ctx.clone()),
        )
        .await
}

fn error_policy(
    ipc: Arc<ImagePullCredential>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(credential = %ipc.name_any(), category = error.category(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn refs_where(
    store: &Store<ImagePullCredential>,
    keep: impl Fn(&ImagePullCredential) -> bool,
) -> Vec<ObjectRef<ImagePullCredential>> {
    store
        .state()
        .iter()
        .filter(|c| keep(c))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    operator_namespace: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (stores, triggers) = stores::watch_all(&client, &operator_namespace);
    let controller = Controller::new(
        Api::<ImagePullCredential>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let credentials = controller.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics,
        stores: stores.clone(),
        credentials: credentials.clone(),
        operator_namespace,
    });

    let sweeper = ctx.clone();
    tokio::spawn(async move {
        if sweeper.stores.ready().await {
            match cleanup::sweep_orphans(&sweeper).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "orphaned copies removed"),
                Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
            }
        }
    });

    let (
        all_for_namespaces,
        sa_mode,
        by_registry,
        by_service,
        by_source,
        webhook_users,
        webhook_users2,
    ) = (
        credentials.clone(),
        credentials.clone(),
        credentials.clone(),
        credentials.clone(),
        credentials.clone(),
        credentials.clone(),
        credentials.clone(),
    );
    controller
        .watches_stream(triggers.namespaces, move |_| {
            refs_where(&all_for_namespaces, |_| true)
        })
        .watches_stream(triggers.secrets, |secret| {
            secret
                .labels()
                .get(PULL_CREDENTIAL_LABEL)
                .map(|name| ObjectRef::new(name))
        })
        .watches_stream(triggers.service_accounts, move |_| {
            refs_where(&sa_mode, |c| c.spec.mode() == InjectMode::ServiceAccount)
        })
        .watches_stream(triggers.registries, move |registry| {
            let (name, ns) = (
                registry.name_any(),
                registry.namespace().unwrap_or_default(),
            );
            refs_where(&by_registry, |c| {
                c.spec
                    .source
                    .registry_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name && r.namespace == ns)
            })
        })
        .watches_stream(triggers.services, move |service| {
            let (name, ns) = (service.name_any(), service.namespace().unwrap_or_default());
            refs_where(&by_service, |c| {
                c.spec
                    .source
                    .registry_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name && r.namespace == ns)
            })
        })
        .watches_stream(triggers.source_secrets, move |meta| {
            let (name, ns) = (meta.name_any(), meta.namespace().unwrap_or_default());
            refs_where(&by_source, |c| {
                c.spec
                    .source
                    .secret_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name && r.namespace == ns)
            })
        })
        .watches_stream(triggers.webhook_secrets, move |_| {
            refs_where(&webhook_users, |c| c.spec.mode() == InjectMode::PodWebhook)
        })
        .watches_stream(triggers.webhook_configurations, move |_| {
            refs_where(&webhook_users2, |c| c.spec.mode() == InjectMode::PodWebhook)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile_timed, error_policy, ctx)
        .for_each(super::log_controller_event)
        .await;
}
