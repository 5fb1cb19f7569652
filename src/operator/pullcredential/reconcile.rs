//! One pass over an ImagePullCredential: resolve the source → (webhook configuration) → a copy
//! in every target namespace and, in ServiceAccount mode, an entry on the named ServiceAccounts
//! → remove what no longer applies → status.

use super::Context;
use super::build::{copy_secret, service_account_add_patch, service_account_remove_patch};
use super::names::{FINALIZER, PULL_CREDENTIAL_LABEL, robot_state_secret, secret_name};
use super::source::{
    self, Credential, RobotState, SourceApiError, SourceProblem, credential_from_robot,
    parse_refresh, plan, registry_hosts, repositories,
};
use super::status::{SyncOutcome, compute};
use super::targets::target_namespaces;
use crate::crd::image_pull_credential::{ImagePullCredential, InjectMode, NamespaceFailure};
use crate::operator::apply::{ApplyError, FIELD_MANAGER, Outcome, apply, prune};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Re-check even when nothing happens, as a safety net for missed watch events.
const RESYNC: Duration = Duration::from_secs(3600);
/// How soon to look again at a source that is missing or unreachable.
const PROBLEM_RETRY: Duration = Duration::from_secs(30);
/// Namespaces written at once: enough to keep the API server busy, few enough to be polite.
const CONCURRENCY: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the caches stopped")]
    CachesStopped,
    #[error(transparent)]
    Source(#[from] SourceApiError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot {what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error(transparent)]
    Tls(#[from] crate::operator::registry::tls::TlsError),
}

impl ReconcileError {
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::CachesStopped => "cache",
            ReconcileError::Source(_) => "source",
            ReconcileError::Apply(_) => "apply",
            ReconcileError::Api { .. } => "api",
            ReconcileError::Tls(_) => "secrets",
        }
    }
}

pub fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let what = what.into();
    move |source| ReconcileError::Api { what, source }
}

/// Copies and the robot state Secret of one credential, from the cache.
pub fn owned_secrets(ctx: &Context, ipc: &ImagePullCredential) -> Vec<Arc<Secret>> {
    let name = ipc.name_any();
    ctx.stores
        .secrets
        .state()
        .into_iter()
        .filter(|s| s.labels().get(PULL_CREDENTIAL_LABEL) == Some(&name))
        .collect()
}

pub fn is_copy(secret: &Secret, ipc: &ImagePullCredential, operator_namespace: &str) -> bool {
    !(secret.namespace().as_deref() == Some(operator_namespace)
        && secret.name_any() == robot_state_secret(ipc))
}

pub fn controlled_by(secret: &Secret, uid: &str) -> bool {
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

async fn ensure_finalizer(ipc: &ImagePullCredential, ctx: &Context) -> Result<(), ReconcileError> {
    if ipc.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let api: Api<ImagePullCredential> = Api::all(ctx.client.clone());
    let add = match ipc.meta().finalizers {
        None => {
            serde_json::json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
        }
        Some(_) => {
            serde_json::json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
        }
    };
    let patch = serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": ipc.resource_version()},
        add,
    ]);
    api.patch(
        &ipc.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(patch).expect("valid patch")),
    )
    .await
    .map_err(api_error("add the cleanup finalizer"))?;
    Ok(())
}

/// The credential this pass distributes, or why there is none.
async fn resolve_source(
    ipc: &ImagePullCredential,
    ctx: &Context,
    now: i64,
) -> Result<Result<Credential, SourceProblem>, ReconcileError> {
    if let Some(reference) = &ipc.spec.source.secret_ref {
        return Ok(source::from_secret(&ctx.client, reference).await?);
    }
    let Some(reg_source) = &ipc.spec.source.registry_ref else {
        return Ok(Err(SourceProblem::Invalid(
            "source names neither registryRef nor secretRef".into(),
        )));
    };
    let Some(registry) = ctx
        .stores
        .registries
        .get(&ObjectRef::new(&reg_source.name).within(&reg_source.namespace))
    else {
        return Ok(Err(SourceProblem::NotFound(format!(
            "Registry {}/{} does not exist",
            reg_source.namespace, reg_source.name
        ))));
    };
    let refresh = parse_refresh(ipc);
    let state_secret = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&robot_state_secret(ipc)).within(&ctx.operator_namespace));
    let state = state_secret.as_deref().and_then(RobotState::from_secret);
    let what_to_do = plan(
        state.as_ref(),
        &registry.uid().unwrap_or_default(),
        &repositories(reg_source).join(","),
        now,
        refresh,
    );
    let state = match source::mint(
        &ctx.client,
        ipc,
        &registry,
        reg_source,
        state,
        what_to_do,
        now,
        refresh,
    )
    .await?
    {
        Ok(s) => s,
        Err(problem) => return Ok(Err(problem)),
    };
    // Remember the robot before anything uses it: a crash after this point re-uses it.
    let desired = state.to_secret(ipc, &ctx.operator_namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    apply(&secrets, &desired, state_secret.as_deref()).await?;
    if what_to_do != source::RobotPlan::Keep {
        tracing::info!(credential = %ipc.name_any(), plan = ?what_to_do, "robot credential renewed");
    }
    let service = ctx
        .stores
        .services
        .get(&ObjectRef::new(&registry.name_any()).within(&reg_source.namespace));
    let hosts = registry_hosts(&registry, service.as_deref(), reg_source);
    Ok(Ok(credential_from_robot(&state, &hosts, refresh)))
}

enum NamespaceResult {
    Synced { writes: usize },
    Failed(NamespaceFailure),
}

fn failure(namespace: &str, reason: &str, message: String) -> NamespaceResult {
    NamespaceResult::Failed(NamespaceFailure {
        namespace: namespace.to_owned(),
        reason: reason.to_owned(),
        message,
    })
}

async fn patch_service_account(
    ctx: &Context,
    sa: &ServiceAccount,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<ServiceAccount> =
        Api::namespaced(ctx.client.clone(), &sa.namespace().unwrap_or_default());
    let patch: json_patch::Patch = serde_json::from_value(patch).expect("valid JSON patch");
    api.patch(
        &sa.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map(|_| ())
}

/// Writes the copy in one namespace and, in ServiceAccount mode, the ServiceAccount entries.
async fn sync_namespace(
    ctx: &Context,
    ipc: &ImagePullCredential,
    credential: &Credential,
    namespace: &str,
    live: Option<Arc<Secret>>,
) -> NamespaceResult {
    let uid = ipc.uid().unwrap_or_default();
    let name = secret_name(ipc);
    let desired = copy_secret(ipc, namespace, &credential.docker_config, &credential.hash);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut writes = 0;
    let written = match live {
        Some(live) if controlled_by(&live, &uid) => apply(&api, &desired, Some(&live))
            .await
            .map_err(|e| e.to_string()),
        Some(_) => {
            return failure(
                namespace,
                "Conflict",
                format!("Secret {name} exists and is not owned by this ImagePullCredential"),
            );
        }
        None => {
            // Create, never apply: a Secret of the same name that someone else owns must not
            // be taken over.
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.create(&params, &desired).await {
                Ok(_) => Ok(Outcome::Written),
                Err(kube::Error::Api(s)) if s.code == 409 => match api.get_opt(&name).await {
                    Ok(Some(existing)) if controlled_by(&existing, &uid) => {
                        apply(&api, &desired, Some(&existing))
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Ok(_) => {
                        return failure(
                            namespace,
                            "Conflict",
                            format!("Secret {name} exists and is not owned by wharf"),
                        );
                    }
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match written {
        Ok(Outcome::Written) => writes += 1,
        Ok(Outcome::Unchanged) => {}
        Err(message) => return failure(namespace, "WriteFailed", message),
    }
    if ipc.spec.mode() == InjectMode::ServiceAccount {
        for sa_name in ipc.spec.service_accounts() {
            // A ServiceAccount that does not exist yet is patched when it appears (it is watched).
            let Some(sa) = ctx
                .stores
                .service_accounts
                .get(&ObjectRef::new(&sa_name).within(namespace))
            else {
                continue;
            };
            if let Some(patch) = service_account_add_patch(&sa, &name) {
                match patch_service_account(ctx, &sa, patch).await {
                    Ok(()) => writes += 1,
                    Err(e) => {
                        return failure(
                            namespace,
                            "ServiceAccountNotPatched",
                            format!("ServiceAccount {sa_name}: {e}"),
                        );
                    }
                }
            }
        }
    }
    NamespaceResult::Synced { writes }
}

/// Removes our entry from the ServiceAccounts of `namespace` that carry it.
pub async fn remove_service_account_entries(
    ctx: &Context,
    namespace: &str,
    secret: &str,
) -> Result<usize, ReconcileError> {
    let mut removed = 0;
    for sa in ctx.stores.service_accounts.state() {
        if sa.namespace().as_deref() != Some(namespace) {
            continue;
        }
        if let Some(patch) = service_account_remove_patch(&sa, secret) {
            patch_service_account(ctx, &sa, patch)
                .await
                .map_err(api_error(format!(
                    "remove {secret} from ServiceAccount {namespace}/{}",
                    sa.name_any()
                )))?;
            removed += 1;
        }
    }
    Ok(removed)
}

async fn sync(
    ctx: &Context,
    ipc: &ImagePullCredential,
    credential: &Credential,
) -> Result<SyncOutcome, ReconcileError> {
    let targets = target_namespaces(
        &ipc.spec,
        ctx.stores.namespaces.state().iter().map(|n| n.as_ref()),
    );
    let name = secret_name(ipc);
    let uid = ipc.uid().unwrap_or_default();
    let copies: Vec<Arc<Secret>> = owned_secrets(ctx, ipc)
        .into_iter()
        .filter(|s| is_copy(s, ipc, &ctx.operator_namespace))
        .collect();
    let live_copy = |ns: &str| {
        copies
            .iter()
            .find(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == name)
            .cloned()
    };
    let results: Vec<NamespaceResult> = futures_util::stream::iter(targets.clone())
        .map(|ns| {
            let live = live_copy(&ns);
            async move { sync_namespace(ctx, ipc, credential, &ns, live).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut outcome = SyncOutcome {
        matched: targets.len(),
        ..Default::default()
    };
    for r in results {
        match r {
            NamespaceResult::Synced { writes } => outcome.written += writes,
            NamespaceResult::Failed(f) => outcome.failures.push(f),
        }
    }
    // What no longer applies: copies outside the targets or under an old name, and entries on
    // ServiceAccounts when the mode no longer asks for them.
    let wanted: HashSet<&str> = targets.iter().map(String::as_str).collect();
    for copy in &copies {
        let ns = copy.namespace().unwrap_or_default();
        let stale = !wanted.contains(ns.as_str()) || copy.name_any() != name;
        if stale {
            outcome.written += remove_service_account_entries(ctx, &ns, &copy.name_any()).await?;
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            if prune(&api, Some(copy.as_ref()), &uid).await? == Outcome::Written {
                outcome.written += 1;
                tracing::info!(credential = %ipc.name_any(), namespace = %ns, "copy removed");
            }
        } else if ipc.spec.mode() != InjectMode::ServiceAccount {
            outcome.written += remove_service_account_entries(ctx, &ns, &name).await?;
        }
    }
    Ok(outcome)
}

pub async fn reconcile(
    ipc: Arc<ImagePullCredential>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if !ctx.stores.ready().await {
        return Err(ReconcileError::CachesStopped);
    }
    if ipc.meta().deletion_timestamp.is_some() {
        return super::cleanup::finalize(&ipc, &ctx).await;
    }
    ensure_finalizer(&ipc, &ctx).await?;
    let now = Timestamp::now();
    let mut written = super::webhook_config::ensure(&ctx, now.as_second()).await?;
    let source = resolve_source(&ipc, &ctx, now.as_second()).await?;
    let outcome = match &source {
        Ok(credential) => Some(sync(&ctx, &ipc, credential).await?),
        Err(_) => None,
    };
    written += outcome.as_ref().map_or(0, |o| o.written);
    let status = compute(
        ipc.status.as_ref(),
        ipc.meta().generation,
        source.as_ref(),
        outcome.as_ref(),
        &Time(now),
    );
    if ipc.status.as_ref() != Some(&status) {
        let api: Api<ImagePullCredential> = Api::all(ctx.client.clone());
        let patch = serde_json::json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "ImagePullCredential", "status": status,
        });
        api.patch_status(
            &ipc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(api_error("update the status"))?;
        if let Err(problem) = &source {
            publish(
                &ctx,
                &ipc,
                EventType::Warning,
                problem.reason(),
                problem.to_string(),
            )
            .await;
        }
    }
    if written > 0 {
        ctx.metrics.objects_written(super::CONTROLLER, written);
        let message = match &outcome {
            Some(o) => format!(
                "{} writes; {} of {} namespaces synced",
                written,
                o.matched - o.failures.len(),
                o.matched
            ),
            None => format!("{written} writes"),
        };
        publish(&ctx, &ipc, EventType::Normal, "Synced", message).await;
    }
    let requeue = match &source {
        Err(_) => PROBLEM_RETRY,
        Ok(c) => match c.renew_at {
            Some(at) => Duration::from_secs((at - now.as_second()).max(1) as u64).min(RESYNC),
            None => RESYNC,
        },
    };
    Ok(Action::requeue(requeue))
}

pub async fn publish(
    ctx: &Context,
    ipc: &ImagePullCredential,
    type_: EventType,
    reason: &str,
    note: String,
) {
    crate::operator::events::publish(&ctx.recorder, ipc, type_, "Sync", reason, note).await;
}
