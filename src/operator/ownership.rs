//! Field ownership: which list entries of an object other field managers added to lists the
//! operator declares, and the `managedFields` that hand them to the operator.
//!
//! Server-side apply merges list-maps (Service ports, containers, volumes, env) by key: an entry
//! under a key we do not apply is someone else's and survives our apply, even a forced one. For
//! the objects the operator creates, the lists it declares are wholly its own (a second port
//! named `registry`, a sidecar container, an extra volume are drift, and some are not even
//! valid), so those entries become ours and the apply removes them. Fields of *our* entries that
//! we do not set (a `nodePort` the API server allocated, say) and lists we do not declare at all
//! (tolerations added by hand) stay with their manager: we only take what our lists say
//! should not be there.
//!
//! Pure: a desired object and its live `managedFields` in, the new `managedFields` out.

use super::apply::is_empty;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use serde_json::{Map, Value};

/// The outcome of a takeover: the full new `managedFields`, and whose entries moved.
#[derive(Debug, Clone, PartialEq)]
pub struct TakeOver {
    pub managed_fields: Vec<ManagedFieldsEntry>,
    pub from: Vec<String>,
}

/// `None` when no other manager owns an entry of a list `desired` declares that `desired` does
/// not have. Entries of subresources (`status`, `scale`) are never touched: they describe other
/// parts of the object.
pub fn take_over_foreign_entries(
    desired: &Value,
    managed: &[ManagedFieldsEntry],
    manager: &str,
) -> Option<TakeOver> {
    let mut entries = managed.to_vec();
    let mut moved = Map::new();
    let mut from = Vec::new();
    for entry in entries.iter_mut() {
        let foreign = entry.manager.as_deref() != Some(manager)
            && entry.subresource.as_deref().unwrap_or("").is_empty();
        let Some(FieldsV1(Value::Object(fields))) = entry.fields_v1.as_mut() else {
            continue;
        };
        if !foreign {
            continue;
        }
        let taken = split_object(desired, fields);
        if !taken.is_empty() {
            merge(&mut moved, taken);
            from.push(entry.manager.clone().unwrap_or_default());
        }
    }
    if moved.is_empty() {
        return None;
    }
    // A manager left with nothing goes; the API server would drop it the same way.
    entries.retain(|e| match &e.fields_v1 {
        Some(FieldsV1(Value::Object(f))) => !f.is_empty(),
        _ => true,
    });
    let ours = entries.iter_mut().find(|e| {
        e.manager.as_deref() == Some(manager)
            && e.operation.as_deref() == Some("Apply")
            && e.subresource.as_deref().unwrap_or("").is_empty()
    });
    match ours {
        Some(entry) => match entry.fields_v1.as_mut() {
            Some(FieldsV1(Value::Object(fields))) => merge(fields, moved),
            _ => entry.fields_v1 = Some(FieldsV1(Value::Object(moved))),
        },
        None => entries.push(ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some("Apply".into()),
            api_version: managed.first().and_then(|e| e.api_version.clone()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(Value::Object(moved))),
            ..ManagedFieldsEntry::default()
        }),
    }
    Some(TakeOver {
        managed_fields: entries,
        from,
    })
}

/// The path of the first field `desired` sets that `manager` does not own in `managed`: another
/// manager changed it. This catches what comparing values cannot: a hand edit that adds a key to
/// an atomic map (a Service `selector` merged with `{"app": "x"}` still contains ours, yet
/// selects nothing), since the edit takes the whole map from us.
pub fn first_unowned(
    desired: &Value,
    managed: &[ManagedFieldsEntry],
    manager: &str,
) -> Option<String> {
    let ours = managed.iter().find(|e| {
        e.manager.as_deref() == Some(manager)
            && e.operation.as_deref() == Some("Apply")
            && e.subresource.as_deref().unwrap_or("").is_empty()
    });
    let Some(FieldsV1(Value::Object(fields))) = ours.and_then(|e| e.fields_v1.as_ref()) else {
        return Some(String::new());
    };
    let Value::Object(top) = desired else {
        return None;
    };
    // Identity fields are not tracked in managedFields.
    let mut tracked = top.clone();
    for field in ["apiVersion", "kind", "status"] {
        tracked.remove(field);
    }
    if let Some(Value::Object(meta)) = tracked.get_mut("metadata") {
        for field in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "managedFields",
        ] {
            meta.remove(field);
        }
    }
    unowned_in_object(&tracked, fields, "")
}

fn unowned_in_object(
    desired: &Map<String, Value>,
    owned: &Map<String, Value>,
    path: &str,
) -> Option<String> {
    desired.iter().find_map(|(field, value)| {
        if is_empty(value) {
            return None;
        }
        let here = format!("{path}.{field}");
        match owned.get(&format!("f:{field}")) {
            None => Some(here),
            Some(Value::Object(node)) => unowned_below(value, node, &here),
            Some(_) => None,
        }
    })
}

fn unowned_below(desired: &Value, owned: &Map<String, Value>, path: &str) -> Option<String> {
    // `{}` (or only `.`): the field is owned as a whole (an atomic map, list or struct).
    if owned.keys().all(|k| k == ".") {
        return None;
    }
    match desired {
        Value::Object(map) => unowned_in_object(map, owned, path),
        Value::Array(list) => list.iter().enumerate().find_map(|(i, element)| {
            let here = format!("{path}[{i}]");
            let node = owned.iter().find_map(|(key, node)| {
                let hit = if let Some(k) = key.strip_prefix("k:") {
                    serde_json::from_str::<Map<String, Value>>(k)
                        .is_ok_and(|fields| element.is_object() && matches_key(element, &fields))
                } else if let Some(v) = key.strip_prefix("v:") {
                    serde_json::from_str::<Value>(v).is_ok_and(|v| v == *element)
                } else if let Some(n) = key.strip_prefix("i:") {
                    n.parse::<usize>() == Ok(i)
                } else {
                    false
                };
                hit.then_some(node)
            });
            match node {
                None => Some(here),
                Some(Value::Object(node)) => unowned_below(element, node, &here),
                Some(_) => None,
            }
        }),
        _ => None,
    }
}

/// Removes from `owned` (a fieldsV1 node for the object `desired`) the foreign list entries
/// below it, returning them as a fieldsV1 tree of their own.
fn split_object(desired: &Value, owned: &mut Map<String, Value>) -> Map<String, Value> {
    let mut taken = Map::new();
    let Value::Object(desired) = desired else {
        return taken;
    };
    for (key, child) in owned.iter_mut() {
        let (Some(field), Value::Object(child)) = (key.strip_prefix("f:"), child) else {
            continue;
        };
        let Some(desired_child) = desired.get(field) else {
            continue; // not a field we set: not ours to judge
        };
        let sub = match desired_child {
            Value::Array(list) => split_list(list, child),
            Value::Object(_) => split_object(desired_child, child),
            _ => Map::new(),
        };
        if !sub.is_empty() {
            taken.insert(key.clone(), Value::Object(sub));
        }
    }
    prune_emptied(owned, &taken);
    taken
}

/// The same for a list node: entries by key (`k:`), value (`v:`) or index (`i:`) that `list`
/// does not have move whole; entries it has are searched for foreign entries of their own lists.
fn split_list(list: &[Value], owned: &mut Map<String, Value>) -> Map<String, Value> {
    let mut taken = Map::new();
    let keys: Vec<String> = owned.keys().cloned().collect();
    for key in keys {
        let element = if let Some(k) = key.strip_prefix("k:") {
            match serde_json::from_str::<Map<String, Value>>(k) {
                Ok(fields) => list.iter().find(|e| matches_key(e, &fields)),
                Err(_) => continue,
            }
        } else if let Some(v) = key.strip_prefix("v:") {
            match serde_json::from_str::<Value>(v) {
                Ok(value) => list.iter().find(|e| **e == value),
                Err(_) => continue,
            }
        } else if let Some(i) = key.strip_prefix("i:") {
            match i.parse::<usize>() {
                Ok(i) => list.get(i),
                Err(_) => continue,
            }
        } else {
            continue;
        };
        match element {
            None => {
                if let Some(entry) = owned.remove(&key) {
                    taken.insert(key, entry);
                }
            }
            Some(element) => {
                if let Some(Value::Object(child)) = owned.get_mut(&key) {
                    let sub = split_object(element, child);
                    if !sub.is_empty() {
                        taken.insert(key.clone(), Value::Object(sub));
                    }
                }
            }
        }
    }
    prune_emptied(owned, &taken);
    taken
}

/// An element matches a list-map key when every key field it sets has the key's value; a key
/// field it leaves out is one the API server defaults (a port's `protocol`), so it matches too.
fn matches_key(element: &Value, key: &Map<String, Value>) -> bool {
    key.iter()
        .all(|(field, value)| element.get(field).is_none_or(|v| v == value))
}

/// A node all of whose children moved would read as "owns this field as a whole" (`{}` in
/// fieldsV1): it goes, so the manager keeps no claim on a list we now own entirely.
fn prune_emptied(owned: &mut Map<String, Value>, taken: &Map<String, Value>) {
    for key in taken.keys() {
        if owned
            .get(key)
            .is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty()))
        {
            owned.remove(key);
        }
    }
}

fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(more)) => merge(existing, more),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    fn service() -> Value {
        json!({"metadata": {"name": "main", "labels": {"a": "1"}},
               "spec": {"type": "ClusterIP", "selector": {"app": "main"},
                        "ports": [{"name": "registry", "port": 5000, "targetPort": "registry", "protocol": "TCP"}]}})
    }

    fn ours() -> ManagedFieldsEntry {
        entry(
            "wharf-operator",
            "Apply",
            json!({"f:metadata": {"f:labels": {"f:a": {}}},
                   "f:spec": {"f:type": {}, "f:selector": {}, "f:ports": {
                       "k:{\"port\":5000,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}, "f:protocol": {}}}}}),
        )
    }

    fn fields(e: &ManagedFieldsEntry) -> &Value {
        &e.fields_v1.as_ref().unwrap().0
    }

    #[test]
    fn a_hand_edited_port_moves_to_us_so_the_apply_removes_it() {
        // `kubectl patch --type=merge` replaced port 5000 by 5999: the 5000 entry left our set,
        // the 5999 entry belongs to kubectl-patch.
        let patched = entry(
            "kubectl-patch",
            "Update",
            json!({"f:spec": {"f:ports": {"k:{\"port\":5999,\"protocol\":\"TCP\"}": {
                ".": {}, "f:name": {}, "f:port": {}, "f:targetPort": {}, "f:protocol": {}}}}}),
        );
        let taken = take_over_foreign_entries(&service(), &[ours(), patched], "wharf-operator")
            .expect("the foreign port moves");
        assert_eq!(taken.from, vec!["kubectl-patch"]);
        assert_eq!(
            taken.managed_fields.len(),
            1,
            "kubectl-patch owned nothing else"
        );
        let ports = &fields(&taken.managed_fields[0])["f:spec"]["f:ports"];
        assert!(ports["k:{\"port\":5999,\"protocol\":\"TCP\"}"].is_object());
        assert!(ports["k:{\"port\":5000,\"protocol\":\"TCP\"}"].is_object());
    }

    #[test]
    fn fields_of_our_entries_and_lists_we_do_not_declare_stay_with_their_manager() {
        let other = entry(
            "kubectl-edit",
            "Update",
            json!({"f:metadata": {"f:annotations": {"f:note": {}}},
                   "f:spec": {"f:ports": {"k:{\"port\":5000,\"protocol\":\"TCP\"}": {"f:nodePort": {}}},
                              "f:externalIPs": {}, "f:ipFamilies": {"v:\"IPv4\"": {}}}}),
        );
        assert_eq!(
            take_over_foreign_entries(&service(), &[ours(), other], "wharf-operator"),
            None
        );
    }

    #[test]
    fn an_element_keyed_without_a_defaulted_field_still_matches() {
        let mut desired = service();
        desired["spec"]["ports"][0]
            .as_object_mut()
            .unwrap()
            .remove("protocol");
        let other = entry(
            "kubectl-edit",
            "Update",
            json!({"f:spec": {"f:ports": {"k:{\"port\":5000,\"protocol\":\"TCP\"}": {"f:targetPort": {}}}}}),
        );
        assert_eq!(
            take_over_foreign_entries(&desired, &[ours(), other], "wharf-operator"),
            None
        );
    }

    #[test]
    fn nested_lists_sidecars_extra_volumes_and_foreign_set_values_move() {
        let desired = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "registry", "args": ["registry"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]}}},
            "metadata": {"finalizers": ["wharf.dev/x"]}});
        let other = entry(
            "intruder",
            "Apply",
            json!({"f:metadata": {"f:finalizers": {"v:\"wharf.dev/x\"": {}, "v:\"other/y\"": {}}},
                   "f:spec": {"f:template": {"f:spec": {
                "f:containers": {
                    "k:{\"name\":\"registry\"}": {"f:volumeMounts": {
                        "k:{\"mountPath\":\"/data\"}": {"f:readOnly": {}},
                        "k:{\"mountPath\":\"/extra\"}": {".": {}, "f:name": {}, "f:mountPath": {}}},
                        "f:securityContext": {"f:privileged": {}}},
                    "k:{\"name\":\"sidecar\"}": {".": {}, "f:name": {}, "f:image": {}}},
                "f:volumes": {"k:{\"name\":\"extra\"}": {".": {}, "f:name": {}, "f:emptyDir": {}}},
                "f:tolerations": {}}}}}),
        );
        let taken = take_over_foreign_entries(&desired, &[other], "wharf-operator").unwrap();
        // We had no entry: one is made for us.
        let [intruder, ours] = taken.managed_fields.as_slice() else {
            panic!("{:?}", taken.managed_fields)
        };
        assert_eq!(ours.manager.as_deref(), Some("wharf-operator"));
        assert_eq!(ours.operation.as_deref(), Some("Apply"));
        let moved = fields(ours);
        let pod = &moved["f:spec"]["f:template"]["f:spec"];
        assert!(pod["f:containers"]["k:{\"name\":\"sidecar\"}"].is_object());
        assert!(
            pod["f:containers"]["k:{\"name\":\"registry\"}"]["f:volumeMounts"]
                ["k:{\"mountPath\":\"/extra\"}"]
                .is_object()
        );
        assert!(pod["f:volumes"]["k:{\"name\":\"extra\"}"].is_object());
        assert!(moved["f:metadata"]["f:finalizers"]["v:\"other/y\""].is_object());
        assert!(
            moved["f:metadata"]["f:finalizers"]
                .get("v:\"wharf.dev/x\"")
                .is_none()
        );
        // What the intruder keeps: fields of our entries we do not set, lists we do not declare.
        let kept = fields(intruder);
        let kept_pod = &kept["f:spec"]["f:template"]["f:spec"];
        assert!(kept_pod["f:tolerations"].is_object());
        let registry = &kept_pod["f:containers"]["k:{\"name\":\"registry\"}"];
        assert!(registry["f:securityContext"]["f:privileged"].is_object());
        assert!(registry["f:volumeMounts"]["k:{\"mountPath\":\"/data\"}"].is_object());
        assert!(
            registry["f:volumeMounts"]
                .get("k:{\"mountPath\":\"/extra\"}")
                .is_none()
        );
        assert!(kept_pod.get("f:volumes").is_none(), "an emptied node goes");
    }

    #[test]
    fn subresource_entries_and_our_own_are_left_alone() {
        let status = ManagedFieldsEntry {
            subresource: Some("status".into()),
            ..entry(
                "kube-controller-manager",
                "Update",
                json!({"f:spec": {"f:ports": {"k:{\"port\":1,\"protocol\":\"TCP\"}": {}}}}),
            )
        };
        let mut mine = ours();
        mine.fields_v1 = Some(FieldsV1(
            json!({"f:spec": {"f:ports": {"k:{\"port\":7,\"protocol\":\"TCP\"}": {}}}}),
        ));
        assert_eq!(
            take_over_foreign_entries(&service(), &[mine, status], "wharf-operator"),
            None
        );
    }

    #[test]
    fn fields_we_no_longer_own_are_found() {
        let desired = service();
        assert_eq!(first_unowned(&desired, &[ours()], "wharf-operator"), None);
        // A merge patch of the atomic selector took the whole map from us.
        let mut lost = ours();
        lost.fields_v1.as_mut().unwrap().0["f:spec"]
            .as_object_mut()
            .unwrap()
            .remove("f:selector");
        assert_eq!(
            first_unowned(&desired, &[lost], "wharf-operator").as_deref(),
            Some(".spec.selector")
        );
        // Our port entry moved to another key.
        let mut moved = ours();
        let ports = moved.fields_v1.as_mut().unwrap().0["f:spec"]["f:ports"]
            .as_object_mut()
            .unwrap();
        let entry = ports
            .remove("k:{\"port\":5000,\"protocol\":\"TCP\"}")
            .unwrap();
        ports.insert("k:{\"port\":5999,\"protocol\":\"TCP\"}".into(), entry);
        assert_eq!(
            first_unowned(&desired, &[moved], "wharf-operator").as_deref(),
            Some(".spec.ports[0]")
        );
        // A field of our entry someone else now owns.
        let mut field = ours();
        field.fields_v1.as_mut().unwrap().0["f:spec"]["f:ports"]
            ["k:{\"port\":5000,\"protocol\":\"TCP\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:targetPort");
        assert_eq!(
            first_unowned(&desired, &[field], "wharf-operator").as_deref(),
            Some(".spec.ports[0].targetPort")
        );
        // Without any entry of ours, everything is unowned; identity fields never count.
        assert_eq!(
            first_unowned(&desired, &[], "wharf-operator").as_deref(),
            Some("")
        );
    }

    #[test]
    fn several_managers_merge_into_our_one_entry() {
        let a = entry(
            "kubectl-patch",
            "Update",
            json!({"f:spec": {"f:ports": {"k:{\"port\":1,\"protocol\":\"TCP\"}": {".": {}}}}}),
        );
        let b = entry(
            "other-apply",
            "Apply",
            json!({"f:spec": {"f:ports": {"k:{\"port\":2,\"protocol\":\"UDP\"}": {".": {}}}}, "f:metadata": {"f:labels": {"f:b": {}}}}),
        );
        let taken =
            take_over_foreign_entries(&service(), &[ours(), a, b], "wharf-operator").unwrap();
        assert_eq!(taken.from, vec!["kubectl-patch", "other-apply"]);
        assert_eq!(taken.managed_fields.len(), 2, "other-apply keeps its label");
        let ports = fields(&taken.managed_fields[0])["f:spec"]["f:ports"]
            .as_object()
            .unwrap();
        assert_eq!(ports.len(), 3);
    }
}
