//! Blob reads (GET/HEAD with Range) and blob deletion.

use super::{DOCKER_CONTENT_DIGEST, empty, header_str, hv};
use crate::registry::Registry;
use crate::registry::digest::Digest;
use crate::registry::error::RegistryError;
use crate::registry::names::RepoName;
use crate::registry::range::{self, RangeRequest};
use crate::registry::storage::{StorageError, Store};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;

/// Multi-range responses are assembled in memory; beyond this many bytes the whole blob is sent
/// instead (RFC 9110 lets a server ignore Range).
const MAX_MULTIPART_BYTES: u64 = 16 << 20;

pub async fn get<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, RegistryError> {
    // A HEAD is how clients decide to skip an upload and reference the blob as it is: from now
    // on garbage collection keeps it (see `gc`).
    if !with_body {
        registry.gc.touch([digest]);
    }
    if !registry.store.blob_linked(repo, digest).await? {
        return Err(RegistryError::BlobUnknown);
    }
    let size = registry
        .store
        .blob_size(digest)
        .await?
        .ok_or(RegistryError::BlobUnknown)?;
    if with_body && let Some(url) = registry.store.blob_url(digest).await? {
        return Ok(empty(
            StatusCode::TEMPORARY_REDIRECT,
            &[
                ("location", hv(&url)),
                (DOCKER_CONTENT_DIGEST, hv(&digest.to_string())),
            ],
        ));
    }
    let digest_header = hv(&digest.to_string());
    let common = |r: &mut Response| {
        let h = r.headers_mut();
        h.insert(DOCKER_CONTENT_DIGEST, digest_header.clone());
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::ETAG, hv(&format!("\"{digest}\"")));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=31536000"),
        );
    };
    let requested = range::parse(header_str(headers, header::RANGE), size);
    let ranges = match requested {
        RangeRequest::Unsatisfiable => {
            let mut r = empty(StatusCode::RANGE_NOT_SATISFIABLE, &[]);
            r.headers_mut()
                .insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
            common(&mut r);
            return Ok(r);
        }
        RangeRequest::Ranges(ranges)
            if ranges.len() == 1
                || ranges.iter().map(|(s, e)| e - s).sum::<u64>() <= MAX_MULTIPART_BYTES =>
        {
            Some(ranges)
        }
        _ => None,
    };
    let mut response = match ranges {
        None => {
            let mut r = Response::new(body(registry, digest, None, with_body).await?);
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, hv(&size.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Some(ranges) if ranges.len() == 1 => {
            let (start, end) = ranges[0];
            let mut r = Response::new(body(registry, digest, Some((start, end)), with_body).await?);
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = r.headers_mut();
            h.insert(header::CONTENT_LENGTH, hv(&(end - start).to_string()));
            h.insert(
                header::CONTENT_RANGE,
                hv(&format!("bytes {start}-{}/{size}", end - 1)),
            );
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Some(ranges) => multipart(registry, digest, size, &ranges, with_body).await?,
    };
    common(&mut response);
    Ok(response)
}

/// The blob (or a range of it) as a streamed body; empty for HEAD.
async fn body<S: Store>(
    registry: &Registry<S>,
    digest: &Digest,
    range: Option<(u64, u64)>,
    with_body: bool,
) -> Result<Body, RegistryError> {
    if !with_body {
        return Ok(Body::empty());
    }
    let blob = registry
        .store
        .read_blob(digest, range)
        .await
        .map_err(blob_error)?;
    registry.metrics.bytes_sent(blob.len);
    Ok(Body::from_stream(blob.stream))
}

async fn multipart<S: Store>(
    registry: &Registry<S>,
    digest: &Digest,
    size: u64,
    ranges: &[(u64, u64)],
    with_body: bool,
) -> Result<Response, RegistryError> {
    let boundary = uuid::Uuid::new_v4().simple().to_string();
    let mut body = Vec::new();
    for &(start, end) in ranges {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {start}-{}/{size}\r\n\r\n",
                end - 1
            )
            .as_bytes(),
        );
        let mut part = registry
            .store
            .read_blob(digest, Some((start, end)))
            .await
            .map_err(blob_error)?;
        while let Some(chunk) = part.stream.next().await {
            body.extend_from_slice(&chunk.map_err(|e| StorageError::Io {
                path: digest.to_string(),
                source: e,
            })?);
        }
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let len = body.len();
    registry
        .metrics
        .bytes_sent(if with_body { len as u64 } else { 0 });
    let mut r = Response::new(if with_body {
        Body::from(body)
    } else {
        Body::empty()
    });
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        hv(&format!("multipart/byteranges; boundary={boundary}")),
    );
    Ok(r)
}

fn blob_error(e: StorageError) -> RegistryError {
    match e {
        StorageError::NotFound => RegistryError::BlobUnknown,
        other => other.into(),
    }
}

pub async fn delete<S: Store>(
    registry: &Registry<S>,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    if !registry.config.deletes_enabled {
        return Err(RegistryError::Unsupported(
            "deletes are disabled on this registry",
        ));
    }
    if !registry.store.unlink_blob(repo, digest).await? {
        return Err(RegistryError::BlobUnknown);
    }
    tracing::info!(repository = %repo, digest = %digest, "blob unlinked");
    Ok(empty(
        StatusCode::ACCEPTED,
        &[(DOCKER_CONTENT_DIGEST, hv(&digest.to_string()))],
    ))
}
