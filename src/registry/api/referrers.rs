//! The referrers API: manifests whose `subject` is a given digest, as an image index.

use super::{Json, Query};
use crate::registry::Registry;
use crate::registry::digest::Digest;
use crate::registry::error::RegistryError;
use crate::registry::manifest::OCI_INDEX;
use crate::registry::names::RepoName;
use crate::registry::storage::Store;
use axum::http::HeaderValue;
use axum::response::Response;

pub async fn list<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    subject: &Digest,
    query: &Query,
) -> Result<Response, RegistryError> {
    let filter = query.first("artifactType").filter(|t| !t.is_empty());
    let mut manifests = Vec::new();
    for raw in registry.store.list_referrers(repo, subject).await? {
        let Ok(descriptor) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            tracing::warn!(repository = %repo, subject = %subject, "skipping unreadable referrer entry");
            continue;
        };
        if let Some(wanted) = filter
            && descriptor.get("artifactType").and_then(|v| v.as_str()) != Some(wanted)
        {
            continue;
        }
        manifests.push(descriptor);
    }
    let mut response = Json::with_type(
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }),
        OCI_INDEX,
    );
    if filter.is_some() {
        response.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(response)
}
