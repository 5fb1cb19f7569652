//! Tag listing and the catalog, both with `n`/`last` pagination and `Link` headers.

use super::{Json, Query, next_link, paginate};
use crate::registry::Registry;
use crate::registry::auth::{Access, Identity};
use crate::registry::error::RegistryError;
use crate::registry::names::RepoName;
use crate::registry::storage::Store;
use axum::http::header;
use axum::response::Response;

pub async fn tags<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    query: &Query,
) -> Result<Response, RegistryError> {
    let all = registry
        .store
        .list_tags(repo)
        .await?
        .ok_or(RegistryError::NameUnknown)?;
    let (page, more) = paginate(all.as_slice(), query)?;
    let mut response = Json::ok(serde_json::json!({ "name": repo.as_str(), "tags": page }));
    if let (Some(n), Some(last)) = (more, page.last()) {
        response.headers_mut().insert(
            header::LINK,
            next_link(&format!("/v2/{repo}/tags/list"), n, last),
        );
    }
    Ok(response)
}

/// Lists only the repositories the caller may pull from.
pub async fn catalog<S: Store>(
    registry: &Registry<S>,
    query: &Query,
    identity: &Identity,
) -> Result<Response, RegistryError> {
    let mut all = registry.store.list_repositories().await?;
    let grants = registry.auth.catalog_grants(identity).await?;
    if !grants.is_admin() {
        all.retain(|repo| grants.allows(repo, Access::Pull));
    }
    let (page, more) = paginate(&all, query)?;
    let mut response = Json::ok(serde_json::json!({ "repositories": page }));
    if let (Some(n), Some(last)) = (more, page.last()) {
        response
            .headers_mut()
            .insert(header::LINK, next_link("/v2/_catalog", n, last));
    }
    Ok(response)
}
