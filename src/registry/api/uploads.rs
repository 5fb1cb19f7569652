//! The blob upload path: start (with mount or monolithic digest), PATCH chunks, PUT to finish,
//! status and cancel. Every byte is hashed once, as it streams to storage; the hash state lives
//! in memory between requests, and where the backend keeps a checkpoint of it (S3), another
//! replica continues from that; otherwise it is rebuilt from the stored bytes.

use super::{DOCKER_CONTENT_DIGEST, Query, empty, header_str, hv};
use crate::registry::Registry;
use crate::registry::auth::{Access, Identity};
use crate::registry::digest::{Algorithm, Digest, Hasher};
use crate::registry::error::RegistryError;
use crate::registry::names::RepoName;
use crate::registry::routes::parse_digest;
use crate::registry::storage::{StorageError, Store};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::{Stream, StreamExt, TryStreamExt};
use std::io;

fn location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// `Range: 0-<last byte>`; an empty upload reports `0-0` as Distribution does and clients expect.
fn range_header(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}

fn in_progress(repo: &RepoName, id: &str, len: u64, status: StatusCode) -> Response {
    empty(
        status,
        &[
            ("location", hv(&location(repo, id))),
            ("range", hv(&range_header(len))),
            ("docker-upload-uuid", hv(id)),
        ],
    )
}

fn created(repo: &RepoName, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            ("location", hv(&format!("/v2/{repo}/blobs/{digest}"))),
            (DOCKER_CONTENT_DIGEST, hv(&digest.to_string())),
        ],
    )
}

fn upload_error(e: StorageError) -> RegistryError {
    match e {
        StorageError::NotFound => RegistryError::BlobUploadUnknown,
        other => other.into(),
    }
}

fn body_stream(body: Body) -> impl Stream<Item = io::Result<bytes::Bytes>> + Send + Unpin {
    body.into_data_stream().map_err(io::Error::other)
}

/// The start offset of a `Content-Range: <start>-<end>` header, if present and well-formed.
fn content_range_start(headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    let Some(value) = header_str(headers, header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let value = value
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let (start, end) = value.split_once('-').ok_or_else(|| {
        RegistryError::BlobUploadInvalid(format!("Content-Range {value:?} is not <start>-<end>"))
    })?;
    let start: u64 = start.trim().parse().map_err(|_| {
        RegistryError::BlobUploadInvalid(format!("Content-Range {value:?} is not <start>-<end>"))
    })?;
    let end: u64 = end.trim().parse().map_err(|_| {
        RegistryError::BlobUploadInvalid(format!("Content-Range {value:?} is not <start>-<end>"))
    })?;
    if end < start {
        return Err(RegistryError::RangeNotSatisfiable(format!(
            "Content-Range {value:?} ends before it starts"
        )));
    }
    Ok(Some(start))
}

fn is_empty_body(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_LENGTH).is_some_and(|l| l.trim() == "0")
}

pub async fn start<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
    identity: &Identity,
) -> Result<Response, RegistryError> {
    if let Some(mount) = query.first("mount") {
        let digest = parse_digest(mount)?;
        registry.gc.touch([&digest]);
        let mountable = match query.first("from") {
            Some(from) => {
                let from = RepoName::parse(from)?;
                // Mounting reads the source: the caller needs pull access there too.
                identity.may(from.as_str(), Access::Pull)
                    && registry.store.blob_linked(&from, &digest).await?
            }
            // Without `from`, knowing a digest would be enough to read any blob: only for
            // callers who may read everything anyway.
            None => {
                registry.config.mount_without_from
                    && identity.is_admin()
                    && registry.store.blob_size(&digest).await?.is_some()
            }
        };
        if mountable {
            registry.store.link_blob(repo, &digest).await?;
            tracing::info!(repository = %repo, digest = %digest, "blob mounted");
            return Ok(created(repo, &digest));
        }
        // Spec: when the blob cannot be mounted, fall back to an ordinary upload session.
    }
    // Validate before creating anything, so a bad request leaves no upload behind.
    let monolithic = query.first("digest").map(parse_digest).transpose()?;
    if let Some(digest) = &monolithic
        && let Some(len) = whole_blob_len(registry, headers)
    {
        return store_whole(registry, repo, None, digest, len, body).await;
    }
    let id = registry.store.create_upload(repo).await?;
    if let Some(digest) = monolithic {
        let hasher = match append(registry, repo, &id, 0, body, digest.algorithm().hasher()).await {
            Ok((_, hasher)) => hasher,
            Err(e) => {
                let _ = registry.store.cancel_upload(repo, &id).await;
                return Err(e);
            }
        };
        return verify_and_commit(registry, repo, &id, &digest, hasher).await;
    }
    Ok(in_progress(repo, &id, 0, StatusCode::ACCEPTED))
}

pub async fn status<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: &str,
) -> Result<Response, RegistryError> {
    let len = registry
        .store
        .upload_len(repo, id)
        .await
        .map_err(upload_error)?;
    Ok(in_progress(repo, id, len, StatusCode::NO_CONTENT))
}

pub async fn patch<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let len = match offset_for(registry, repo, id, headers).await? {
        Ok(len) => len,
        Err(out_of_order) => return Ok(out_of_order),
    };
    let hasher = resume_hasher(registry, repo, id, len, Algorithm::Sha256).await?;
    match append(registry, repo, id, len, body, hasher).await {
        Ok((new_len, hasher)) => {
            registry.upload_hashes.put(id, new_len, hasher);
            Ok(in_progress(repo, id, new_len, StatusCode::ACCEPTED))
        }
        Err(RegistryError::Storage(StorageError::OffsetMismatch { actual, .. })) => Ok(
            in_progress(repo, id, actual, StatusCode::RANGE_NOT_SATISFIABLE),
        ),
        Err(RegistryError::Storage(StorageError::UploadBusy)) => Ok(in_progress(
            repo,
            id,
            len,
            StatusCode::RANGE_NOT_SATISFIABLE,
        )),
        Err(e) => Err(e),
    }
}

pub async fn finish<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let digest = parse_digest(query.first("digest").ok_or_else(|| {
        RegistryError::BlobUploadInvalid(
            "the digest query parameter is required to finish an upload".into(),
        )
    })?)?;
    let len = match offset_for(registry, repo, id, headers).await? {
        Ok(len) => len,
        Err(out_of_order) => return Ok(out_of_order),
    };
    if len == 0
        && let Some(body_len) = whole_blob_len(registry, headers)
    {
        registry.upload_hashes.take(id);
        return store_whole(registry, repo, Some(id), &digest, body_len, body).await;
    }
    let mut hasher = resume_hasher(registry, repo, id, len, digest.algorithm()).await?;
    if !is_empty_body(headers) {
        hasher = append(registry, repo, id, len, body, hasher).await?.1;
    }
    verify_and_commit(registry, repo, id, &digest, hasher).await
}

/// The upload's current length, or the 416 answer (with the range received so far) when the
/// request's `Content-Range` does not start exactly there.
async fn offset_for<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: &str,
    headers: &HeaderMap,
) -> Result<Result<u64, Response>, RegistryError> {
    let len = registry
        .store
        .upload_len(repo, id)
        .await
        .map_err(upload_error)?;
    match content_range_start(headers)? {
        Some(start) if start != len => Ok(Err(in_progress(
            repo,
            id,
            len,
            StatusCode::RANGE_NOT_SATISFIABLE,
        ))),
        _ => Ok(Ok(len)),
    }
}

pub async fn cancel<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: &str,
) -> Result<Response, RegistryError> {
    registry
        .store
        .cancel_upload(repo, id)
        .await
        .map_err(upload_error)?;
    registry.upload_hashes.take(id);
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}

async fn append<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: &str,
    offset: u64,
    body: Body,
    hasher: Hasher,
) -> Result<(u64, Hasher), RegistryError> {
    let _in_flight = registry.metrics.upload_started();
    let result = registry
        .store
        .append_upload(repo, id, offset, body_stream(body), hasher)
        .await
        .map_err(upload_error);
    if let Ok((new_len, _)) = &result {
        registry.metrics.bytes_received(new_len - offset);
    }
    result
}

/// The hash state for an upload at `len` bytes: the one kept in memory when it matches, else
/// the checkpoint the backend saved, else rebuilt from the stored bytes.
async fn resume_hasher<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: &str,
    len: u64,
    algorithm_if_new: Algorithm,
) -> Result<Hasher, RegistryError> {
    if len == 0 {
        registry.upload_hashes.take(id);
        return Ok(algorithm_if_new.hasher());
    }
    if let Some(hasher) = registry.upload_hashes.take_at(id, len) {
        return Ok(hasher);
    }
    // Another replica took the last chunk: continue from the state it saved with it.
    if let Some((at, hasher)) = registry
        .store
        .upload_checkpoint(repo, id)
        .await
        .map_err(upload_error)?
        && at == len
    {
        return Ok(hasher);
    }
    rehash(registry, repo, id, algorithm_if_new).await
}

async fn rehash<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: &str,
    algorithm: Algorithm,
) -> Result<Hasher, RegistryError> {
    let mut hasher = algorithm.hasher();
    let mut stored = registry
        .store
        .read_upload(repo, id)
        .await
        .map_err(upload_error)?;
    while let Some(chunk) = stored.stream.next().await {
        let chunk = chunk.map_err(|e| StorageError::Io {
            path: format!("upload {id}"),
            source: e,
        })?;
        hasher.update(&chunk);
    }
    Ok(hasher)
}

/// The bytes are not the blob the client named: the upload goes, and so does the request.
async fn discard_mismatch<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: Option<&str>,
    expected: &Digest,
    actual: &Digest,
) -> RegistryError {
    tracing::info!(repository = %repo, expected = %expected, actual = %actual, "upload digest mismatch; upload discarded");
    if let Some(id) = id {
        let _ = registry.store.cancel_upload(repo, id).await;
    }
    RegistryError::DigestMismatch
}

/// The body's declared length when the whole blob comes in this request and is small enough
/// for the backend's one-write path.
fn whole_blob_len<S: Store>(registry: &Registry<S>, headers: &HeaderMap) -> Option<u64> {
    let len: u64 = header_str(headers, header::CONTENT_LENGTH)?
        .trim()
        .parse()
        .ok()?;
    (len > 0 && len <= registry.store.whole_blob_limit()).then_some(len)
}

/// A whole blob in one request: read into memory (it is small), hashed, verified, then
/// written once. Nothing is stored when the digest does not match.
async fn store_whole<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: Option<&str>,
    digest: &Digest,
    len: u64,
    body: Body,
) -> Result<Response, RegistryError> {
    let _in_flight = registry.metrics.upload_started();
    let limit = usize::try_from(len).unwrap_or(usize::MAX);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        RegistryError::BlobUploadInvalid(format!("the blob's body did not arrive whole: {e}"))
    })?;
    registry.metrics.bytes_received(bytes.len() as u64);
    let actual = Digest::of(digest.algorithm(), &bytes);
    if &actual != digest {
        return Err(discard_mismatch(registry, repo, id, digest, &actual).await);
    }
    registry.gc.touch([digest]);
    registry
        .store
        .commit_whole_blob(repo, id, digest, bytes)
        .await
        .map_err(upload_error)?;
    tracing::debug!(repository = %repo, digest = %digest, "blob stored");
    Ok(created(repo, digest))
}

async fn verify_and_commit<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    id: &str,
    digest: &Digest,
    hasher: Hasher,
) -> Result<Response, RegistryError> {
    // Chunks were hashed as sha256 before the client named its algorithm: hash once more only
    // in that rare case (a chunked sha512 upload).
    let hasher = if hasher.algorithm() == digest.algorithm() {
        hasher
    } else {
        rehash(registry, repo, id, digest.algorithm()).await?
    };
    let actual = hasher.finish();
    if &actual != digest {
        return Err(discard_mismatch(registry, repo, Some(id), digest, &actual).await);
    }
    // The same blob may exist already, unreferenced and old: keep garbage collection off it.
    registry.gc.touch([digest]);
    registry
        .store
        .commit_upload(repo, id, digest)
        .await
        .map_err(upload_error)?;
    tracing::debug!(repository = %repo, digest = %digest, "blob stored");
    Ok(created(repo, digest))
}
