//! `/auth/token`: Docker token authentication's token endpoint, GET (the classic flow, basic
//! credentials in the header) and POST (the OAuth2 flow: `grant_type=password` or
//! `refresh_token`). The token lists the requested scopes narrowed to what the account may do;
//! asking for more is not an error, the client just gets less (as with Distribution's servers).

use super::permissions::{Action, Grants};
use super::token::{Claims, ResourceAccess};
use super::{ANONYMOUS, Account, Auth, Presented, now_unix, presented};
use crate::registry::Registry;
use crate::registry::api::{Json, Query};
use crate::registry::error::RegistryError;
use crate::registry::storage::Store;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// A token request after parsing: who, for which service, which scopes, and whether a refresh
/// token is wanted.
struct TokenRequest {
    service: Option<String>,
    scopes: Vec<String>,
    offline: bool,
}

pub async fn get<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = Query::parse(query.as_deref());
    let request = TokenRequest {
        service: query.first("service").map(str::to_owned),
        scopes: query.all("scope").to_vec(),
        offline: query.first("offline_token") == Some("true"),
    };
    let auth = &registry.auth;
    let account = match presented(&headers) {
        Presented::Basic(user, secret) => match auth.login(&user, &secret).await {
            Ok(Some(account)) => account,
            Ok(None) => {
                tracing::info!(user = %user, "token request with wrong credentials");
                return unauthorized();
            }
            Err(e) => return e.into_response(),
        },
        Presented::Nothing if auth.anonymous_pull => anonymous(auth),
        _ => return unauthorized(),
    };
    issue(auth, &account, &request)
}

pub async fn post<S: Store>(State(registry): State<Arc<Registry<S>>>, body: Bytes) -> Response {
    let form = Query::parse(std::str::from_utf8(&body).ok());
    let request = TokenRequest {
        service: form.first("service").map(str::to_owned),
        scopes: form
            .first("scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        offline: form.first("access_type") == Some("offline"),
    };
    let auth = &registry.auth;
    let account = match form.first("grant_type") {
        Some("password") => {
            let (Some(user), Some(password)) = (form.first("username"), form.first("password"))
            else {
                return bad_request("grant_type=password needs username and password");
            };
            match auth.login(user, password).await {
                Ok(Some(account)) => account,
                Ok(None) => {
                    tracing::info!(user = %user, "token request with wrong credentials");
                    return unauthorized();
                }
                Err(e) => return e.into_response(),
            }
        }
        Some("refresh_token") => {
            let Some(raw) = form.first("refresh_token") else {
                return bad_request("grant_type=refresh_token needs refresh_token");
            };
            match refresh(auth, raw).await {
                Ok(Some(account)) => account,
                Ok(None) => return unauthorized(),
                Err(e) => return e.into_response(),
            }
        }
        _ => return bad_request("grant_type must be password or refresh_token"),
    };
    issue(auth, &account, &request)
}

fn anonymous(auth: &Auth) -> Account {
    Account {
        name: ANONYMOUS.into(),
        grants: auth.anonymous_grants(),
        credential: String::new(),
        expires_at: None,
    }
}

/// A refresh token is good while its account still holds the credential it came from.
async fn refresh(auth: &Auth, raw: &str) -> Result<Option<Account>, RegistryError> {
    let Some(tokens) = auth.tokens() else {
        return Ok(None);
    };
    let claims = match tokens.keys().verify(raw, now_unix(), true) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = %e, "refresh token refused");
            return Ok(None);
        }
    };
    let credential = claims.refresh_of.clone().unwrap_or_default();
    Ok(auth
        .current_grants(&claims.sub, Some(&credential))
        .await?
        .map(|grants| Account {
            name: claims.sub,
            grants,
            credential,
            expires_at: None,
        }))
}

/// `repository:<name>:<actions>` or `registry:catalog:*`, narrowed to what `grants` allow.
/// Unknown or malformed scopes are dropped, as Distribution's token servers do.
pub fn grant(grants: &Grants, scopes: &[String]) -> Vec<ResourceAccess> {
    let mut out: Vec<ResourceAccess> = Vec::new();
    for scope in scopes.iter().flat_map(|s| s.split(' ')) {
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        // `repository(plugin):name:pull` names a resource class; the class does not matter here.
        let kind = kind.split('(').next().unwrap_or(kind);
        let granted: Vec<String> = match kind {
            "repository" => grants
                .permitted(name, &Action::parse_list(actions))
                .iter()
                .map(|a| a.as_str().to_owned())
                .collect(),
            "registry" if name == "catalog" => vec!["*".into()],
            _ => continue,
        };
        if granted.is_empty() {
            continue;
        }
        match out.iter_mut().find(|a| a.kind == kind && a.name == name) {
            Some(existing) => {
                existing.actions.extend(granted);
                existing.actions.sort();
                existing.actions.dedup();
            }
            None => out.push(ResourceAccess {
                kind: kind.to_owned(),
                name: name.to_owned(),
                actions: granted,
            }),
        }
    }
    out
}

fn issue(auth: &Auth, account: &Account, request: &TokenRequest) -> Response {
    let Some(tokens) = auth.tokens() else {
        return RegistryError::Unsupported("token authentication is not enabled").into_response();
    };
    let settings = tokens.settings();
    if let Some(service) = &request.service
        && service != &settings.service
    {
        return bad_request(&format!("this token service serves {:?}", settings.service));
    }
    let now = now_unix();
    // A token never outlives the credential it was issued for.
    let cap = |secs: u64| match account.expires_at {
        Some(at) => (now + secs).min(at),
        None => now + secs,
    };
    let exp = cap(settings.lifetime.as_secs());
    let mut claims = Claims {
        iss: settings.issuer.clone(),
        sub: account.name.clone(),
        aud: settings.service.clone(),
        exp,
        nbf: now,
        iat: now,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        access: grant(&account.grants, &request.scopes),
        refresh_of: None,
    };
    let resources = claims.access.len();
    let token = tokens.keys().sign(&claims);
    let issued_at = k8s_openapi::jiff::Timestamp::from_second(now as i64)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": exp.saturating_sub(now),
        "issued_at": issued_at,
    });
    if request.offline && account.name != ANONYMOUS {
        claims.access.clear();
        claims.exp = cap(settings.refresh_lifetime.as_secs());
        claims.jti = uuid::Uuid::new_v4().simple().to_string();
        claims.refresh_of = Some(account.credential.clone());
        body["refresh_token"] = tokens.keys().sign(&claims).into();
    }
    tracing::info!(user = %account.name, resources, "token issued");
    Json::ok(body)
}

fn unauthorized() -> Response {
    let body = serde_json::json!({"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]});
    let mut r = Json::ok(body);
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r
}

fn bad_request(message: &str) -> Response {
    let body = serde_json::json!({"error":"invalid_request","error_description": message});
    let mut r = Json::ok(body);
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

#[cfg(test)]
mod tests {
    use super::super::permissions::Permission;
    use super::*;

    #[test]
    fn scopes_are_narrowed_to_the_grants() {
        let grants = Grants::Limited(vec![Permission {
            repositories: vec!["team-a/**".into()],
            actions: vec![Action::Pull],
        }]);
        let scopes = vec![
            "repository:team-a/app:pull,push".to_owned(),
            "repository:team-b/x:pull".to_owned(),
            "registry:catalog:*".to_owned(),
            "repository(plugin):team-a/other:pull".to_owned(),
            "garbage".to_owned(),
        ];
        let granted = grant(&grants, &scopes);
        assert_eq!(granted.len(), 3, "{granted:?}");
        assert_eq!(granted[0].name, "team-a/app");
        assert_eq!(granted[0].actions, ["pull"]);
        assert_eq!(granted[1].kind, "registry");
        assert_eq!(granted[2].name, "team-a/other");
        let all = grant(&Grants::Admin, &["repository:x:*".to_owned()]);
        assert_eq!(all[0].actions, ["pull", "push", "delete"]);
    }
}
