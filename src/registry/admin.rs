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
//! ```

use super::Registry;
use super::api::Json;
use super::auth::now_unix;
use super::auth::robots::{Robot, RobotError, RobotRequest, Robots};
use super::storage::Store;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
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

/// Authorizes an admin call; returns the robot store or the response to send.
async fn admin<'a, S: Store>(
    registry: &'a Registry<S>,
    headers: &HeaderMap,
) -> Result<&'a Robots, Response> {
    let identity = registry
        .auth
        .authorize_admin(headers)
        .await
        .map_err(IntoResponse::into_response)?;
    tracing::debug!(admin = identity.name.as_deref(), "admin call");
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

async fn list<S: Store>(State(registry): State<Arc<Registry<S>>>, headers: HeaderMap) -> Response {
    let robots = match admin(&registry, &headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match robots.list().await {
        Ok(all) => {
            Json::ok(serde_json::json!({"robots": all.iter().map(view).collect::<Vec<_>>()}))
        }
        Err(e) => robot_error(e),
    }
}

async fn create<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let robots = match admin(&registry, &headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let request: RobotRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(message) => return invalid(message),
    };
    match robots.create(request, now_unix()).await {
        Ok((robot, secret)) => {
            tracing::info!(robot = %robot.name, "robot created");
            let mut body = view(&robot);
            body["secret"] = secret.into();
            let mut r = Json::ok(body);
            *r.status_mut() = StatusCode::CREATED;
            r
        }
        Err(e) => robot_error(e),
    }
}

async fn show<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let robots = match admin(&registry, &headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match robots.get(&name).await {
        Ok(Some(robot)) => Json::ok(view(&robot)),
        Ok(None) => robot_error(RobotError::NotFound(name)),
        Err(e) => robot_error(e),
    }
}

async fn update<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let robots = match admin(&registry, &headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let request: RobotRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(message) => return invalid(message),
    };
    if request.name.as_deref().is_some_and(|n| n != name) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID",
            "a robot cannot be renamed".into(),
        );
    }
    match robots.update(&name, request).await {
        Ok(robot) => {
            tracing::info!(robot = %robot.name, "robot updated");
            Json::ok(view(&robot))
        }
        Err(e) => robot_error(e),
    }
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
) -> Response {
    let robots = match admin(&registry, &headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let request: RotateRequest = match body.is_empty() {
        true => RotateRequest::default(),
        false => match parse_json(&body) {
            Ok(r) => r,
            Err(message) => return invalid(message),
        },
    };
    let grace = match request
        .previous_valid_for
        .as_deref()
        .map(crate::duration::parse)
    {
        None => Duration::ZERO,
        Some(Ok(d)) => d,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "INVALID", e.to_string()),
    };
    match robots
        .rotate(&name, request.expires_in.as_deref(), grace, now_unix())
        .await
    {
        Ok((robot, secret)) => {
            tracing::info!(robot = %robot.name, grace_secs = grace.as_secs(), "robot secret rotated");
            let mut body = view(&robot);
            body["secret"] = secret.into();
            Json::ok(body)
        }
        Err(e) => robot_error(e),
    }
}

async fn revoke<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let robots = match admin(&registry, &headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match robots.delete(&name).await {
        Ok(true) => {
            tracing::info!(robot = %name, "robot revoked");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => robot_error(RobotError::NotFound(name)),
        Err(e) => robot_error(e),
    }
}
