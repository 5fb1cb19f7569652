//! The scoped credential of a policy's runs against a wharf Registry: a robot account with
//! pull and delete on the policy's repositories, minted through the Registry's admin API and
//! kept in a Secret the policy owns. The Secret's annotations record what the robot was made
//! for, so a pass with nothing changed never calls the registry.

use super::names::{PolicyNames, RUN_COMPONENT, labels};
use crate::admin_client::{AdminClient, AdminClientError, RobotPermissions};
use crate::crd::registry::Registry;
use crate::crd::retention_policy::RetentionPolicy;
use crate::operator::pullcredential::source::{SourceApiError, SourceProblem, admin_client};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;

/// What the robot was minted for: the Registry's uid and its permissions.
const GRANT_ANNOTATION: &str = "wharf.dev/robot-grant";
const ACTIONS: [&str; 2] = ["pull", "delete"];

pub fn repositories(policy: &RetentionPolicy) -> Vec<String> {
    policy
        .spec
        .repositories
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| vec!["**".into()])
}

/// The grant a credential Secret must record to be current.
pub fn grant(policy: &RetentionPolicy, registry: &Registry) -> String {
    format!(
        "{}:{}:{}",
        registry.uid().unwrap_or_default(),
        repositories(policy).join(","),
        ACTIONS.join(",")
    )
}

/// What to do about the credential this pass.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Keep,
    /// Same Registry, other repositories: update the robot's permissions.
    Update,
    /// No credential yet, or the Registry was recreated: mint one.
    Mint,
}

pub fn plan(live: Option<&Secret>, policy: &RetentionPolicy, registry: &Registry) -> Plan {
    let Some(live) = live else {
        return Plan::Mint;
    };
    let recorded = live.annotations().get(GRANT_ANNOTATION);
    let complete = ["username", "password"]
        .iter()
        .all(|k| live.data.as_ref().is_some_and(|d| d.contains_key(*k)));
    let uid = registry.uid().unwrap_or_default();
    match recorded {
        Some(g) if complete && *g == grant(policy, registry) => Plan::Keep,
        Some(g) if complete && g.starts_with(&format!("{uid}:")) => Plan::Update,
        _ => Plan::Mint,
    }
}

pub fn secret(
    policy: &RetentionPolicy,
    owner: &OwnerReference,
    registry: &Registry,
    username: &[u8],
    password: &[u8],
) -> Secret {
    let name = policy.name_any();
    let namespace = policy.namespace().unwrap_or_default();
    let names = PolicyNames {
        policy: &name,
        namespace: &namespace,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(names.credential()),
            namespace: Some(namespace.clone()),
            labels: Some(labels(&name, RUN_COMPONENT)),
            annotations: Some(BTreeMap::from([(
                GRANT_ANNOTATION.to_owned(),
                grant(policy, registry),
            )])),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(BTreeMap::from([
            ("username".to_owned(), ByteString(username.to_vec())),
            ("password".to_owned(), ByteString(password.to_vec())),
        ])),
        ..Secret::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Api(#[from] SourceApiError),
    #[error("{0}")]
    Problem(#[from] SourceProblem),
    #[error("the Registry's admin API refused: {0}")]
    Admin(#[from] AdminClientError),
}

/// (namespace, name, robot name) of a policy.
fn robot_of(policy: &RetentionPolicy) -> (String, String, String) {
    let name = policy.name_any();
    let namespace = policy.namespace().unwrap_or_default();
    let robot = PolicyNames {
        policy: &name,
        namespace: &namespace,
    }
    .robot();
    (namespace, name, robot)
}

async fn robots(client: &Client, registry: &Registry) -> Result<AdminClient, CredentialError> {
    Ok(admin_client(client, registry).await??)
}

/// Carries out `plan`; returns the Secret to write (none for `Keep`).
pub async fn carry_out(
    plan: Plan,
    client: &Client,
    policy: &RetentionPolicy,
    owner: &OwnerReference,
    registry: &Registry,
    live: Option<&Secret>,
) -> Result<Option<Secret>, CredentialError> {
    let (namespace, name, robot) = robot_of(policy);
    let repos = repositories(policy);
    let permissions = RobotPermissions {
        repositories: &repos,
        actions: &ACTIONS,
    };
    let description = format!("retention runs of RetentionPolicy {namespace}/{name}");
    match plan {
        Plan::Keep => Ok(None),
        Plan::Update => {
            robots(client, registry)
                .await?
                .update(&robot, &description, &permissions)
                .await?;
            let live = live.cloned().unwrap_or_default();
            let data = live.data.unwrap_or_default();
            let get = |k: &str| data.get(k).map(|v| v.0.clone()).unwrap_or_default();
            Ok(Some(secret(
                policy,
                owner,
                registry,
                &get("username"),
                &get("password"),
            )))
        }
        Plan::Mint => {
            let admin = robots(client, registry).await?;
            let issued = match admin.create(&robot, &description, &permissions, None).await {
                // The robot outlived its Secret: give it a new secret, valid at once.
                Err(e) if e.status() == Some(409) => {
                    admin.update(&robot, &description, &permissions).await?;
                    admin
                        .rotate(
                            &robot,
                            std::time::Duration::from_secs(100 * 365 * 86_400),
                            std::time::Duration::ZERO,
                        )
                        .await?
                }
                other => other?,
            };
            Ok(Some(secret(
                policy,
                owner,
                registry,
                issued.username.as_bytes(),
                issued.secret.as_bytes(),
            )))
        }
    }
}

/// Removes the policy's robot; a Registry that is gone took its robots with it.
pub async fn revoke(
    client: &Client,
    policy: &RetentionPolicy,
    registry: &Registry,
) -> Result<(), CredentialError> {
    let (_, _, robot) = robot_of(policy);
    robots(client, registry).await?.delete(&robot).await?;
    Ok(())
}
