//! Manifest GET/HEAD/PUT/DELETE by tag or digest, including `?tag=` parameters and the
//! referrers index maintained at push time.

use super::{DOCKER_CONTENT_DIGEST, Query, empty, header_str, hv};
use crate::registry::Registry;
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::error::RegistryError;
use crate::registry::gc;
use crate::registry::manifest::{self, Kind, MAX_MANIFEST_BYTES};
use crate::registry::names::{Reference, RepoName, Tag};
use crate::registry::notify::PushEvent;
use crate::registry::storage::{Store, StoredManifest};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

/// The manifest `reference` names in `repo`, with its digest.
async fn lookup<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    reference: &Reference,
) -> Result<(Digest, StoredManifest), RegistryError> {
    let found = match reference {
        Reference::Digest(digest) => registry
            .store
            .get_manifest(repo, digest)
            .await?
            .map(|stored| (digest.clone(), stored)),
        Reference::Tag(tag) => registry.store.get_tagged_manifest(repo, tag).await?,
    };
    found.ok_or(RegistryError::ManifestUnknown)
}

pub async fn get<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    reference: &Reference,
    with_body: bool,
) -> Result<Response, RegistryError> {
    let (digest, stored) = lookup(registry, repo, reference).await?;
    let len = stored.bytes.len();
    let mut response = Response::new(if with_body {
        registry.pulls.record(repo, &digest);
        registry.metrics.bytes_sent(len as u64);
        Body::from(stored.bytes)
    } else {
        Body::empty()
    });
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, hv(&stored.media_type));
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    h.insert(DOCKER_CONTENT_DIGEST, hv(&digest.to_string()));
    h.insert(header::ETAG, hv(&format!("\"{digest}\"")));
    Ok(response)
}

pub async fn put<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    reference: &Reference,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    // Read one byte past the limit so that "too large" is told apart from "exactly the limit".
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES + 1)
        .await
        .map_err(|_| RegistryError::ManifestTooLarge(MAX_MANIFEST_BYTES))?;
    let parsed = manifest::parse(&bytes, header_str(headers, header::CONTENT_TYPE))?;

    let digest = match reference {
        Reference::Digest(expected) => {
            let actual = Digest::of(expected.algorithm(), &bytes);
            if &actual != expected {
                return Err(RegistryError::DigestMismatch);
            }
            actual
        }
        Reference::Tag(_) => Digest::of(Algorithm::Sha256, &bytes),
    };
    // Validate every tag before writing anything.
    let mut tags: Vec<Tag> = Vec::new();
    if let Reference::Tag(t) = reference {
        tags.push(t.clone());
    }
    for t in query.all("tag") {
        let tag = Tag::parse(t)?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    // Announce before checking, so that garbage collection either keeps these or has already
    // removed them (and the check fails cleanly).
    let referenced: Vec<Digest> = parsed
        .blobs
        .iter()
        .chain(&parsed.layers)
        .chain(&parsed.children)
        .chain([&digest])
        .cloned()
        .collect();
    let _push = registry.gc.begin_push(&referenced);
    // The same, for collections on other replicas sharing the storage.
    let shared_push = gc::shared::announce(registry.store.as_ref(), &referenced).await?;
    check_references(registry, repo, &parsed).await?;

    let stored = StoredManifest {
        bytes: bytes.clone(),
        media_type: parsed.media_type.clone(),
    };
    registry.store.put_manifest(repo, &digest, &stored).await?;
    if let Some(subject) = &parsed.subject {
        let descriptor = referrer_descriptor(&parsed, &digest, bytes.len());
        registry
            .store
            .add_referrer(repo, subject, &digest, &descriptor)
            .await?;
    }
    // Tags last: a tag only ever points at a manifest that is fully stored and indexed.
    for tag in &tags {
        registry
            .store
            .set_tag(repo, tag, &digest, &parsed.media_type)
            .await?;
    }
    shared_push.finish(registry.store.as_ref()).await;
    registry.metrics.bytes_received(bytes.len() as u64);
    for tag in &tags {
        registry.notifier.notify(PushEvent::push(
            repo.as_str(),
            tag.as_str(),
            &digest.to_string(),
            &parsed.media_type,
            bytes.len() as u64,
        ));
    }
    tracing::info!(repository = %repo, digest = %digest, tags = tags.len(), "manifest stored");

    let mut extra = vec![
        ("location", hv(&format!("/v2/{repo}/manifests/{digest}"))),
        (DOCKER_CONTENT_DIGEST, hv(&digest.to_string())),
    ];
    if let Some(subject) = &parsed.subject {
        extra.push(("oci-subject", hv(&subject.to_string())));
    }
    if !query.all("tag").is_empty() {
        for tag in &tags {
            extra.push(("oci-tag", hv(tag.as_str())));
        }
    }
    Ok(empty(StatusCode::CREATED, &extra))
}

/// The config blob must be in the repository. Layers and child manifests must be too unless
/// the registry allows sparse manifests (partial mirrors, platform-filtered copies).
async fn check_references<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    parsed: &manifest::ParsedManifest,
) -> Result<(), RegistryError> {
    for blob in &parsed.blobs {
        if !registry.store.blob_linked(repo, blob).await? {
            return Err(RegistryError::ManifestBlobUnknown(blob.to_string()));
        }
    }
    if registry.config.allow_sparse_manifests {
        return Ok(());
    }
    for blob in &parsed.layers {
        if !registry.store.blob_linked(repo, blob).await? {
            return Err(RegistryError::ManifestBlobUnknown(blob.to_string()));
        }
    }
    if parsed.kind == Kind::Index {
        for child in &parsed.children {
            if registry.store.get_manifest(repo, child).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown(child.to_string()));
            }
        }
    }
    Ok(())
}

fn referrer_descriptor(parsed: &manifest::ParsedManifest, digest: &Digest, size: usize) -> Vec<u8> {
    let mut d = serde_json::json!({
        "mediaType": parsed.media_type,
        "digest": digest.to_string(),
        "size": size,
    });
    if let Some(t) = &parsed.artifact_type {
        d["artifactType"] = serde_json::Value::String(t.clone());
    }
    if let Some(a) = &parsed.annotations {
        d["annotations"] = serde_json::json!(a);
    }
    serde_json::to_vec(&d).unwrap_or_default()
}

pub async fn delete<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Response, RegistryError> {
    if !registry.config.deletes_enabled {
        return Err(RegistryError::Unsupported(
            "deletes are disabled on this registry",
        ));
    }
    match reference {
        Reference::Tag(tag) => {
            if !registry.store.delete_tag(repo, tag).await? {
                return Err(RegistryError::ManifestUnknown);
            }
            tracing::info!(repository = %repo, tag = %tag, "tag deleted");
        }
        Reference::Digest(digest) => {
            let stored = registry
                .store
                .get_manifest(repo, digest)
                .await?
                .ok_or(RegistryError::ManifestUnknown)?;
            let subject = manifest::parse(&stored.bytes, Some(&stored.media_type))
                .ok()
                .and_then(|m| m.subject);
            if !registry.store.delete_manifest(repo, digest).await? {
                return Err(RegistryError::ManifestUnknown);
            }
            if let Some(subject) = subject {
                registry
                    .store
                    .remove_referrer(repo, &subject, digest)
                    .await?;
            }
            tracing::info!(repository = %repo, digest = %digest, "manifest deleted");
        }
    }
    Ok(empty(StatusCode::ACCEPTED, &[]))
}
