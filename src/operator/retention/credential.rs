//! The scoped credential of a policy's runs against a wharf Registry: a robot account with
//! pull and delete on the policy's repositories (see `operator::robots`).

use super::names::{PolicyNames, RUN_COMPONENT, labels};
use crate::crd::retention_policy::RetentionPolicy;
use crate::operator::robots::RobotGrant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

pub use crate::operator::robots::{RobotError as CredentialError, carry_out, plan, revoke};

const ACTIONS: [&str; 2] = ["pull", "delete"];

pub fn repositories(policy: &RetentionPolicy) -> Vec<String> {
    policy
        .spec
        .repositories
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| vec!["**".into()])
}

/// The robot the policy's runs use, and its Secret.
pub fn grant(policy: &RetentionPolicy, owner: &OwnerReference) -> RobotGrant {
    let name = policy.name_any();
    let namespace = policy.namespace().unwrap_or_default();
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    RobotGrant {
        robot: names.robot(),
        description: format!("retention runs of RetentionPolicy {namespace}/{name}"),
        repositories: repositories(policy),
        actions: ACTIONS.to_vec(),
        secret: ObjectMeta {
            name: Some(names.credential()),
            namespace: Some(namespace.clone()),
            labels: Some(labels(&name, RUN_COMPONENT)),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
    }
}
