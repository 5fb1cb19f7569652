//! Taking things back: the finalizer's cleanup when an ImagePullCredential is deleted, and the
//! sweep at start-up that removes copies whose credential disappeared while no operator ran.

use super::Context;
use super::build::injected_entries;
use super::names::{FINALIZER, PULL_CREDENTIAL_LABEL, secret_name};
use super::reconcile::{
    ReconcileError, api_error, controlled_by, is_copy, owned_secrets,
    remove_service_account_entries,
};
use crate::crd::image_pull_credential::{CredentialDeletionPolicy, ImagePullCredential};
use crate::operator::apply::prune;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use std::collections::HashMap;

/// Removes every ServiceAccount entry, then every copy (or, with `deletionPolicy: Orphan`, our
/// claim on it), revokes the robot, and lets the object go.
pub async fn finalize(ipc: &ImagePullCredential, ctx: &Context) -> Result<Action, ReconcileError> {
    if !ipc.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let uid = ipc.uid().unwrap_or_default();
    let name = secret_name(ipc);
    let orphan = ipc.spec.deletion_policy == Some(CredentialDeletionPolicy::Orphan);
    for secret in owned_secrets(ctx, ipc) {
        let ns = secret.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        if is_copy(&secret, ipc, &ctx.operator_namespace) {
            remove_service_account_entries(ctx, &ns, &name).await?;
            if orphan {
                let patch = serde_json::json!({"metadata": {
                    "ownerReferences": null, "labels": {PULL_CREDENTIAL_LABEL: null}}});
                api.patch(
                    &secret.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(api_error(format!(
                    "orphan Secret {ns}/{}",
                    secret.name_any()
                )))?;
                continue;
            }
        }
        prune(&api, Some(secret.as_ref()), &uid).await?;
    }
    if let Some(source) = &ipc.spec.source.registry_ref
        && let Some(registry) = ctx
            .stores
            .registries
            .get(&ObjectRef::new(&source.name).within(&source.namespace))
        && let Err(e) = super::source::revoke(&ctx.client, ipc, &registry).await
    {
        // The robot expires on its own within two refresh intervals.
        tracing::warn!(credential = %ipc.name_any(), error = %e, "cannot revoke the robot account; it will expire");
    }
    let index = ipc
        .finalizers()
        .iter()
        .position(|f| f == FINALIZER)
        .unwrap_or(0);
    let patch = serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
    ]);
    let api: Api<ImagePullCredential> = Api::all(ctx.client.clone());
    api.patch(
        &ipc.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(patch).expect("valid patch")),
    )
    .await
    .map_err(api_error("remove the cleanup finalizer"))?;
    tracing::info!(credential = %ipc.name_any(), orphan, "cleaned up");
    Ok(Action::await_change())
}

/// Removes ServiceAccount entries and copies whose credential no longer exists: what a deletion
/// missed because the operator was down and the finalizer was forced away.
pub async fn sweep_orphans(ctx: &Context) -> Result<usize, ReconcileError> {
    let api: Api<ImagePullCredential> = Api::all(ctx.client.clone());
    let existing: HashMap<String, String> = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(api_error("list ImagePullCredentials"))?
        .into_iter()
        .map(|m| (m.name_any(), m.uid().unwrap_or_default()))
        .collect();
    let mut removed = 0;
    // ServiceAccount entries whose copy no live credential controls (Kubernetes' garbage
    // collector deletes orphaned copies on its own, but not the entries pointing at them).
    let live_copy = |ns: &str, name: &str| {
        ctx.stores.secrets.state().iter().any(|s| {
            s.namespace().as_deref() == Some(ns)
                && s.name_any() == name
                && s.labels()
                    .get(PULL_CREDENTIAL_LABEL)
                    .and_then(|owner| existing.get(owner))
                    .is_some_and(|uid| controlled_by(s, uid))
        })
    };
    for sa in ctx.stores.service_accounts.state() {
        let ns = sa.namespace().unwrap_or_default();
        for entry in injected_entries(&sa) {
            if !live_copy(&ns, &entry) {
                removed += remove_service_account_entries(ctx, &ns, &entry).await?;
                tracing::info!(namespace = %ns, service_account = %sa.name_any(), entry = %entry, "orphaned ServiceAccount entry removed");
            }
        }
    }
    for secret in ctx.stores.secrets.state() {
        let Some(owner) = secret.labels().get(PULL_CREDENTIAL_LABEL) else {
            continue;
        };
        let alive = existing
            .get(owner)
            .is_some_and(|uid| controlled_by(&secret, uid));
        if alive {
            continue;
        }
        let ns = secret.namespace().unwrap_or_default();
        let Some(owner_uid) = secret
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == ImagePullCredential::kind(&()))
            .map(|o| o.uid.clone())
        else {
            continue;
        };
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        if prune(&api, Some(secret.as_ref()), &owner_uid).await?
            == crate::operator::apply::Outcome::Written
        {
            tracing::info!(namespace = %ns, secret = %secret.name_any(), credential = %owner, "orphaned copy removed");
            removed += 1;
        }
    }
    Ok(removed)
}
