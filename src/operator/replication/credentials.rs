//! The robots a policy's runs use on wharf Registries (see `operator::robots`): pull on the
//! source's selected repositories; pull and push (and delete, with `replicateDeletion`) on
//! the repositories those land in at the destination. Both are as narrow as the rules allow.

use super::names::{PolicyNames, Side, labels};
use crate::crd::replication_policy::ReplicationPolicy;
use crate::operator::robots::RobotGrant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

/// Every source repository glob of the policy's rules, in order, once each.
pub fn source_globs(policy: &ReplicationPolicy) -> Vec<String> {
    let mut globs: Vec<String> = Vec::new();
    for glob in policy.spec.rules.iter().flat_map(|r| &r.repositories) {
        if !globs.contains(glob) {
            globs.push(glob.clone());
        }
    }
    globs
}

/// Globs that cover every destination name a source glob can become (a superset where a
/// wildcard might also match names that lose `strip_prefix`).
pub fn destination_globs(policy: &ReplicationPolicy) -> Vec<String> {
    let destination = &policy.spec.destination;
    let strip = destination.strip_prefix.clone().unwrap_or_default();
    let prefix = destination.repository_prefix.clone().unwrap_or_default();
    let mut globs: Vec<String> = Vec::new();
    for glob in source_globs(policy) {
        let mapped = match glob.strip_prefix(strip.as_str()) {
            Some(rest) if !strip.is_empty() => {
                format!("{prefix}{}", rest.trim_start_matches('/'))
            }
            _ if !strip.is_empty() && glob.contains(['*', '?']) => format!("{prefix}**"),
            _ => format!("{prefix}{glob}"),
        };
        if !globs.contains(&mapped) {
            globs.push(mapped);
        }
    }
    globs
}

pub fn grant(policy: &ReplicationPolicy, owner: &OwnerReference, side: Side) -> RobotGrant {
    let name = policy.name_any();
    let namespace = policy.namespace().unwrap_or_default();
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    let deletion = policy
        .spec
        .options
        .as_ref()
        .and_then(|o| o.replicate_deletion)
        .unwrap_or(false);
    let (repositories, actions) = match side {
        Side::Source => (source_globs(policy), vec!["pull"]),
        Side::Destination if deletion => {
            (destination_globs(policy), vec!["pull", "push", "delete"])
        }
        Side::Destination => (destination_globs(policy), vec!["pull", "push"]),
    };
    RobotGrant {
        robot: names.robot(side),
        description: format!(
            "{} of the replication runs of ReplicationPolicy {namespace}/{name}",
            side.word()
        ),
        repositories,
        actions,
        secret: ObjectMeta {
            name: Some(names.credential(side)),
            namespace: Some(namespace.clone()),
            labels: Some(labels(&name)),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(destination: serde_json::Value, options: serde_json::Value) -> ReplicationPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "ReplicationPolicy",
            "metadata": {"name": "mirror", "namespace": "r", "uid": "u"},
            "spec": {
                "source": {"registryRef": {"name": "ci"}},
                "destination": destination,
                "rules": [
                    {"repositories": ["library/alpine", "library/*"]},
                    {"repositories": ["team/**", "library/alpine"]},
                ],
                "options": options,
            },
        }))
        .unwrap()
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            name: "mirror".into(),
            uid: "u".into(),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn the_source_robot_pulls_exactly_the_rules_repositories() {
        let p = policy(
            serde_json::json!({"registryRef": {"name": "prod"}}),
            serde_json::json!({}),
        );
        let g = grant(&p, &owner(), Side::Source);
        assert_eq!(g.repositories, ["library/alpine", "library/*", "team/**"]);
        assert_eq!(g.actions, ["pull"]);
        assert_eq!(g.secret_name(), "mirror-repl-source");
    }

    #[test]
    fn destination_globs_follow_the_renaming() {
        let p = policy(
            serde_json::json!({"registryRef": {"name": "prod"}, "stripPrefix": "library/", "repositoryPrefix": "mirror/"}),
            serde_json::json!({"replicateDeletion": true}),
        );
        let g = grant(&p, &owner(), Side::Destination);
        // `team/**` keeps its name under the prefix, but could also hold names that start
        // with `library/`, which lose it: the robot gets all of `mirror/`.
        assert_eq!(g.repositories, ["mirror/alpine", "mirror/*", "mirror/**"]);
        assert_eq!(g.actions, ["pull", "push", "delete"]);

        let plain = policy(
            serde_json::json!({"registryRef": {"name": "prod"}}),
            serde_json::json!({}),
        );
        let g = grant(&plain, &owner(), Side::Destination);
        assert_eq!(g.repositories, ["library/alpine", "library/*", "team/**"]);
        assert_eq!(g.actions, ["pull", "push"]);
    }
}
