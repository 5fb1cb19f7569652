//! Pure builders for everything an ImagePullCredential writes: the dockerconfigjson, the copy in
//! each namespace, the state Secret of a minted robot, the webhook configuration, and the JSON
//! patches for ServiceAccounts. No API calls; unit-tested below.

use super::names::{
    INJECTED_ANNOTATION, PULL_CREDENTIAL_LABEL, SOURCE_HASH_ANNOTATION, WEBHOOK_CONFIGURATION,
    WEBHOOK_SERVICE,
};
use crate::crd::image_pull_credential::{ImagePullCredential, InjectMode, OPT_OUT_LABEL};
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const DOCKER_CONFIG_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

/// `{"auths": {host: {username, password, auth}}}` for every host, in a stable order.
pub fn docker_config(hosts: &[String], username: &str, password: &str) -> Vec<u8> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let auths: BTreeMap<&str, serde_json::Value> = hosts
        .iter()
        .map(|h| {
            (
                h.as_str(),
                serde_json::json!({"username": username, "password": password, "auth": auth}),
            )
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap_or_default()
}

pub fn content_hash(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn owner_reference(ipc: &ImagePullCredential, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: ImagePullCredential::api_version(&()).into(),
        kind: ImagePullCredential::kind(&()).into(),
        name: ipc.name_any(),
        uid: ipc.uid().unwrap_or_default(),
        controller: controller.then_some(true),
        block_owner_deletion: controller.then_some(true),
    }
}

/// The copy in one namespace. Only the credential is copied: no labels or annotations from the
/// source, so GitOps tools never mistake a copy for something they manage.
pub fn copy_secret(
    ipc: &ImagePullCredential,
    namespace: &str,
    docker_config: &[u8],
    hash: &str,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(super::names::secret_name(ipc)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                PULL_CREDENTIAL_LABEL.to_owned(),
                ipc.name_any(),
            )])),
            annotations: Some(BTreeMap::from([(
                SOURCE_HASH_ANNOTATION.to_owned(),
                hash.to_owned(),
            )])),
            owner_references: Some(vec![owner_reference(ipc, true)]),
            ..ObjectMeta::default()
        },
        type_: Some(DOCKER_CONFIG_TYPE.into()),
        data: Some(BTreeMap::from([(
            DOCKER_CONFIG_KEY.to_owned(),
            ByteString(docker_config.to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The webhook entries for one credential: one for its selector, one for its names (selectors
/// cannot express "or"). Both exclude its excluded namespaces, the operator's own namespace
/// and namespaces that opted out.
fn webhooks_for(
    ipc: &ImagePullCredential,
    operator_namespace: &str,
    ca_bundle: &[u8],
) -> Vec<MutatingWebhook> {
    let spec = &ipc.spec;
    let mut excluded = spec.excluded();
    excluded.push(operator_namespace.to_owned());
    excluded.sort();
    excluded.dedup();
    let guard = vec![
        LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(excluded),
        },
        LabelSelectorRequirement {
            key: OPT_OUT_LABEL.into(),
            operator: "NotIn".into(),
            values: Some(vec!["false".into()]),
        },
    ];
    let secret_name = super::names::secret_name(ipc);
    let hook = |name: String, selector: LabelSelector| MutatingWebhook {
        name,
        admission_review_versions: vec!["v1".into()],
        client_config: WebhookClientConfig {
            ca_bundle: Some(ByteString(ca_bundle.to_vec())),
            service: Some(ServiceReference {
                namespace: operator_namespace.to_owned(),
                name: WEBHOOK_SERVICE.into(),
                path: Some(format!("/mutate/pods/{secret_name}")),
                port: Some(443),
            }),
            url: None,
        },
        failure_policy: Some("Ignore".into()),
        match_policy: Some("Equivalent".into()),
        namespace_selector: Some(selector),
        object_selector: Some(LabelSelector::default()),
        reinvocation_policy: Some("Never".into()),
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(vec!["".into()]),
            api_versions: Some(vec!["v1".into()]),
            operations: Some(vec!["CREATE".into()]),
            resources: Some(vec!["pods".into()]),
            scope: Some("Namespaced".into()),
        }]),
        side_effects: "None".into(),
        timeout_seconds: Some(5),
        match_conditions: None,
    };
    let mut hooks = Vec::new();
    if let Some(selector) = &spec.namespace_selector {
        let mut expressions = selector.match_expressions.clone().unwrap_or_default();
        expressions.extend(guard.clone());
        hooks.push(hook(
            format!("{}.selector.pull-credentials.wharf.dev", ipc.name_any()),
            LabelSelector {
                match_labels: selector.match_labels.clone().filter(|m| !m.is_empty()),
                match_expressions: Some(expressions),
            },
        ));
    }
    if let Some(names) = spec.namespaces.as_ref().filter(|n| !n.is_empty()) {
        let mut expressions = vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "In".into(),
            values: Some(names.clone()),
        }];
        expressions.extend(guard);
        hooks.push(hook(
            format!("{}.names.pull-credentials.wharf.dev", ipc.name_any()),
            LabelSelector {
                match_labels: None,
                match_expressions: Some(expressions),
            },
        ));
    }
    hooks
}

/// The one webhook configuration serving every PodWebhook credential. Each such credential is an
/// owner, so Kubernetes deletes the configuration when the last of them is gone.
pub fn webhook_configuration<'a>(
    credentials: impl IntoIterator<Item = &'a ImagePullCredential>,
    operator_namespace: &str,
    ca_bundle: &[u8],
) -> Option<MutatingWebhookConfiguration> {
    let mut served: Vec<&ImagePullCredential> = credentials
        .into_iter()
        .filter(|c| {
            c.spec.mode() == InjectMode::PodWebhook && c.meta().deletion_timestamp.is_none()
        })
        .collect();
    if served.is_empty() {
        return None;
    }
    served.sort_by_key(|c| c.name_any());
    Some(MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(WEBHOOK_CONFIGURATION.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "wharf-operator".to_owned(),
            )])),
            owner_references: Some(served.iter().map(|c| owner_reference(c, false)).collect()),
            ..ObjectMeta::default()
        },
        webhooks: Some(
            served
                .iter()
                .flat_map(|c| webhooks_for(c, operator_namespace, ca_bundle))
                .collect(),
        ),
    })
}

/// Our entries on a ServiceAccount, from the annotation that records them: only those are ever
/// removed, so an entry a user added by hand survives even if it has the same name.
pub fn injected_entries(sa: &ServiceAccount) -> Vec<String> {
    sa.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECTED_ANNOTATION))
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// JSON-patch path of the annotation (`/` in the key escaped as `~1`).
fn injected_annotation_path() -> String {
    format!(
        "/metadata/annotations/{}",
        INJECTED_ANNOTATION.replace('~', "~0").replace('/', "~1")
    )
}

fn annotation_ops(sa: &ServiceAccount, entries: &[String]) -> serde_json::Value {
    if entries.is_empty() {
        return serde_json::json!({"op": "remove", "path": injected_annotation_path()});
    }
    match sa.metadata.annotations {
        None => serde_json::json!({"op": "add", "path": "/metadata/annotations",
            "value": {INJECTED_ANNOTATION: entries.join(",")}}),
        Some(_) => {
            serde_json::json!({"op": "add", "path": injected_annotation_path(), "value": entries.join(",")})
        }
    }
}

/// `imagePullSecrets` is an atomic list: a server-side apply would take all of it over. So the
/// entry is added with a JSON patch guarded by the resourceVersion the decision was made on, and
/// recorded in an annotation.
pub fn service_account_add_patch(sa: &ServiceAccount, secret: &str) -> Option<serde_json::Value> {
    let existing = sa.image_pull_secrets.as_deref().unwrap_or_default();
    if existing.iter().any(|r| r.name == secret) {
        return None;
    }
    let rv = sa.metadata.resource_version.clone().unwrap_or_default();
    let add = match sa.image_pull_secrets {
        None => {
            serde_json::json!({"op": "add", "path": "/imagePullSecrets", "value": [{"name": secret}]})
        }
        Some(_) => {
            serde_json::json!({"op": "add", "path": "/imagePullSecrets/-", "value": {"name": secret}})
        }
    };
    let mut entries = injected_entries(sa);
    if !entries.iter().any(|e| e == secret) {
        entries.push(secret.to_owned());
    }
    Some(serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        add,
        annotation_ops(sa, &entries),
    ]))
}

/// Removes our entry (only if we added it), checking it is still where it was seen: other
/// entries stay.
pub fn service_account_remove_patch(
    sa: &ServiceAccount,
    secret: &str,
) -> Option<serde_json::Value> {
    let mut entries = injected_entries(sa);
    if !entries.iter().any(|e| e == secret) {
        return None;
    }
    entries.retain(|e| e != secret);
    let rv = sa.metadata.resource_version.clone().unwrap_or_default();
    let mut ops =
        vec![serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
    if let Some(index) = sa
        .image_pull_secrets
        .as_deref()
        .unwrap_or_default()
        .iter()
        .position(|r| r.name == secret)
    {
        ops.push(serde_json::json!({"op": "remove", "path": format!("/imagePullSecrets/{index}")}));
    }
    ops.push(annotation_ops(sa, &entries));
    Some(serde_json::Value::Array(ops))
}

/// The webhook's answer for one Pod: a JSON patch adding `secret` to `imagePullSecrets` unless it
/// is there already.
pub fn pod_patch(pod: &serde_json::Value, secret: &str) -> Option<serde_json::Value> {
    match pod["spec"]["imagePullSecrets"].as_array() {
        Some(list) if list.iter().any(|e| e["name"] == secret) => None,
        Some(_) => Some(serde_json::json!([
            {"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": secret}}
        ])),
        None => Some(serde_json::json!([
            {"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": secret}]}
        ])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ipc(name: &str, spec: serde_json::Value) -> ImagePullCredential {
        serde_json::from_value(json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "ImagePullCredential",
            "metadata": {"name": name, "uid": format!("uid-{name}")},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn docker_config_lists_every_host_with_the_same_credential() {
        let cfg = docker_config(
            &["b.example:5000".into(), "a.example".into()],
            "robot$x",
            "s3",
        );
        let v: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
        assert_eq!(v["auths"]["a.example"]["username"], "robot$x");
        assert_eq!(
            v["auths"]["b.example:5000"]["auth"],
            base64::engine::general_purpose::STANDARD.encode("robot$x:s3")
        );
        assert_eq!(
            docker_config(&["b".into(), "a".into()], "u", "p"),
            docker_config(&["b".into(), "a".into()], "u", "p")
        );
        assert!(content_hash(b"x").starts_with("sha256:"));
    }

    #[test]
    fn copies_carry_only_our_metadata() {
        let c = ipc(
            "corp",
            json!({"source": {"secretRef": {"namespace": "ops", "name": "pull"}}, "namespaces": ["a"], "secretName": "corp-pull"}),
        );
        let s = copy_secret(&c, "team-a", b"{}", "sha256:1");
        assert_eq!(s.metadata.name.as_deref(), Some("corp-pull"));
        assert_eq!(s.metadata.labels.as_ref().unwrap().len(), 1);
        assert_eq!(s.metadata.annotations.as_ref().unwrap().len(), 1);
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ImagePullCredential", Some(true))
        );
        assert_eq!(s.type_.as_deref(), Some(DOCKER_CONFIG_TYPE));
    }

    #[test]
    fn webhook_configuration_covers_selector_and_names_with_exclusions() {
        let a = ipc(
            "a",
            json!({"source": {"secretRef": {"namespace": "o", "name": "p"}},
            "namespaceSelector": {"matchLabels": {"registry-access": "team-a"}}, "namespaces": ["payments"]}),
        );
        let sa_mode = ipc(
            "b",
            json!({"source": {"secretRef": {"namespace": "o", "name": "p"}},
            "namespaces": ["x"], "inject": {"mode": "ServiceAccount"}}),
        );
        let mwc = webhook_configuration([&a, &sa_mode], "wharf-system", b"CA").unwrap();
        let hooks = mwc.webhooks.unwrap();
        assert_eq!(hooks.len(), 2, "only PodWebhook credentials are served");
        assert_eq!(hooks[0].failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(hooks[0].timeout_seconds, Some(5));
        assert_eq!(
            hooks[0]
                .client_config
                .service
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/mutate/pods/a")
        );
        let sel = hooks[0].namespace_selector.as_ref().unwrap();
        assert_eq!(
            sel.match_labels.as_ref().unwrap()["registry-access"],
            "team-a"
        );
        let excluded = sel.match_expressions.as_ref().unwrap()[0]
            .values
            .clone()
            .unwrap();
        assert!(
            excluded.contains(&"kube-system".to_string())
                && excluded.contains(&"wharf-system".to_string())
        );
        let names = hooks[1]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert_eq!(
            names[0].values.as_deref(),
            Some(&["payments".to_string()][..])
        );
        assert_eq!(mwc.metadata.owner_references.unwrap().len(), 1);
        assert!(webhook_configuration([&sa_mode], "wharf-system", b"CA").is_none());
    }

    #[test]
    fn service_account_patches_are_guarded_and_touch_only_our_entry() {
        let sa: ServiceAccount = serde_json::from_value(
            json!({"metadata": {"name": "default", "resourceVersion": "7"},
            "imagePullSecrets": [{"name": "theirs"}]}),
        )
        .unwrap();
        let add = service_account_add_patch(&sa, "ours").unwrap();
        assert_eq!(
            add[0],
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"})
        );
        assert_eq!(
            add[1],
            json!({"op": "add", "path": "/imagePullSecrets/-", "value": {"name": "ours"}})
        );
        assert_eq!(add[2]["value"], json!({INJECTED_ANNOTATION: "ours"}));
        // after the patch
        let patched: ServiceAccount = serde_json::from_value(
            json!({"metadata": {"name": "default", "resourceVersion": "8",
            "annotations": {INJECTED_ANNOTATION: "ours", "keep": "me"}},
            "imagePullSecrets": [{"name": "theirs"}, {"name": "ours"}]}),
        )
        .unwrap();
        assert!(service_account_add_patch(&patched, "ours").is_none());
        assert_eq!(injected_entries(&patched), ["ours"]);
        let remove = service_account_remove_patch(&patched, "ours").unwrap();
        assert_eq!(
            remove[1],
            json!({"op": "remove", "path": "/imagePullSecrets/1"})
        );
        assert_eq!(
            remove[2],
            json!({"op": "remove", "path": "/metadata/annotations/wharf.dev~1injected-pull-secrets"})
        );
        // an entry the user added by hand is never removed
        assert!(service_account_remove_patch(&sa, "theirs").is_none());
        let bare: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "d", "resourceVersion": "1"}}))
                .unwrap();
        assert_eq!(
            service_account_add_patch(&bare, "ours").unwrap()[1]["path"],
            "/imagePullSecrets"
        );
    }

    #[test]
    fn pod_patch_adds_once() {
        assert_eq!(
            pod_patch(&json!({"spec": {}}), "s").unwrap()[0]["path"],
            "/spec/imagePullSecrets"
        );
        assert_eq!(
            pod_patch(&json!({"spec": {"imagePullSecrets": [{"name": "o"}]}}), "s").unwrap()[0]["path"],
            "/spec/imagePullSecrets/-"
        );
        assert!(pod_patch(&json!({"spec": {"imagePullSecrets": [{"name": "s"}]}}), "s").is_none());
    }
}
