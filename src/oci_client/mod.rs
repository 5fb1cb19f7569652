//! A client of the OCI Distribution API on `reqwest`, for the jobs that talk to registries
//! other than through the admin API: `wharf replicate` reads one registry and writes another.
//! It does the registry handshake every client needs (Basic, or the Docker token flow with a
//! token per scope, cached until it expires), retries what a registry asks to be retried (429
//! with `Retry-After`, 502/503/504, connections that fail) with backoff, follows redirects
//! (blob downloads from a bucket) without sending credentials to another host, and streams
//! blobs: no blob is ever held whole in memory.

mod auth;
pub mod challenge;
pub mod credentials;
mod retry;

use crate::registry::digest::{Algorithm, Digest};
use auth::Auth;
pub use credentials::Credentials;
use futures_util::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
pub use retry::RetryPolicy;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Every manifest media type a copy must be able to read, so that the source answers with the
/// bytes it stores rather than converting them.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.artifact.manifest.v1+json",
];
/// Manifests larger than this are refused (the registry's own limit).
pub const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;
const PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{url} is not an http:// or https:// URL with a host")]
    Url { url: String },
    #[error("cannot read the CA file {path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("cannot reach {host}: {message}")]
    Connect { host: String, message: String },
    #[error(
        "{what} on {host}: HTTP {status}{}{}",
        code_suffix(code),
        message_suffix(message)
    )]
    Status {
        what: String,
        host: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{host} refused the credentials ({what}): {message}")]
    Unauthorized {
        what: String,
        host: String,
        message: String,
    },
    #[error("{what} on {host}: {message}")]
    Protocol {
        what: String,
        host: String,
        message: String,
    },
}

fn code_suffix(code: &str) -> String {
    if code.is_empty() {
        String::new()
    } else {
        format!(" {code}")
    }
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl OciError {
    /// Worth trying again later in the same run (the registry was busy or unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            OciError::Connect { .. } => true,
            OciError::Status { status, .. } => retry::retried_status(*status),
            _ => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            OciError::Status { status, .. } => Some(*status),
            OciError::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }
}

pub type OciResult<T> = Result<T, OciError>;

/// Where and how to reach one registry.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub url: String,
    pub credentials: Option<Credentials>,
    /// PEM file of the CA(s) to trust for https, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (tests only).
    pub insecure: bool,
}

/// A manifest as the registry stores it: the bytes, their media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// What a HEAD of a manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
}

/// A blob's body as it arrives, with its announced length.
pub struct BlobBody {
    pub length: Option<u64>,
    pub stream: std::pin::Pin<Box<dyn Stream<Item = Result<bytes::Bytes, OciError>> + Send>>,
}

/// How a blob push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mounted {
    /// The registry linked the blob from the other repository: no body sent.
    Yes,
    /// The registry opened an upload instead; its location is kept for the push.
    No,
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    host: String,
    auth: Auth,
    retry: RetryPolicy,
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Catalog {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

impl Client {
    pub fn new(endpoint: &Endpoint, retry: RetryPolicy) -> OciResult<Client> {
        let bad_url = || OciError::Url {
            url: endpoint.url.clone(),
        };
        let base = Url::parse(endpoint.url.trim_end_matches('/')).map_err(|_| bad_url())?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad_url());
        }
        let host = match base.port() {
            Some(port) => format!("{}:{port}", base.host_str().unwrap_or_default()),
            None => base.host_str().unwrap_or_default().to_owned(),
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // Between two reads of a body, not the whole transfer: a large blob may take hours.
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(16);
        if let Some(path) = &endpoint.ca_file {
            let ca_error = |message: String| OciError::Ca {
                path: path.clone(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no certificate in it".into()));
            }
            builder = builder.tls_certs_only(certs);
        }
        if endpoint.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        // reqwest is built without a default provider so that the whole binary uses ring; a
        // library caller (tests, other binaries) may not have installed it yet.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = builder.build().map_err(|e| OciError::Connect {
            host: host.clone(),
            message: e.to_string(),
        })?;
        Ok(Client {
            auth: Auth::new(http.clone(), endpoint.credentials.clone()),
            http,
            base,
            host,
            retry,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path_and_query: &str) -> Url {
        let mut url = self.base.clone();
        match path_and_query.split_once('?') {
            Some((path, query)) => {
                url.set_path(path);
                url.set_query(Some(query));
            }
            None => url.set_path(path_and_query),
        }
        url
    }

    /// Sends the request `build` makes (again for every retry and after authenticating) and
    /// returns the response whatever its status, except those the retry policy retries.
    async fn send(
        &self,
        what: &str,
        scope: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> OciResult<Response> {
        let mut attempt = 0;
        let mut authenticated = false;
        loop {
            let request = self.auth.authorize(build(), scope);
            let outcome = request.send().await;
            let response = match outcome {
                Ok(response) => response,
                Err(e) if attempt < self.retry.attempts => {
                    tracing::debug!(host = %self.host, what, error = %e, "request failed, retrying");
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    return Err(OciError::Connect {
                        host: self.host.clone(),
                        message: without_url(&e),
                    });
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !authenticated {
                authenticated = true;
                let challenge = response
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if self
                    .auth
                    .answer(challenge.as_deref(), scope, &self.host)
                    .await?
                {
                    continue;
                }
                return Err(self.unauthorized(what, response).await);
            }
            if status == StatusCode::UNAUTHORIZED {
                return Err(self.unauthorized(what, response).await);
            }
            if retry::retried_status(status.as_u16()) && attempt < self.retry.attempts {
                let after = retry::retry_after(response.headers());
                tracing::debug!(host = %self.host, what, status = status.as_u16(), "registry asked to retry");
                tokio::time::sleep(self.retry.delay(attempt, after)).await;
                attempt += 1;
                continue;
            }
            return Ok(response);
        }
    }

    async fn unauthorized(&self, what: &str, response: Response) -> OciError {
        let (_, message) = error_body(response).await;
        OciError::Unauthorized {
            what: what.to_owned(),
            host: self.host.clone(),
            message,
        }
    }

    async fn failure(&self, what: &str, response: Response) -> OciError {
        let status = response.status().as_u16();
        let (code, message) = error_body(response).await;
        OciError::Status {
            what: what.to_owned(),
            host: self.host.clone(),
            status,
            code,
            message,
        }
    }

    fn protocol(&self, what: &str, message: impl Into<String>) -> OciError {
        OciError::Protocol {
            what: what.to_owned(),
            host: self.host.clone(),
            message: message.into(),
        }
    }

    /// The manifest `reference` (tag or digest) names, as stored; `None` when it is not there.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> OciResult<Option<Manifest>> {
        let what = format!("GET manifest {repo}:{reference}");
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let response = self
            .send(&what, &pull(repo), || {
                self.http
                    .get(url.clone())
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", "))
            })
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.failure(&what, response).await),
        }
        let media_type = header_string(response.headers(), CONTENT_TYPE)
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_owned())
            .unwrap_or_default();
        let announced = header_string(response.headers(), "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok());
        let bytes = read_limited(response, MANIFEST_LIMIT)
            .await
            .map_err(|m| self.protocol(&what, m))?;
        let digest = match reference.parse::<Digest>() {
            Ok(wanted) => {
                if Digest::of(wanted.algorithm(), &bytes) != wanted {
                    return Err(self.protocol(&what, "the manifest does not match its digest"));
                }
                wanted
            }
            Err(_) => match announced {
                Some(d) if Digest::of(d.algorithm(), &bytes) == d => d,
                Some(_) => {
                    return Err(self.protocol(
                        &what,
                        "the manifest does not match the digest the registry announced",
                    ));
                }
                None => Digest::of(Algorithm::Sha256, &bytes),
            },
        };
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            embedded_media_type(&bytes).unwrap_or(media_type)
        } else {
            media_type
        };
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// What the registry has under `reference`, without the body; `None` when nothing.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> OciResult<Option<ManifestHead>> {
        let what = format!("HEAD manifest {repo}:{reference}");
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let response = self
            .send(&what, &pull(repo), || {
                self.http
                    .head(url.clone())
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", "))
            })
            .await?;
        match response.status() {
            StatusCode::OK => Ok(Some(ManifestHead {
                digest: header_string(response.headers(), "docker-content-digest")
                    .and_then(|d| d.parse::<Digest>().ok()),
                media_type: header_string(response.headers(), CONTENT_TYPE),
            })),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure(&what, response).await),
        }
    }

    /// Stores a manifest under `reference` (its digest, or a tag). Returns whether the
    /// registry said it indexed the manifest's subject (`OCI-Subject`): when it does not, the
    /// client keeps the referrers tag itself.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> OciResult<bool> {
        let what = format!("PUT manifest {repo}:{reference}");
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let body = bytes::Bytes::from(manifest.bytes.clone());
        let response = self
            .send(&what, &push(repo), || {
                self.http
                    .put(url.clone())
                    .header(CONTENT_TYPE, manifest.media_type.as_str())
                    .body(body.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED && response.status() != StatusCode::OK {
            return Err(self.failure(&what, response).await);
        }
        Ok(response.headers().contains_key("oci-subject"))
    }

    /// Deletes what `reference` names (a tag alone, where the registry allows it, or a
    /// manifest by digest). `false` when it was not there.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> OciResult<bool> {
        let what = format!("DELETE manifest {repo}:{reference}");
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let response = self
            .send(&what, &format!("repository:{repo}:delete"), || {
                self.http.delete(url.clone())
            })
            .await?;
        match response.status() {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.failure(&what, response).await),
        }
    }

    /// Every tag of `repo`, page by page; empty when the repository does not exist.
    pub async fn list_tags(&self, repo: &str) -> OciResult<Vec<String>> {
        let what = format!("list the tags of {repo}");
        let first = format!("/v2/{repo}/tags/list?n={PAGE}");
        let mut tags = Vec::new();
        self.pages(&what, &pull(repo), first, |body| {
            let page: TagList = serde_json::from_slice(body).ok()?;
            tags.extend(page.tags.unwrap_or_default());
            Some(())
        })
        .await?;
        Ok(tags)
    }

    /// Every repository the registry lists (`/v2/_catalog`), page by page.
    pub async fn catalog(&self) -> OciResult<Vec<String>> {
        let mut names = Vec::new();
        self.pages(
            "list the repositories",
            "registry:catalog:*",
            format!("/v2/_catalog?n={PAGE}"),
            |body| {
                let page: Catalog = serde_json::from_slice(body).ok()?;
                names.extend(page.repositories.unwrap_or_default());
                Some(())
            },
        )
        .await?;
        Ok(names)
    }

    async fn pages(
        &self,
        what: &str,
        scope: &str,
        first: String,
        mut take: impl FnMut(&[u8]) -> Option<()>,
    ) -> OciResult<()> {
        let mut next = Some(first);
        let mut seen = std::collections::HashSet::new();
        while let Some(path) = next.take() {
            // A registry whose Link points back at a page already read would loop forever.
            if !seen.insert(path.clone()) {
                return Err(self.protocol(what, "the registry's pages link in a circle"));
            }
            let url = self.url(&path);
            let response = self
                .send(what, scope, || self.http.get(url.clone()))
                .await?;
            match response.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Ok(()),
                _ => return Err(self.failure(what, response).await),
            }
            next = header_string(response.headers(), "link")
                .and_then(|l| challenge::next_link(&l))
                .map(|link| match Url::parse(&link) {
                    Ok(absolute) => match absolute.query() {
                        Some(q) => format!("{}?{q}", absolute.path()),
                        None => absolute.path().to_owned(),
                    },
                    Err(_) => link,
                });
            let body = read_limited(response, 16 * MANIFEST_LIMIT)
                .await
                .map_err(|m| self.protocol(what, m))?;
            take(&body).ok_or_else(|| {
                self.protocol(what, "the listing is not the JSON the API defines")
            })?;
        }
        Ok(())
    }

    /// The manifests that refer to `digest` (signatures, SBOMs…), from the referrers API or,
    /// where the registry has none, the `<alg>-<hex>` tag clients keep instead. The second
    /// value says which: `true` when the registry answers the API.
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> OciResult<(Vec<serde_json::Value>, bool)> {
        let what = format!("list the referrers of {repo}@{digest}");
        let url = self.url(&format!("/v2/{repo}/referrers/{digest}"));
        let response = self
            .send(&what, &pull(repo), || {
                self.http
                    .get(url.clone())
                    .header(ACCEPT, "application/vnd.oci.image.index.v1+json")
            })
            .await?;
        let is_index = header_string(response.headers(), CONTENT_TYPE)
            .is_some_and(|t| t.starts_with("application/vnd.oci.image.index.v1+json"));
        match response.status() {
            StatusCode::OK if is_index => {
                let body = read_limited(response, MANIFEST_LIMIT)
                    .await
                    .map_err(|m| self.protocol(&what, m))?;
                return Ok((index_entries(&body), true));
            }
            StatusCode::OK
            | StatusCode::NOT_FOUND
            | StatusCode::BAD_REQUEST
            | StatusCode::METHOD_NOT_ALLOWED => {}
            _ => return Err(self.failure(&what, response).await),
        }
        let fallback = referrers_tag(digest);
        Ok(match self.get_manifest(repo, &fallback).await? {
            Some(index) => (index_entries(&index.bytes), false),
            None => (Vec::new(), false),
        })
    }

    /// The blob's size in `repo`, or `None` when `repo` cannot read it.
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> OciResult<Option<u64>> {
        let what = format!("HEAD blob {repo}@{digest}");
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let response = self
            .send(&what, &pull(repo), || self.http.head(url.clone()))
            .await?;
        match response.status() {
            StatusCode::OK => Ok(Some(
                header_string(response.headers(), CONTENT_LENGTH)
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure(&what, response).await),
        }
    }

    /// The blob's body as a stream (a redirect to a bucket is followed).
    pub async fn get_blob(&self, repo: &str, digest: &Digest) -> OciResult<BlobBody> {
        let what = format!("GET blob {repo}@{digest}");
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let response = self
            .send(&what, &pull(repo), || self.http.get(url.clone()))
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self.failure(&what, response).await);
        }
        let length = response.content_length();
        let host = self.host.clone();
        let stream = response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| OciError::Connect {
                host: host.clone(),
                message: format!("the blob download broke off: {}", without_url(&e)),
            })
        });
        Ok(BlobBody {
            length,
            stream: Box::pin(stream),
        })
    }

    /// Asks `repo` to link the blob from `from` (cross-repository mount). Opens an upload when
    /// the registry declines; its location is returned for `push_blob`.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
    ) -> OciResult<(Mounted, Option<Url>)> {
        let what = format!("mount blob {digest} from {from} into {repo}");
        let url = self.url(&format!(
            "/v2/{repo}/blobs/uploads/?mount={digest}&from={}",
            challenge::query_encode(from)
        ));
        let scope = format!("{} repository:{from}:pull", push(repo));
        let response = self
            .send(&what, &scope, || {
                self.http.post(url.clone()).header(CONTENT_LENGTH, "0")
            })
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok((Mounted::Yes, None)),
            StatusCode::ACCEPTED => Ok((Mounted::No, Some(self.location(&what, &response)?))),
            _ => Err(self.failure(&what, response).await),
        }
    }

    fn location(&self, what: &str, response: &Response) -> OciResult<Url> {
        let location = header_string(response.headers(), LOCATION)
            .ok_or_else(|| self.protocol(what, "the upload has no Location"))?;
        self.base.join(&location).map_err(|_| {
            self.protocol(
                what,
                format!("the upload Location {location:?} is not a URL"),
            )
        })
    }

    /// Opens an upload in `repo`.
    pub async fn start_upload(&self, repo: &str) -> OciResult<Url> {
        let what = format!("start an upload in {repo}");
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let response = self
            .send(&what, &push(repo), || {
                self.http.post(url.clone()).header(CONTENT_LENGTH, "0")
            })
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.failure(&what, response).await);
        }
        self.location(&what, &response)
    }

    /// Sends the whole blob to an open upload in one PUT whose body is `body`, streamed.
    /// The body cannot be replayed: a failure here is retried by the caller with a new stream.
    pub async fn finish_upload(
        &self,
        repo: &str,
        upload: Url,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> OciResult<()> {
        let what = format!("PUT blob {digest} into {repo}");
        let mut url = upload;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let request = self
            .http
            .put(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        let response = self
            .auth
            .authorize(request, &push(repo))
            .send()
            .await
            .map_err(|e| OciError::Connect {
                host: self.host.clone(),
                message: without_url(&e),
            })?;
        match response.status() {
            StatusCode::CREATED => Ok(()),
            _ => Err(self.failure(&what, response).await),
        }
    }

    /// Sends one chunk of an upload (`PATCH` with its range); returns the next location.
    pub async fn upload_chunk(
        &self,
        repo: &str,
        upload: Url,
        offset: u64,
        chunk: bytes::Bytes,
    ) -> OciResult<Url> {
        let what = format!("PATCH an upload in {repo}");
        let end = offset + chunk.len() as u64 - 1;
        let response = self
            .send(&what, &push(repo), || {
                self.http
                    .patch(upload.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("content-range", format!("{offset}-{end}"))
                    .body(chunk.clone())
            })
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.failure(&what, response).await);
        }
        self.location(&what, &response)
    }

    /// Closes a chunked upload with the digest of everything sent.
    pub async fn close_upload(&self, repo: &str, upload: Url, digest: &Digest) -> OciResult<()> {
        let what = format!("PUT blob {digest} into {repo}");
        let mut url = upload;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let response = self
            .send(&what, &push(repo), || {
                self.http.put(url.clone()).header(CONTENT_LENGTH, "0")
            })
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(()),
            _ => Err(self.failure(&what, response).await),
        }
    }

    /// Ends an upload that will not be finished, so the registry need not wait for it to age.
    pub async fn cancel_upload(&self, repo: &str, upload: Url) {
        let request = self
            .auth
            .authorize(self.http.request(Method::DELETE, upload), &push(repo));
        let _ = request.send().await;
    }
}

fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// The fallback tag under which clients list a subject's referrers where a registry has no
/// referrers API (`sha256-<hex>`).
pub fn referrers_tag(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().name(), digest.hex())
}

/// The descriptors of an index's `manifests`.
pub fn index_entries(bytes: &[u8]) -> Vec<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("manifests").and_then(|m| m.as_array().cloned()))
        .unwrap_or_default()
}

fn embedded_media_type(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()?
        .get("mediaType")?
        .as_str()
        .map(str::to_owned)
}

fn header_string(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
}

/// The body, refused once it grows past `limit`.
async fn read_limited(response: Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|l| l > limit as u64) {
        return Err(format!("the body is larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the body broke off: {}", without_url(&e)))?;
        if body.len() + chunk.len() > limit {
            return Err(format!("the body is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The OCI error code and message of an error body (or the start of whatever it is).
async fn error_body(response: Response) -> (String, String) {
    let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let first = parsed
        .as_ref()
        .and_then(|v| v.get("errors")?.get(0).cloned());
    match first {
        Some(error) => (
            error["code"].as_str().unwrap_or_default().to_owned(),
            error["message"].as_str().unwrap_or_default().to_owned(),
        ),
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            (String::new(), text.trim().to_owned())
        }
    }
}

/// A reqwest error's text without the URL it carries (upload URLs hold session state).
fn without_url(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_body() || error.is_decode() {
        "the body broke off".to_owned()
    } else if error.is_redirect() {
        "too many redirects".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests;
