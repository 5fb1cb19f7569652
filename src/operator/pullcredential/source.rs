//! Where the credential comes from. A `secretRef` is read and checked; a `registryRef` gets a
//! robot account minted through the registry's admin API, renewed every `refreshInterval` (the
//! robot lives twice that long, and a replaced secret keeps working for half of it, so pods
//! pulling while copies are being updated never see a dead credential).

use super::build::{DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE, content_hash, docker_config};
use super::names::{PULL_CREDENTIAL_LABEL, robot_name, robot_state_secret};
use crate::admin_client::RobotPermissions;
use crate::admin_client::{AdminClient, AdminClientError, IssuedRobot};
use crate::crd::image_pull_credential::{ImagePullCredential, NamespacedName, RegistrySource};
use crate::crd::registry::Registry;
use crate::operator::registry::build::service_port;
use crate::operator::registry::names::ChildNames;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// The credential to distribute.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub docker_config: Vec<u8>,
    pub hash: String,
    /// Unix seconds (minted credentials).
    pub expires_at: Option<i64>,
    /// Unix seconds: when to renew it (minted credentials).
    pub renew_at: Option<i64>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("hash", &self.hash)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why there is no credential to distribute; shown in status with `reason()`.
#[derive(Debug, thiserror::Error)]
pub enum SourceProblem {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unreachable(String),
}

impl SourceProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            SourceProblem::NotFound(_) => "SourceNotFound",
            SourceProblem::Invalid(_) => "SourceInvalid",
            SourceProblem::Unreachable(_) => "RegistryUnreachable",
        }
    }
}

/// A failure talking to the API server (retried with backoff, unlike a `SourceProblem`).
#[derive(Debug, thiserror::Error)]
#[error("cannot {what}: {source}")]
pub struct SourceApiError {
    pub what: String,
    pub source: kube::Error,
}

pub type SourceResult = Result<Result<Credential, SourceProblem>, SourceApiError>;

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|s| !s.is_empty())
}

pub fn parse_refresh(ipc: &ImagePullCredential) -> Duration {
    ipc.spec
        .refresh_interval
        .as_deref()
        .and_then(|s| crate::duration::parse(s).ok())
        .filter(|d| d.as_secs() >= 30)
        .unwrap_or(DEFAULT_REFRESH)
}

/// A copied Secret: it must be a dockerconfigjson whose JSON has `auths`.
pub fn check_source_secret(
    secret: &Secret,
    reference: &NamespacedName,
) -> Result<Credential, SourceProblem> {
    let what = format!("Secret {}/{}", reference.namespace, reference.name);
    if secret.type_.as_deref() != Some(DOCKER_CONFIG_TYPE) {
        return Err(SourceProblem::Invalid(format!(
            "{what} has type {:?}, not {DOCKER_CONFIG_TYPE}",
            secret.type_.as_deref().unwrap_or("Opaque")
        )));
    }
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DOCKER_CONFIG_KEY))
        .map(|b| b.0.clone())
        .ok_or_else(|| SourceProblem::Invalid(format!("{what} has no {DOCKER_CONFIG_KEY} key")))?;
    let parsed: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| SourceProblem::Invalid(format!("{what}: {DOCKER_CONFIG_KEY} is not JSON")))?;
    if !parsed["auths"].is_object() {
        return Err(SourceProblem::Invalid(format!(
            "{what}: {DOCKER_CONFIG_KEY} has no \"auths\" object"
        )));
    }
    Ok(Credential {
        hash: content_hash(&bytes),
        docker_config: bytes,
        expires_at: None,
        renew_at: None,
    })
}

pub async fn from_secret(client: &Client, reference: &NamespacedName) -> SourceResult {
    let api: Api<Secret> = Api::namespaced(client.clone(), &reference.namespace);
    match api.get_opt(&reference.name).await {
        Ok(Some(secret)) => Ok(check_source_secret(&secret, reference)),
        Ok(None) => Ok(Err(SourceProblem::NotFound(format!(
            "Secret {}/{} does not exist",
            reference.namespace, reference.name
        )))),
        Err(source) => Err(SourceApiError {
            what: format!("read Secret {}/{}", reference.namespace, reference.name),
            source,
        }),
    }
}

/// What the state Secret remembers about the minted robot.
#[derive(Clone, PartialEq, Eq)]
pub struct RobotState {
    pub username: String,
    pub password: String,
    pub registry_uid: String,
    pub repositories: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl RobotState {
    pub fn from_secret(secret: &Secret) -> Option<RobotState> {
        Some(RobotState {
            username: secret_value(secret, "username")?,
            password: secret_value(secret, "password")?,
            registry_uid: secret_value(secret, "registry-uid")?,
            repositories: secret_value(secret, "repositories")?,
            issued_at: secret_value(secret, "issued-at")?.parse().ok()?,
            expires_at: secret_value(secret, "expires-at")?.parse().ok()?,
        })
    }

    pub fn to_secret(&self, ipc: &ImagePullCredential, namespace: &str) -> Secret {
        let data = [
            ("username", self.username.clone()),
            ("password", self.password.clone()),
            ("registry-uid", self.registry_uid.clone()),
            ("repositories", self.repositories.clone()),
            ("issued-at", self.issued_at.to_string()),
            ("expires-at", self.expires_at.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(robot_state_secret(ipc)),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    PULL_CREDENTIAL_LABEL.to_owned(),
                    ipc.name_any(),
                )])),
                owner_references: Some(vec![super::build::owner_reference(ipc, true)]),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(data),
            ..Secret::default()
        }
    }
}

/// What to do about the robot this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RobotPlan {
    Keep,
    /// No usable state (first pass, lost state, or the Registry was recreated).
    Create,
    /// Its repositories changed: update permissions, keep the secret.
    UpdatePermissions,
    Rotate,
}

pub fn plan(
    state: Option<&RobotState>,
    registry_uid: &str,
    repositories: &str,
    now: i64,
    refresh: Duration,
) -> RobotPlan {
    match state {
        None => RobotPlan::Create,
        Some(s) if s.registry_uid != registry_uid || s.expires_at <= now => RobotPlan::Create,
        Some(s) if s.repositories != repositories => RobotPlan::UpdatePermissions,
        Some(s) if now >= s.issued_at + refresh.as_secs() as i64 => RobotPlan::Rotate,
        Some(_) => RobotPlan::Keep,
    }
}

/// Every `host[:port]` pods may use for this registry.
pub fn registry_hosts(
    registry: &Registry,
    service: Option<&Service>,
    source: &RegistrySource,
) -> Vec<String> {
    let name = registry.name_any();
    let namespace = registry.namespace().unwrap_or_default();
    let port = service_port(registry);
    let mut hosts = vec![
        format!("{name}.{namespace}.svc:{port}"),
        format!("{name}.{namespace}.svc.cluster.local:{port}"),
        format!("{name}.{namespace}:{port}"),
    ];
    if let Some(ip) = service
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| *ip != "None" && !ip.is_empty())
    {
        hosts.push(format!("{ip}:{port}"));
    }
    if let Some(ingress) = &registry.spec.ingress {
        hosts.push(ingress.host.clone());
    }
    if let Some(external) = registry
        .status
        .as_ref()
        .and_then(|s| s.external_endpoint.as_deref())
    {
        let host = external
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        hosts.push(host.trim_end_matches('/').to_owned());
    }
    hosts.extend(source.hosts.clone().unwrap_or_default());
    hosts.sort();
    hosts.dedup();
    hosts
}

pub fn repositories(source: &RegistrySource) -> Vec<String> {
    source
        .repositories
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| vec!["**".into()])
}

/// The admin API client for a Registry: its admin Secret, and its CA when it serves TLS.
pub async fn admin_client(
    client: &Client,
    registry: &Registry,
) -> Result<Result<AdminClient, SourceProblem>, SourceApiError> {
    let namespace = registry.namespace().unwrap_or_default();
    let names = ChildNames::new(&registry.name_any());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let read = |what: String| move |source| SourceApiError { what, source };
    let Some(admin) = secrets
        .get_opt(&names.admin_secret())
        .await
        .map_err(read(format!(
            "read Secret {namespace}/{}",
            names.admin_secret()
        )))?
    else {
        return Ok(Err(SourceProblem::NotFound(format!(
            "the Registry's admin Secret {namespace}/{} does not exist yet",
            names.admin_secret()
        ))));
    };
    let (Some(user), Some(password)) = (
        secret_value(&admin, "username"),
        secret_value(&admin, "password"),
    ) else {
        return Ok(Err(SourceProblem::Invalid(
            "the Registry's admin Secret is incomplete".into(),
        )));
    };
    let tls = registry.spec.tls.as_ref();
    let ca = match tls {
        None => None,
        Some(t) if t.self_signed.is_some() => {
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            maps.get_opt(&names.ca())
                .await
                .map_err(read(format!("read ConfigMap {namespace}/{}", names.ca())))?
                .and_then(|cm| cm.data.and_then(|d| d.get("ca.crt").cloned()))
        }
        Some(t) => match &t.secret_ref {
            Some(r) => secrets
                .get_opt(&r.name)
                .await
                .map_err(read(format!("read Secret {namespace}/{}", r.name)))?
                .and_then(|s| secret_value(&s, "ca.crt")),
            None => None,
        },
    };
    if tls.is_some() && ca.is_none() {
        return Ok(Err(SourceProblem::Unreachable(
            "the Registry serves TLS but no CA to trust was found (self-signed CA ConfigMap, or ca.crt in tls.secretRef)".into(),
        )));
    }
    let host = format!("{}.{namespace}.svc", registry.name_any());
    Ok(AdminClient::new(
        &host,
        service_port(registry) as u16,
        ca.as_deref(),
        &user,
        &password,
    )
    .map_err(|e| SourceProblem::Unreachable(e.to_string())))
}

fn unreachable(e: AdminClientError) -> SourceProblem {
    SourceProblem::Unreachable(e.to_string())
}

/// Carries out `plan`; returns the new state (unchanged for `Keep`).
#[allow(clippy::too_many_arguments)]
pub async fn mint(
    client: &Client,
    ipc: &ImagePullCredential,
    registry: &Registry,
    source: &RegistrySource,
    state: Option<RobotState>,
    plan: RobotPlan,
    now: i64,
    refresh: Duration,
) -> Result<Result<RobotState, SourceProblem>, SourceApiError> {
    if plan == RobotPlan::Keep
        && let Some(state) = state
    {
        return Ok(Ok(state));
    }
    let robots = match admin_client(client, registry).await? {
        Ok(c) => c,
        Err(problem) => return Ok(Err(problem)),
    };
    let name = robot_name(ipc);
    let repos = repositories(source);
    let description = format!("ImagePullCredential {}", ipc.name_any());
    let lifetime = refresh * 2;
    let fresh = |issued: IssuedRobot| RobotState {
        username: issued.username,
        password: issued.secret,
        registry_uid: registry.uid().unwrap_or_default(),
        repositories: repos.join(","),
        issued_at: now,
        expires_at: issued.expires_at.unwrap_or(now + lifetime.as_secs() as i64),
    };
    let result = match (plan, state) {
        (RobotPlan::UpdatePermissions, Some(mut s)) => {
            match robots.update(&name, &description, &pull_only(&repos)).await {
                Ok(()) => {
                    s.repositories = repos.join(",");
                    Ok(s)
                }
                Err(e) if e.status() == Some(404) => {
                    create_or_replace(&robots, &name, &description, &repos, lifetime)
                        .await
                        .map(fresh)
                }
                Err(e) => Err(e),
            }
        }
        (RobotPlan::Rotate, Some(_)) => match robots.rotate(&name, lifetime, refresh / 2).await {
            Ok(issued) => Ok(fresh(issued)),
            Err(e) if e.status() == Some(404) => {
                create_or_replace(&robots, &name, &description, &repos, lifetime)
                    .await
                    .map(fresh)
            }
            Err(e) => Err(e),
        },
        _ => create_or_replace(&robots, &name, &description, &repos, lifetime)
            .await
            .map(fresh),
    };
    Ok(result.map_err(unreachable))
}

fn pull_only(repositories: &[String]) -> RobotPermissions<'_> {
    RobotPermissions {
        repositories,
        actions: &["pull"],
    }
}

/// Creates the robot; if one exists already (its secret was lost), replaces its secret at once
/// and sets its permissions.
async fn create_or_replace(
    robots: &AdminClient,
    name: &str,
    description: &str,
    repos: &[String],
    lifetime: Duration,
) -> Result<IssuedRobot, AdminClientError> {
    match robots
        .create(name, description, &pull_only(repos), Some(lifetime))
        .await
    {
        Err(e) if e.status() == Some(409) => {
            robots.update(name, description, &pull_only(repos)).await?;
            robots.rotate(name, lifetime, Duration::ZERO).await
        }
        other => other,
    }
}

pub fn credential_from_robot(
    state: &RobotState,
    hosts: &[String],
    refresh: Duration,
) -> Credential {
    let docker_config = docker_config(hosts, &state.username, &state.password);
    Credential {
        hash: content_hash(&docker_config),
        docker_config,
        expires_at: Some(state.expires_at),
        renew_at: Some(state.issued_at + refresh.as_secs() as i64),
    }
}

/// Revokes the robot of a deleted credential; a Registry that is gone takes its robots with it.
pub async fn revoke(
    client: &Client,
    ipc: &ImagePullCredential,
    registry: &Registry,
) -> Result<(), String> {
    match admin_client(client, registry).await {
        Ok(Ok(robots)) => robots
            .delete(&robot_name(ipc))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Ok(Err(problem)) => Err(problem.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(issued_at: i64) -> RobotState {
        RobotState {
            username: "robot$ipc-x".into(),
            password: "p".into(),
            registry_uid: "u1".into(),
            repositories: "team-a/**".into(),
            issued_at,
            expires_at: issued_at + 7200,
        }
    }

    #[test]
    fn robot_plans() {
        let hour = Duration::from_secs(3600);
        let s = state(1000);
        assert_eq!(plan(None, "u1", "team-a/**", 1000, hour), RobotPlan::Create);
        assert_eq!(
            plan(Some(&s), "u2", "team-a/**", 1000, hour),
            RobotPlan::Create,
            "registry recreated"
        );
        assert_eq!(
            plan(Some(&s), "u1", "team-a/**", 1500, hour),
            RobotPlan::Keep
        );
        assert_eq!(
            plan(Some(&s), "u1", "team-b/**", 1500, hour),
            RobotPlan::UpdatePermissions
        );
        assert_eq!(
            plan(Some(&s), "u1", "team-a/**", 4600, hour),
            RobotPlan::Rotate
        );
        assert_eq!(
            plan(Some(&s), "u1", "team-a/**", 9000, hour),
            RobotPlan::Create,
            "expired"
        );
    }

    #[test]
    fn state_round_trips_through_its_secret() {
        let ipc: ImagePullCredential = serde_json::from_value(json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "ImagePullCredential",
            "metadata": {"name": "corp", "uid": "x"},
            "spec": {"source": {"registryRef": {"namespace": "r", "name": "m"}}, "namespaces": ["a"]},
        })).unwrap();
        let s = state(5);
        assert!(RobotState::from_secret(&s.to_secret(&ipc, "wharf-system")) == Some(s));
    }

    #[test]
    fn source_secrets_are_checked() {
        let r = NamespacedName {
            namespace: "ops".into(),
            name: "pull".into(),
        };
        let secret = |type_: &str, data: &str| -> Secret {
            serde_json::from_value(json!({"metadata": {"name": "pull"}, "type": type_,
                "data": {".dockerconfigjson": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data)}})).unwrap()
        };
        assert!(
            check_source_secret(
                &secret(
                    DOCKER_CONFIG_TYPE,
                    r#"{"auths":{"r.example":{"auth":"eDp5"}}}"#
                ),
                &r
            )
            .is_ok()
        );
        let e = check_source_secret(&secret("Opaque", "{}"), &r).unwrap_err();
        assert!(
            e.to_string().contains("not kubernetes.io/dockerconfigjson"),
            "{e}"
        );
        assert!(check_source_secret(&secret(DOCKER_CONFIG_TYPE, "nope"), &r).is_err());
        assert!(
            check_source_secret(&secret(DOCKER_CONFIG_TYPE, "{}"), &r)
                .unwrap_err()
                .to_string()
                .contains("auths")
        );
    }

    #[test]
    fn hosts_cover_service_names_cluster_ip_and_extras() {
        let registry: Registry = serde_json::from_value(json!({
            "apiVersion": "wharf.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "main", "namespace": "registry"},
            "spec": {"storage": {"emptyDir": {}}, "ingress": {"host": "reg.example.com"}},
        }))
        .unwrap();
        let service: Service = serde_json::from_value(
            json!({"metadata": {"name": "main"}, "spec": {"clusterIP": "10.0.0.7"}}),
        )
        .unwrap();
        let source = RegistrySource {
            namespace: "registry".into(),
            name: "main".into(),
            hosts: Some(vec!["10.213.0.1:30500".into()]),
            ..Default::default()
        };
        let hosts = registry_hosts(&registry, Some(&service), &source);
        for h in [
            "main.registry.svc:5000",
            "main.registry.svc.cluster.local:5000",
            "10.0.0.7:5000",
            "reg.example.com",
            "10.213.0.1:30500",
        ] {
            assert!(hosts.contains(&h.to_string()), "{h} missing from {hosts:?}");
        }
        assert_eq!(repositories(&source), ["**"]);
    }
}
