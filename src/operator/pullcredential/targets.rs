//! Which namespaces an ImagePullCredential targets: those its selector matches or that it names,
//! minus exclusions and namespaces that opted out or are being deleted. Pure.

use crate::crd::image_pull_credential::{ImagePullCredentialSpec, OPT_OUT_LABEL};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Whether `labels` satisfy a Kubernetes label selector. An empty selector matches everything;
/// an unknown operator matches nothing (the API server rejects those, so this is defensive).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// A namespace that opted out of every credential, or is going away.
pub fn namespace_closed(namespace: &Namespace) -> bool {
    let opted_out = namespace
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OPT_OUT_LABEL))
        .is_some_and(|v| v == "false");
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    opted_out || terminating
}

pub fn targets(
    spec: &ImagePullCredentialSpec,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if spec.excluded().iter().any(|e| e == name) {
        return false;
    }
    let by_name = spec
        .namespaces
        .as_ref()
        .is_some_and(|names| names.iter().any(|n| n == name));
    let by_selector = spec
        .namespace_selector
        .as_ref()
        .is_some_and(|s| selector_matches(s, labels));
    by_name || by_selector
}

/// The names of the target namespaces among `namespaces`, sorted.
pub fn target_namespaces<'a>(
    spec: &ImagePullCredentialSpec,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
) -> Vec<String> {
    let empty = BTreeMap::new();
    let mut out: Vec<String> = namespaces
        .into_iter()
        .filter(|ns| !namespace_closed(ns))
        .filter_map(|ns| {
            let name = ns.metadata.name.as_deref()?;
            let labels = ns.metadata.labels.as_ref().unwrap_or(&empty);
            targets(spec, name, labels).then(|| name.to_owned())
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn spec(v: serde_json::Value) -> ImagePullCredentialSpec {
        let mut full = json!({"source": {"secretRef": {"namespace": "ops", "name": "pull"}}});
        for (k, val) in v.as_object().unwrap() {
            full[k] = val.clone();
        }
        serde_json::from_value(full).unwrap()
    }

    #[test]
    fn selector_names_exclusions_and_opt_out() {
        let all = [
            ns("team-a-1", json!({"registry-access": "team-a"})),
            ns("team-a-2", json!({"registry-access": "team-a"})),
            ns("team-b", json!({"registry-access": "team-b"})),
            ns("payments", json!({})),
            ns("kube-system", json!({"registry-access": "team-a"})),
            ns(
                "opted-out",
                json!({"registry-access": "team-a", OPT_OUT_LABEL: "false"}),
            ),
        ];
        let s = spec(
            json!({"namespaceSelector": {"matchLabels": {"registry-access": "team-a"}}, "namespaces": ["payments"]}),
        );
        assert_eq!(
            target_namespaces(&s, &all),
            ["payments", "team-a-1", "team-a-2"]
        );

        let every = spec(json!({"namespaceSelector": {}}));
        assert_eq!(
            target_namespaces(&every, &all),
            ["payments", "team-a-1", "team-a-2", "team-b"]
        );

        let custom_exclusions =
            spec(json!({"namespaceSelector": {}, "excludeNamespaces": ["team-b"]}));
        assert_eq!(
            target_namespaces(&custom_exclusions, &all),
            ["kube-system", "payments", "team-a-1", "team-a-2"]
        );

        let expressions = spec(json!({"namespaceSelector": {"matchExpressions": [
            {"key": "registry-access", "operator": "In", "values": ["team-a", "team-b"]},
            {"key": "tier", "operator": "DoesNotExist"}]}}));
        assert_eq!(
            target_namespaces(&expressions, &all),
            ["team-a-1", "team-a-2", "team-b"]
        );

        let names_only = spec(json!({"namespaces": ["payments", "missing"]}));
        assert_eq!(target_namespaces(&names_only, &all), ["payments"]);
    }

    #[test]
    fn terminating_namespaces_are_not_targets() {
        let mut terminating = ns("going", json!({}));
        terminating.status = Some(serde_json::from_value(json!({"phase": "Terminating"})).unwrap());
        let s = spec(json!({"namespaceSelector": {}}));
        assert!(target_namespaces(&s, [&terminating]).is_empty());
    }
}
