//! One pass over a Registry: fetch → prepare secrets → build (pure) → apply → status.

use super::Context;
use super::build::{BuildError, BuildInputs, Children, Workload, build, dns_names};
use super::credentials::{CredentialsError, admin_credentials};
use super::names::ChildNames;
use super::observe::{ObserveError, diagnosis, observe_node_access};
use super::status::{Observed, Problem, WorkloadObservation, compute};
use super::stores::LiveChildren;
use super::tls::{TlsError, self_signed};
use crate::crd::registry::{GarbageCollectionRun, Registry, RegistryStatus};
use crate::operator::apply::{ApplyError, FIELD_MANAGER, Outcome, apply, prune};
use crate::operator::conditions::{READY, STALLED, is_true};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Re-check even when nothing happens, as a safety net for missed watch events.
const RESYNC: Duration = Duration::from_secs(3600);
/// How soon to look again for a referenced Secret that does not exist yet.
const MISSING_REFERENCE_RETRY: Duration = Duration::from_secs(30);
/// How soon to look again at a claim that is not bound: the events that explain it come from
/// the provisioner and the binder, which the operator does not watch.
const PENDING_CLAIM_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the Registry has no namespace")]
    NoNamespace,
    #[error("the child caches stopped")]
    CachesStopped,
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot read {name}: {source}")]
    ReadReference { name: String, source: kube::Error },
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("cannot update the status: {0}")]
    Status(kube::Error),
}

impl ReconcileError {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::NoNamespace => "invalid",
            ReconcileError::CachesStopped => "cache",
            ReconcileError::Credentials(_) | ReconcileError::Tls(_) => "secrets",
            ReconcileError::Apply(_) => "apply",
            ReconcileError::ReadReference { .. } | ReconcileError::Observe(_) => "read",
            ReconcileError::Status(_) => "status",
        }
    }
}

/// Secrets the spec names but the operator does not own: they must exist and hold the right keys.
async fn check_references(
    registry: &Registry,
    secrets: &Api<Secret>,
) -> Result<Option<Problem>, ReconcileError> {
    let mut wanted: Vec<(&str, String, &[&str])> = Vec::new();
    if let Some(r) = registry
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.htpasswd_secret_ref.as_ref())
    {
        wanted.push(("auth.htpasswdSecretRef", r.name.clone(), &["htpasswd"]));
    }
    if let Some(r) = registry
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.secret_ref.as_ref())
    {
        wanted.push(("tls.secretRef", r.name.clone(), &["tls.crt", "tls.key"]));
    }
    if let Some(s3) = &registry.spec.storage.s3 {
        if let Some(r) = &s3.credentials_secret_ref {
            wanted.push((
                "storage.s3.credentialsSecretRef",
                r.name.clone(),
                &["accessKeyId", "secretAccessKey"],
            ));
        }
        if let Some(r) = &s3.ca_secret_ref {
            wanted.push(("storage.s3.caSecretRef", r.name.clone(), &["ca.crt"]));
        }
    }
    for (field, name, keys) in wanted {
        let secret =
            secrets
                .get_opt(&name)
                .await
                .map_err(|source| ReconcileError::ReadReference {
                    name: format!("Secret {name}"),
                    source,
                })?;
        let Some(secret) = secret else {
            return Ok(Some(Problem {
                reason: "SecretNotFound",
                message: format!("Secret {name} named by {field} does not exist"),
            }));
        };
        let data = secret.data.unwrap_or_default();
        if let Some(key) = keys
            .iter()
            .find(|k| data.get(**k).is_none_or(|v| v.0.is_empty()))
        {
            return Ok(Some(Problem {
                reason: "SecretInvalid",
                message: format!("Secret {name} named by {field} has no {key:?} key"),
            }));
        }
    }
    Ok(None)
}

/// Applies every child, then prunes the ones the spec no longer asks for. Returns what was written.
async fn apply_children(
    ctx: &Context,
    namespace: &str,
    owner_uid: &str,
    children: &Children,
    live: &LiveChildren,
) -> Result<Vec<String>, ApplyError> {
    let client = &ctx.client;
    let mut written = Vec::new();
    let mut note = |outcome: Outcome, what: String| {
        if outcome == Outcome::Written {
            written.push(what);
        }
    };
    macro_rules! api {
        () => {
            Api::namespaced(client.clone(), namespace)
        };
    }
    let secrets: Api<Secret> = api!();
    // Secrets and config first, so new pods find what they mount.
    note(
        apply(
            &api!(),
            &children.service_account,
            live.service_account.as_deref(),
        )
        .await?,
        "ServiceAccount".into(),
    );
    note(
        apply(&api!(), &children.config, live.config.as_deref()).await?,
        "ConfigMap".into(),
    );
    note(
        apply(
            &secrets,
            &children.admin_secret,
            live.admin_secret.as_deref(),
        )
        .await?,
        "Secret (admin)".into(),
    );
    note(
        apply(
            &secrets,
            &children.htpasswd_secret,
            live.htpasswd_secret.as_deref(),
        )
        .await?,
        "Secret (htpasswd)".into(),
    );
    match (
        &children.ca_secret,
        &children.ca_config_map,
        &children.tls_secret,
    ) {
        (Some(ca), Some(ca_map), Some(tls)) => {
            note(
                apply(&secrets, ca, live.ca_secret.as_deref()).await?,
                "Secret (CA)".into(),
            );
            note(
                apply(&api!(), ca_map, live.ca_config_map.as_deref()).await?,
                "ConfigMap (CA)".into(),
            );
            note(
                apply(&secrets, tls, live.tls_secret.as_deref()).await?,
                "Secret (TLS)".into(),
            );
        }
        _ => {
            note(
                prune(&secrets, live.ca_secret.as_deref(), owner_uid).await?,
                "Secret (CA) deleted".into(),
            );
            note(
                prune(&api!(), live.ca_config_map.as_deref(), owner_uid).await?,
                "ConfigMap (CA) deleted".into(),
            );
            note(
                prune(&secrets, live.tls_secret.as_deref(), owner_uid).await?,
                "Secret (TLS) deleted".into(),
            );
        }
    }
    match &children.workload {
        Workload::Deployment(d) => {
            note(
                apply(&api!(), d, live.deployment.as_deref()).await?,
                "Deployment".into(),
            );
            note(
                prune(&api!(), live.stateful_set.as_deref(), owner_uid).await?,
                "StatefulSet deleted".into(),
            );
        }
        Workload::StatefulSet(s) => {
            note(
                apply(&api!(), s, live.stateful_set.as_deref()).await?,
                "StatefulSet".into(),
            );
            note(
                prune(&api!(), live.deployment.as_deref(), owner_uid).await?,
                "Deployment deleted".into(),
            );
        }
    }
    note(
        apply(&api!(), &children.service, live.service.as_deref()).await?,
        "Service".into(),
    );
    match &children.ingress {
        Some(i) => note(
            apply(&api!(), i, live.ingress.as_deref()).await?,
            "Ingress".into(),
        ),
        None => note(
            prune(&api!(), live.ingress.as_deref(), owner_uid).await?,
            "Ingress deleted".into(),
        ),
    }
    match &children.gc_cron_job {
        Some(c) => note(
            apply(&api!(), c, live.gc_cron_job.as_deref()).await?,
            "CronJob (garbage collection)".into(),
        ),
        None => note(
            prune(&api!(), live.gc_cron_job.as_deref(), owner_uid).await?,
            "CronJob (garbage collection) deleted".into(),
        ),
    }
    match &children.node_access {
        Some(access) => {
            note(
                apply(&api!(), &access.config, live.node_access_config.as_deref()).await?,
                "ConfigMap (node access)".into(),
            );
            note(
                apply(
                    &api!(),
                    &access.daemon_set,
                    live.node_access_daemon_set.as_deref(),
                )
                .await?,
                "DaemonSet (node access)".into(),
            );
        }
        None => {
            note(
                prune(&api!(), live.node_access_daemon_set.as_deref(), owner_uid).await?,
                "DaemonSet (node access) deleted".into(),
            );
            note(
                prune(&api!(), live.node_access_config.as_deref(), owner_uid).await?,
                "ConfigMap (node access) deleted".into(),
            );
        }
    }
    match &children.pod_disruption_budget {
        Some(p) => note(
            apply(&api!(), p, live.pod_disruption_budget.as_deref()).await?,
            "PodDisruptionBudget".into(),
        ),
        None => note(
            prune(&api!(), live.pod_disruption_budget.as_deref(), owner_uid).await?,
            "PodDisruptionBudget deleted".into(),
        ),
    }
    Ok(written)
}

fn observe_workload(registry: &Registry, live: &LiveChildren) -> Option<WorkloadObservation> {
    if registry.spec.storage.persistent_volume.is_some() {
        live.stateful_set
            .as_deref()
            .map(WorkloadObservation::of_stateful_set)
    } else {
        live.deployment
            .as_deref()
            .map(WorkloadObservation::of_deployment)
    }
}

/// The newest finished garbage collection run, when it is not the one status already shows.
/// Its numbers come from the pod's termination message (`wharf gc` writes a JSON summary): one
/// list call per new run, none otherwise.
async fn last_garbage_collection(
    ctx: &Context,
    registry: &Registry,
    namespace: &str,
    live: &LiveChildren,
) -> Result<Option<GarbageCollectionRun>, ReconcileError> {
    let Some(job) = live.gc_jobs.last() else {
        return Ok(None);
    };
    let job_name = job.name_any();
    let shown = registry
        .status
        .as_ref()
        .and_then(|s| s.last_garbage_collection.as_ref())
        .map(|r| r.job_name.as_str());
    if shown == Some(job_name.as_str()) {
        return Ok(None);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let run = crate::operator::job_results::observe_gc(&pods, job)
        .await
        .map_err(|source| ReconcileError::ReadReference {
            name: format!("pods of Job {job_name}"),
            source,
        })?;
    Ok(Some(run))
}

async fn publish(ctx: &Context, registry: &Registry, type_: EventType, reason: &str, note: String) {
    crate::operator::events::publish(&ctx.recorder, registry, type_, "Reconcile", reason, note)
        .await;
}

async fn write_status(
    api: &Api<Registry>,
    name: &str,
    status: &RegistryStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "wharf.dev/v1alpha1",
        "kind": "Registry",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

pub async fn reconcile(
    registry: Arc<Registry>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = registry.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = registry.name_any();
    if registry.meta().deletion_timestamp.is_some() {
        // Children go with their owner through Kubernetes' garbage collector.
        return Ok(Action::await_change());
    }
    if !ctx.stores.ready().await {
        return Err(ReconcileError::CachesStopped);
    }

    // Fetch
    let names = ChildNames::new(&name);
    let live = ctx.stores.live(&namespace, &names);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let problem = check_references(&registry, &secrets).await?;
    let now = Timestamp::now();

    let cluster_ip = live
        .service
        .as_ref()
        .and_then(|s| s.spec.as_ref()?.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None");
    let self_signed_tls = registry
        .spec
        .tls
        .as_ref()
        .is_some_and(|t| t.self_signed.is_some());
    if problem.is_none() && self_signed_tls && live.service.is_none() {
        // The Service goes first, so the first certificate can already name its cluster IP
        // (nodes pull by it) instead of rolling the pods for a second one a moment later.
        let owner = registry
            .controller_owner_ref(&())
            .ok_or(ReconcileError::NoNamespace)?;
        let services = Api::namespaced(ctx.client.clone(), &namespace);
        apply(&services, &super::build::service(&registry, &owner), None).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }

    // Prepare and build
    let mut next_check = RESYNC;
    let mut children = None;
    if problem.is_none() {
        let admin = admin_credentials(
            live.admin_secret.as_deref(),
            live.htpasswd_secret.as_deref(),
        )?;
        let tls = match registry
            .spec
            .tls
            .as_ref()
            .and_then(|t| t.self_signed.as_ref())
        {
            Some(_) => {
                let tls = self_signed(
                    &namespace,
                    &name,
                    &dns_names(&registry, cluster_ip.as_deref()),
                    live.ca_secret.as_deref(),
                    live.tls_secret.as_deref(),
                    now.as_second(),
                )?;
                let renew_in = (tls.renew_at() - now.as_second()).max(60) as u64;
                next_check = next_check.min(Duration::from_secs(renew_in));
                Some(tls)
            }
            None => None,
        };
        match build(&BuildInputs {
            registry: &registry,
            default_image: &ctx.default_image,
            events_url: ctx.events_url.as_deref(),
            admin: &admin,
            self_signed: tls.as_ref(),
            cluster_ip: cluster_ip.as_deref(),
        }) {
            Ok(built) => children = Some(built),
            Err(BuildError::Incomplete) => return Err(ReconcileError::NoNamespace),
        }
    } else {
        next_check = MISSING_REFERENCE_RETRY;
    }

    // Apply
    if let Some(children) = &children {
        let uid = registry.uid().unwrap_or_default();
        let written = apply_children(&ctx, &namespace, &uid, children, &live).await?;
        if !written.is_empty() {
            ctx.metrics.objects_written("registry", written.len());
            tracing::info!(registry = %name, namespace = %namespace, objects = ?written, "applied");
            publish(
                &ctx,
                &registry,
                EventType::Normal,
                "Applied",
                format!("applied {}", written.join(", ")),
            )
            .await;
        }
    }

    // Status
    let last_gc = last_garbage_collection(&ctx, &registry, &namespace, &live).await?;
    let (stuck, claims_pending) = match &problem {
        None => diagnosis(&ctx, &namespace, &live).await?,
        Some(_) => (None, false),
    };
    if claims_pending {
        next_check = next_check.min(PENDING_CLAIM_RETRY);
    }
    let workload = observe_workload(&registry, &live);
    let node_access = match (&registry.spec.node_access, &problem) {
        (Some(_), None) => {
            let hosts = children
                .as_ref()
                .and_then(|c| c.node_access.as_ref())
                .map(|n| n.hosts.clone())
                .unwrap_or_default();
            Some(observe_node_access(&ctx, &namespace, hosts, &live).await?)
        }
        _ => None,
    };
    let mut status = compute(
        &registry,
        &Observed {
            problem: problem.as_ref(),
            workload: workload.as_ref(),
            diagnosis: stuck.as_ref(),
            service: live.service.as_deref(),
            node_access: node_access.as_ref(),
        },
        &Time(now),
    );
    if last_gc.is_some() {
        status.last_garbage_collection = last_gc;
    }
    let previous = registry.status.clone().unwrap_or_default();
    if registry.status.as_ref() != Some(&status) {
        let api: Api<Registry> = Api::namespaced(ctx.client.clone(), &namespace);
        write_status(&api, &name, &status)
            .await
            .map_err(ReconcileError::Status)?;
        let was_ready = is_true(&previous.conditions, READY);
        let is_ready = is_true(&status.conditions, READY);
        if is_ready && !was_ready {
            let note = format!("serving at {}", status.endpoint.clone().unwrap_or_default());
            publish(&ctx, &registry, EventType::Normal, "Ready", note).await;
        }
        let stalled_by = problem
            .as_ref()
            .map(|p| (p.reason, p.message.clone()))
            .or_else(|| {
                stuck
                    .as_ref()
                    .filter(|d| d.stalled && is_true(&status.conditions, STALLED))
                    .map(|d| (d.reason, d.message.clone()))
            });
        if let Some((reason, message)) = stalled_by
            && !is_true(&previous.conditions, STALLED)
        {
            publish(&ctx, &registry, EventType::Warning, reason, message).await;
        }
    }
    Ok(Action::requeue(next_check))
}
