//! The admin API (`/admin/v1/…`), for operators and automation: robot accounts today. Every call
//! needs basic credentials of an unrestricted htpasswd user. Secrets are returned once, in the
//! response that creates or rotates them, and never stored or logged in clear.
//!
//! ```text
//! GET    /admin/v1/robots                 list (no secrets)
//! POST   /admin/v1/robots                 create {name, description, permissions, expiresIn}
//! GET    /admin/v1/robots/{name}
//! PUT    /admin/v1/robots/{name}          replace permissions and description
//! POST   /admin/v1/robots/{name}/rotate   new secret {expiresIn, previousValidFor}
//! DELETE /admin/v1/robots/{name}          revoke
//! POST   /admin/v1/gc                     garbage collection {dryRun, gracePeriod,
//!                                         deleteUntagged, untaggedGracePeriod} -> report
//! GET    /admin/v1/gc                     {running, last}
//! GET    /admin/v1/manifests?repository=  every manifest: tags, pushedAt, lastPulledAt,
//!                                         subject, children
//! ```

use super::Registry;
use super::api::Json;
use super::auth::Scope;
use super::auth::now_unix;
use super::auth::permissions::Action;
use super::auth::robots::{Robot, RobotError, RobotRequest, Robots};
use super::gc::{GcError, GcOptions};
use super::names::{RepoName, Tag};
use super::storage::Store;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

pub fn routes<S: Store>() -> Router<Arc<Registry<S>>> {
    Router::new()
        .route("/admin/v1/robots", get(list::<S>).post(create::<S>))
        .route(
            "/admin/v1/robots/{name}",
            get(show::<S>).put(update::<S>).delete(revoke::<S>),
        )
        .route("/admin/v1/robots/{name}/rotate", post(rotate::<S>))
        .route("/admin/v1/gc", get(gc_status::<S>).post(gc_run::<S>))
        .route("/admin/v1/manifests", get(manifests::<S>))
}

fn view(robot: &Robot) -> serde_json::Value {
    serde_json::json!({
        "name": robot.name,
        "username": robot.username(),
        "description": robot.description,
        "permissions": robot.permissions,
        "createdAt": robot.created_at,
        "expiresAt": robot.expires_at,
        "secrets": robot.secrets.iter().map(|s| serde_json::json!({
            "id": s.id, "createdAt": s.created_at, "validUntil": s.valid_until,
        })).collect::<Vec<_>>(),
    })
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let mut r =
        Json::ok(serde_json::json!({"errors":[{"code":code,"message":message,"detail":null}]}));
    *r.status_mut() = status;
    r
}

fn robot_error(e: RobotError) -> Response {
    let message = e.to_string();
    match e {
        RobotError::InvalidName(_)
        | RobotError::InvalidPattern(_)
        | RobotError::NoPermissions
        | RobotError::InvalidExpiry(_) => error(StatusCode::BAD_REQUEST, "INVALID", message),
        RobotError::Exists(_) => error(StatusCode::CONFLICT, "CONFLICT", message),
        RobotError::NotFound(_) => error(StatusCode::NOT_FOUND, "NOT_FOUND", message),
        RobotError::Storage(_) | RobotError::Corrupt(_) => {
            tracing::error!(error = %message, "robot storage failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "storage failure".into(),
            )
        }
    }
}

/// Authorizes an admin call, or returns the response to send.
async fn admin_only<S: Store>(registry: &Registry<S>, headers: &HeaderMap) -> Result<(), Response> {
    let identity = registry
        .auth
        .authorize_admin(headers)
        .await
        .map_err(IntoResponse::into_response)?;
    tracing::debug!(admin = identity.name.as_deref(), "admin call");
    Ok(())
}

/// Authorizes an admin call; returns the robot store or the response to send.
async fn admin<'a, S: Store>(
    registry: &'a Registry<S>,
    headers: &HeaderMap,
) -> Result<&'a Robots, Response> {
    admin_only(registry, headers).await?;
    registry.auth.robots().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "robot accounts need authentication to be configured".into(),
        )
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("request body is not valid: {e}"))
}

fn invalid(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID", message)
}

async fn list<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let robots = admin(&registry, &headers).await?;
    let all = robots.list().await.map_err(robot_error)?;
    Ok(Json::ok(
        serde_json::json!({"robots": all.iter().map(view).collect::<Vec<_>>()}),
    ))
}

async fn create<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let robots = admin(&registry, &headers).await?;
    let request: RobotRequest = parse_json(&body).map_err(invalid)?;
    let (robot, secret) = robots
        .create(request, now_unix())
        .await
        .map_err(robot_error)?;
    tracing::info!(robot = %robot.name, "robot created");
    let mut body = view(&robot);
    body["secret"] = secret.into();
    let mut r = Json::ok(body);
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

async fn show<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let robots = admin(&registry, &headers).await?;
    match robots.get(&name).await.map_err(robot_error)? {
        Some(robot) => Ok(Json::ok(view(&robot))),
        None => Err(robot_error(RobotError::NotFound(name))),
    }
}

async fn update<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let robots = admin(&registry, &headers).await?;
    let request: RobotRequest = parse_json(&body).map_err(invalid)?;
    if request.name.as_deref().is_some_and(|n| n != name) {
        return Err(invalid("a robot cannot be renamed".into()));
    }
    let robot = robots.update(&name, request).await.map_err(robot_error)?;
    tracing::info!(robot = %robot.name, "robot updated");
    Ok(Json::ok(view(&robot)))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateRequest {
    expires_in: Option<String>,
    /// How long the replaced secret keeps working, like `10m`; default: not at all.
    previous_valid_for: Option<String>,
}

async fn rotate<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let robots = admin(&registry, &headers).await?;
    let request: RotateRequest = match body.is_empty() {
        true => RotateRequest::default(),
        false => parse_json(&body).map_err(invalid)?,
    };
    let grace = match request.previous_valid_for.as_deref() {
        None => Duration::ZERO,
        Some(text) => crate::duration::parse(text).map_err(|e| invalid(e.to_string()))?,
    };
    let (robot, secret) = robots
        .rotate(&name, request.expires_in.as_deref(), grace, now_unix())
        .await
        .map_err(robot_error)?;
    tracing::info!(robot = %robot.name, grace_secs = grace.as_secs(), "robot secret rotated");
    let mut body = view(&robot);
    body["secret"] = secret.into();
    Ok(Json::ok(body))
}

async fn revoke<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let robots = admin(&registry, &headers).await?;
    if !robots.delete(&name).await.map_err(robot_error)? {
        return Err(robot_error(RobotError::NotFound(name)));
    }
    tracing::info!(robot = %name, "robot revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GcRequest {
    /// Report what would be deleted; delete nothing (default false).
    dry_run: Option<bool>,
    /// Unreferenced blobs younger than this are kept (default 1h).
    grace_period: Option<String>,
    /// Also delete manifests no tag reaches (default false).
    delete_untagged: Option<bool>,
    /// ... once they are older than this (default 24h).
    untagged_grace_period: Option<String>,
}

fn duration_or(text: Option<&str>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => crate::duration::parse(t).map_err(|e| e.to_string()),
    }
}

async fn gc_run<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    admin_only(&registry, &headers).await?;
    let request: GcRequest = match body.is_empty() {
        true => GcRequest::default(),
        false => parse_json(&body).map_err(invalid)?,
    };
    let options = GcOptions {
        dry_run: request.dry_run.unwrap_or(false),
        grace: duration_or(request.grace_period.as_deref(), Duration::from_secs(3600))
            .map_err(invalid)?,
        untagged_after: match request.delete_untagged.unwrap_or(false) {
            false => None,
            true => Some(
                duration_or(
                    request.untagged_grace_period.as_deref(),
                    Duration::from_secs(24 * 3600),
                )
                .map_err(invalid)?,
            ),
        },
        stale_uploads_after: Some(registry.config.upload_purge_after),
    };
    match registry.gc.run(registry.store.clone(), options).await {
        Ok(report) => Ok(Json::ok(serde_json::to_value(report).unwrap_or_default())),
        Err(GcError::AlreadyRunning) => Err(error(
            StatusCode::CONFLICT,
            "CONFLICT",
            GcError::AlreadyRunning.to_string(),
        )),
        Err(e) => {
            tracing::error!(error = %e, "garbage collection failed");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                e.to_string(),
            ))
        }
    }
}

async fn gc_status<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    admin_only(&registry, &headers).await?;
    Ok(Json::ok(serde_json::json!({
        "running": registry.gc.is_running(),
        "last": registry.gc.last_report(),
    })))
}

/// Every manifest of a repository with its tags, media type, subject, when it was pushed and
/// when it was last pulled (Unix seconds): what retention policies decide on.
async fn manifests<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let query = super::api::Query::parse(query.as_deref());
    let repo = query
        .first("repository")
        .ok_or_else(|| "repository= is required".to_owned())
        .and_then(|r| RepoName::parse(r).map_err(|e| e.to_string()))
        .map_err(invalid)?;
    // Whoever may pull the repository may see its history, so a retention run needs only a
    // robot with pull and delete on the repositories it covers; anonymous callers never do.
    let identity = registry
        .auth
        .authorize(&headers, Scope::Repository(&repo, Action::Pull))
        .await
        .map_err(IntoResponse::into_response)?;
    if identity.name.is_none() && !registry.auth.is_open() {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the manifest listing needs credentials".into(),
        ));
    }
    let storage = |e: super::storage::StorageError| {
        error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string())
    };
    let Some(tags) = registry.store.list_tags(&repo).await.map_err(storage)? else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository {repo} does not exist"),
        ));
    };
    let mut tags_of: std::collections::HashMap<String, Vec<String>> = Default::default();
    for tag in tags.iter() {
        let Ok(parsed) = Tag::parse(tag) else {
            continue;
        };
        if let Some(d) = registry
            .store
            .get_tag(&repo, &parsed)
            .await
            .map_err(storage)?
        {
            tags_of.entry(d.to_string()).or_default().push(tag.clone());
        }
    }
    let name = repo.as_str().to_owned();
    let store = registry.store.clone();
    let inventory = tokio::task::spawn_blocking(move || {
        store.repository_inventory(&name, super::storage::inventory::Detail::Full)
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string()))?
    .map_err(storage)?;
    let pulls = registry
        .pulls
        .last_pulls(registry.store.as_ref(), &repo)
        .await;
    let mut out = Vec::new();
    for (digest, pushed, media_type) in inventory.revisions {
        let parsed = registry
            .store
            .get_manifest(&repo, &digest)
            .await
            .map_err(storage)?
            .and_then(|m| super::manifest::parse(&m.bytes, Some(&m.media_type)).ok());
        let subject = parsed
            .as_ref()
            .and_then(|p| p.subject.as_ref())
            .map(|s| s.to_string());
        let children: Vec<String> = parsed
            .map(|p| p.children.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        let key = digest.to_string();
        out.push(serde_json::json!({
            "digest": key,
            "mediaType": media_type,
            "tags": tags_of.remove(&key).unwrap_or_default(),
            "pushedAt": pushed.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "lastPulledAt": pulls.get(&key),
            "subject": subject,
            "children": children,
        }));
    }
    out.sort_by(|a, b| {
        a["pushedAt"]
            .as_u64()
            .cmp(&b["pushedAt"].as_u64())
            .then(a["digest"].as_str().cmp(&b["digest"].as_str()))
    });
    Ok(Json::ok(
        serde_json::json!({"repository": repo.as_str(), "manifests": out}),
    ))
}
