//! Robot accounts the operator mints on a wharf Registry for the Jobs it runs (retention,
//! replication): scoped to repositories and actions, created through the Registry's admin
//! API and kept in a `kubernetes.io/basic-auth` Secret the policy owns. The Secret's
//! annotation records what the robot was made for, so a pass with nothing changed never calls
//! the registry.

use crate::admin_client::{AdminClient, AdminClientError, RobotPermissions};
use crate::crd::registry::Registry;
use crate::operator::pullcredential::source::{SourceApiError, SourceProblem, admin_client};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;

/// What the robot was minted for: the Registry's uid and its permissions.
const GRANT_ANNOTATION: &str = "wharf.dev/robot-grant";
/// Robot secrets of policies do not expire: the policy's deletion revokes them.
const ROBOT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// One robot a policy needs on one Registry, and the Secret that holds its credential.
#[derive(Debug, Clone, PartialEq)]
pub struct RobotGrant {
    pub robot: String,
    pub description: String,
    pub repositories: Vec<String>,
    pub actions: Vec<&'static str>,
    /// Name, namespace, labels and owner of the Secret.
    pub secret: ObjectMeta,
}

impl RobotGrant {
    /// The record a credential Secret must carry to be current.
    pub fn record(&self, registry: &Registry) -> String {
        format!(
            "{}:{}:{}",
            registry.uid().unwrap_or_default(),
            self.repositories.join(","),
            self.actions.join(",")
        )
    }

    pub fn secret_name(&self) -> String {
        self.secret.name.clone().unwrap_or_default()
    }
}

/// What to do about the credential this pass.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Keep,
    /// Same Registry, other repositories or actions: update the robot's permissions.
    Update,
    /// No credential yet, or the Registry was recreated: mint one.
    Mint,
}

pub fn plan(live: Option<&Secret>, grant: &RobotGrant, registry: &Registry) -> Plan {
    let Some(live) = live else {
        return Plan::Mint;
    };
    let recorded = live.annotations().get(GRANT_ANNOTATION);
    let complete = ["username", "password"]
        .iter()
        .all(|k| live.data.as_ref().is_some_and(|d| d.contains_key(*k)));
    let uid = registry.uid().unwrap_or_default();
    match recorded {
        Some(g) if complete && *g == grant.record(registry) => Plan::Keep,
        Some(g) if complete && g.starts_with(&format!("{uid}:")) => Plan::Update,
        _ => Plan::Mint,
    }
}

pub fn secret(grant: &RobotGrant, registry: &Registry, username: &[u8], password: &[u8]) -> Secret {
    let mut metadata = grant.secret.clone();
    metadata.annotations = Some(BTreeMap::from([(
        GRANT_ANNOTATION.to_owned(),
        grant.record(registry),
    )]));
    Secret {
        metadata,
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(BTreeMap::from([
            ("username".to_owned(), ByteString(username.to_vec())),
            ("password".to_owned(), ByteString(password.to_vec())),
        ])),
        ..Secret::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RobotError {
    #[error(transparent)]
    Api(#[from] SourceApiError),
    #[error("{0}")]
    Problem(#[from] SourceProblem),
    #[error("the Registry's admin API refused: {0}")]
    Admin(#[from] AdminClientError),
}

async fn robots(client: &Client, registry: &Registry) -> Result<AdminClient, RobotError> {
    Ok(admin_client(client, registry).await??)
}

/// Carries out `plan`; returns the Secret to write (none for `Keep`).
pub async fn carry_out(
    plan: Plan,
    client: &Client,
    grant: &RobotGrant,
    registry: &Registry,
    live: Option<&Secret>,
) -> Result<Option<Secret>, RobotError> {
    let permissions = RobotPermissions {
        repositories: &grant.repositories,
        actions: &grant.actions,
    };
    match plan {
        Plan::Keep => Ok(None),
        Plan::Update => {
            robots(client, registry)
                .await?
                .update(&grant.robot, &grant.description, &permissions)
                .await?;
            let data = live.and_then(|l| l.data.clone()).unwrap_or_default();
            let get = |k: &str| data.get(k).map(|v| v.0.clone()).unwrap_or_default();
            Ok(Some(secret(
                grant,
                registry,
                &get("username"),
                &get("password"),
            )))
        }
        Plan::Mint => {
            let admin = robots(client, registry).await?;
            let issued = match admin
                .create(&grant.robot, &grant.description, &permissions, None)
                .await
            {
                // The robot outlived its Secret: give it a new secret, valid at once.
                Err(e) if e.status() == Some(409) => {
                    admin
                        .update(&grant.robot, &grant.description, &permissions)
                        .await?;
                    admin
                        .rotate(&grant.robot, ROBOT_LIFETIME, std::time::Duration::ZERO)
                        .await?
                }
                other => other?,
            };
            Ok(Some(secret(
                grant,
                registry,
                issued.username.as_bytes(),
                issued.secret.as_bytes(),
            )))
        }
    }
}

/// Removes a robot; a Registry that is gone took its robots with it.
pub async fn revoke(client: &Client, robot: &str, registry: &Registry) -> Result<(), RobotError> {
    robots(client, registry).await?.delete(robot).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(uid: &str) -> Registry {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "main", "namespace": "r", "uid": uid},
            "spec": {"storage": {"emptyDir": {}}},
        }))
        .unwrap()
    }

    fn grant(actions: Vec<&'static str>) -> RobotGrant {
        RobotGrant {
            robot: "rp-x-123456".into(),
            description: "runs".into(),
            repositories: vec!["team/**".into()],
            actions,
            secret: ObjectMeta {
                name: Some("x-credential".into()),
                namespace: Some("r".into()),
                ..ObjectMeta::default()
            },
        }
    }

    #[test]
    fn a_current_secret_is_kept_a_changed_grant_updated_a_new_registry_minted() {
        let main = registry("u1");
        let pull = grant(vec!["pull"]);
        let live = secret(&pull, &main, b"robot$rp-x", b"s3cret");
        assert_eq!(plan(Some(&live), &pull, &main), Plan::Keep);
        assert_eq!(
            plan(Some(&live), &grant(vec!["pull", "push"]), &main),
            Plan::Update
        );
        assert_eq!(plan(Some(&live), &pull, &registry("u2")), Plan::Mint);
        assert_eq!(plan(None, &pull, &main), Plan::Mint);
        let mut emptied = live.clone();
        emptied.data = None;
        assert_eq!(plan(Some(&emptied), &pull, &main), Plan::Mint);
        assert_eq!(live.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    }
}
