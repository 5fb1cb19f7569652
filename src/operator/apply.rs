//! Apply: server-side apply with the operator's one field manager, skipped when the live object
//! already has every field we set. That comparison is what makes a reconcile with nothing to do
//! write nothing, while drift (an edited image, a deleted label) still differs and is repaired.
//!
//! A forced apply takes back every field we set, but not a list entry someone else added beside
//! ours: a hand-edited Service port (5000 -> 5999) is a new entry of the `ports` list-map, owned
//! by `kubectl-patch`, and applying port 5000 again would merge a second entry named `registry`
//! (422 Duplicate value). So before such an apply, `ownership::take_over_foreign_entries` hands
//! the foreign entries of the lists we declare to our manager, and the apply then removes them as
//! fields we own and no longer set.

use super::ownership::{first_unowned, take_over_foreign_entries};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Debug;

pub const FIELD_MANAGER: &str = "wharf-operator";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot delete {kind} {name}: {source}")]
    Delete {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot take over foreign list entries of {kind} {name}: {source}")]
    TakeOver {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot serialize {kind}: {source}")]
    Serialize {
        kind: String,
        source: serde_json::Error,
    },
}

impl ApplyError {
    pub fn is_conflict_or_invalid(&self) -> bool {
        matches!(self, ApplyError::Apply { source: kube::Error::Api(s), .. } if s.code == 409 || s.code == 422)
    }
}

/// What an apply did, for events and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Written,
}

/// Server-side applies `desired` unless `live` already matches it.
pub async fn apply<K>(api: &Api<K>, desired: &K, live: Option<&K>) -> Result<Outcome, ApplyError>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let kind = K::kind(&()).to_string();
    let to_value = |k: &K| {
        serde_json::to_value(k).map_err(|source| ApplyError::Serialize {
            kind: kind.clone(),
            source,
        })
    };
    let name = desired.name_any();
    match live {
        Some(live) => {
            let desired_value = to_value(desired)?;
            let managed = live.meta().managed_fields.as_deref().unwrap_or_default();
            let drift = first_difference(&desired_value, &to_value(live)?, "")
                .or_else(|| first_unowned(&desired_value, managed, FIELD_MANAGER));
            match drift {
                None => return Ok(Outcome::Unchanged),
                Some(path) => {
                    tracing::info!(kind = %kind, name = %name, field = %path, "differs from the desired state; applying")
                }
            }
            if let Some(taken) = take_over_foreign_entries(&desired_value, managed, FIELD_MANAGER) {
                tracing::info!(kind = %kind, name = %name, managers = ?taken.from, "taking over list entries other managers added");
                // The resourceVersion makes this conditional: an object changed meanwhile is
                // looked at again rather than given a stale ownership list.
                let patch = serde_json::json!({"metadata": {
                    "managedFields": taken.managed_fields,
                    "resourceVersion": live.meta().resource_version,
                }});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|source| ApplyError::TakeOver {
                        kind: kind.clone(),
                        name: name.clone(),
                        source,
                    })?;
            }
        }
        None => tracing::info!(kind = %kind, name = %name, "missing; creating"),
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await
    .map_err(|source| ApplyError::Apply {
        kind: kind.clone(),
        name: name.clone(),
        source,
    })?;
    tracing::debug!(kind = %kind, name = %name, "applied");
    Ok(Outcome::Written)
}

/// Deletes `live` if it exists and the object with uid `owner_uid` controls it; an object the
/// user created under the same name is never touched.
pub async fn prune<K>(
    api: &Api<K>,
    live: Option<&K>,
    owner_uid: &str,
) -> Result<Outcome, ApplyError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(live) = live else {
        return Ok(Outcome::Unchanged);
    };
    let controlled = live
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid);
    if !controlled || live.meta().deletion_timestamp.is_some() {
        return Ok(Outcome::Unchanged);
    }
    let name = live.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: live.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(Outcome::Written),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Outcome::Unchanged),
        Err(source) => Err(ApplyError::Delete {
            kind: K::kind(&()).to_string(),
            name,
            source,
        }),
    }
}

/// True when every field set in `desired` has an equal value in `live`. Lists must match element
/// by element (a server-side apply would make them so), maps may hold more keys (defaults the
/// API server fills in, other managers' fields). Quantities compare by value, because the API
/// server rewrites `1024Mi` as `1Gi`.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    first_difference(desired, live, "").is_none()
}

/// The path of the first field where `live` does not match `desired` (see `is_subset`).
pub fn first_difference(desired: &Value, live: &Value, path: &str) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(k, dv)| {
            let here = format!("{path}.{k}");
            match l.get(k) {
                Some(lv) => first_difference(dv, lv, &here),
                None => (!is_empty(dv)).then_some(here),
            }
        }),
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => d
            .iter()
            .zip(l)
            .enumerate()
            .find_map(|(i, (dv, lv))| first_difference(dv, lv, &format!("{path}[{i}]"))),
        _ => (!leaf_matches(desired, live)).then(|| path.to_owned()),
    }
}

fn leaf_matches(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(_) | Value::Array(_), Value::Null) => is_empty(desired),
        (Value::String(d), Value::String(l)) => {
            d == l || matches!((quantity(d), quantity(l)), (Some(a), Some(b)) if a == b)
        }
        (Value::String(d), Value::Number(l)) => quantity(d).is_some_and(|q| Some(q) == l.as_f64()),
        (Value::Null, _) => true,
        (d, l) => d == l,
    }
}

/// Null, or a map or list with nothing set in it: what a field left out reads as.
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The value of a Kubernetes quantity (`500m`, `1Gi`, `2e3`), or None for any other string.
fn quantity(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| s.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((s, 1.0));
    if number.is_empty()
        || !number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'))
        || !number.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '+' || c == '-')
    {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_foreign_fields_in_the_live_object_are_not_drift() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 1, "ports": [{"port": 5000}]}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "other": "y"}},
                          "spec": {"replicas": 1, "clusterIP": "10.0.0.1", "ports": [{"port": 5000, "protocol": "TCP"}]},
                          "status": {}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn edits_and_deletions_are_drift() {
        let desired =
            json!({"spec": {"image": "wharf:1", "ports": [{"port": 5000}], "labels": {"x": "1"}}});
        for live in [
            json!({"spec": {"image": "wharf:2", "ports": [{"port": 5000}], "labels": {"x": "1"}}}),
            json!({"spec": {"image": "wharf:1", "ports": [], "labels": {"x": "1"}}}),
            json!({"spec": {"image": "wharf:1", "ports": [{"port": 5000}, {"port": 6000}], "labels": {"x": "1"}}}),
            json!({"spec": {"image": "wharf:1", "ports": [{"port": 5000}], "labels": {}}}),
            json!({"spec": {"ports": [{"port": 5000}], "labels": {"x": "1"}}}),
        ] {
            assert!(!is_subset(&desired, &live), "{live}");
        }
    }

    #[test]
    fn empty_desired_collections_match_absent_live_ones() {
        assert!(is_subset(&json!({"a": {}, "b": [], "c": null}), &json!({})));
        assert!(!is_subset(&json!({"a": {"k": "v"}}), &json!({})));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(is_subset(
            &json!({"memory": "1024Mi"}),
            &json!({"memory": "1Gi"})
        ));
        assert!(is_subset(&json!({"cpu": "0.5"}), &json!({"cpu": "500m"})));
        assert!(is_subset(&json!({"cpu": "1000m"}), &json!({"cpu": "1"})));
        assert!(!is_subset(
            &json!({"memory": "1Gi"}),
            &json!({"memory": "1G"})
        ));
        assert!(!is_subset(
            &json!({"name": "main"}),
            &json!({"name": "mainly"})
        ));
        assert_eq!(quantity("registry"), None);
        assert_eq!(quantity("m"), None);
        assert_eq!(quantity("2e3"), Some(2000.0));
    }
}
