//! A small client for the registry's admin API (`src/registry/admin.rs`): the operator creates,
//! rotates, updates and revokes the robot accounts behind registry-sourced credentials, and
//! `wharf gc` starts garbage collection, and `wharf retention` lists and deletes, also on other
//! registries. One connection per call (calls are rare); HTTPS trusts only the CA given. A
//! registry that answers with a Docker token challenge gets the token flow: a token for the
//! challenged scope from its realm, with the basic credentials, cached per scope.

use crate::oci_client::challenge::{BearerChallenge, next_link, query_encode};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// For robot calls; garbage collection gets `GC_TIMEOUT`.
const TIMEOUT: Duration = Duration::from_secs(10);
const GC_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("cannot reach the registry at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("the registry's CA certificate is not valid PEM")]
    BadCa,
    #[error("the registry answered {status} to {what}: {message}")]
    Status {
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("the registry's answer to {0} is not understood")]
    Decode(&'static str),
}

impl AdminClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            AdminClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A robot as the admin API returns it on create and rotate (with its new secret).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedRobot {
    pub username: String,
    pub secret: String,
    pub expires_at: Option<i64>,
}

impl std::fmt::Display for IssuedRobot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.username)
    }
}

pub struct AdminClient {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `None` for anonymous access (an endpoint without credentials).
    authorization: Option<String>,
    /// Bearer tokens by scope, for registries that challenge for them.
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl AdminClient {
    /// `host:port` of the registry; `ca_pem` switches to HTTPS trusting only that CA.
    pub fn new(
        host: &str,
        port: u16,
        ca_pem: Option<&str>,
        username: &str,
        password: &str,
    ) -> Result<AdminClient, AdminClientError> {
        let tls = match ca_pem {
            None => None,
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                    roots
                        .add(cert.map_err(|_| AdminClientError::BadCa)?)
                        .map_err(|_| AdminClientError::BadCa)?;
                }
                if roots.is_empty() {
                    return Err(AdminClientError::BadCa);
                }
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|_| AdminClientError::BadCa)?
                .with_root_certificates(roots)
                .with_no_client_auth();
                Some(Arc::new(config))
            }
        };
        let authorization = (!username.is_empty()).then(|| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )
        });
        Ok(AdminClient {
            host: host.to_owned(),
            port,
            tls,
            authorization,
            tokens: Default::default(),
        })
    }

    fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn call(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), AdminClientError> {
        self.call_within(TIMEOUT, what, method, path, body).await
    }

    async fn call_within(
        &self,
        timeout: Duration,
        what: &'static str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), AdminClientError> {
        self.within(timeout, what, self.call_once(method, path, body))
            .await
    }

    /// `call` bounded by `timeout`, failing with what was being done.
    async fn within<T>(
        &self,
        timeout: Duration,
        what: &str,
        call: impl std::future::Future<Output = Result<T, AdminClientError>>,
    ) -> Result<T, AdminClientError> {
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| AdminClientError::Connect {
                endpoint: self.endpoint(),
                message: format!("no answer to {what} within {}s", timeout.as_secs()),
            })?
    }

    /// GET a JSON document (admin API or registry API), `None` on 404.
    pub async fn get_json(
        &self,
        what: &'static str,
        path: &str,
    ) -> Result<Option<serde_json::Value>, AdminClientError> {
        let (status, bytes) = self.call(what, Method::GET, path, None).await?;
        match status {
            StatusCode::OK => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| AdminClientError::Decode(what)),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(Self::fail(what, other, &bytes)),
        }
    }

    /// DELETE a registry API path (a tag or a manifest); returns whether it existed.
    pub async fn delete_path(
        &self,
        what: &'static str,
        path: &str,
    ) -> Result<bool, AdminClientError> {
        let (status, bytes) = self.call(what, Method::DELETE, path, None).await?;
        match status {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(Self::fail(what, other, &bytes)),
        }
    }

    /// Runs garbage collection (`request` as `POST /admin/v1/gc` takes it); returns the report.
    pub async fn collect_garbage(
        &self,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, AdminClientError> {
        let (status, bytes) = self
            .call_within(
                GC_TIMEOUT,
                "garbage collection",
                Method::POST,
                "/admin/v1/gc",
                Some(request),
            )
            .await?;
        match status {
            StatusCode::OK => serde_json::from_slice(&bytes)
                .map_err(|_| AdminClientError::Decode("garbage collection")),
            other => Err(Self::fail("garbage collection", other, &bytes)),
        }
    }

    /// HEAD a manifest by tag: its digest, `None` when the tag does not exist.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, AdminClientError> {
        const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
        let what = "read a manifest's digest";
        let path = format!("/v2/{repository}/manifests/{reference}");
        let (status, headers, bytes) = self
            .within(
                TIMEOUT,
                what,
                self.exchange(Method::HEAD, &path, None, Some(ACCEPT)),
            )
            .await?;
        match status {
            StatusCode::OK => headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(|d| Some(d.to_owned()))
                .ok_or(AdminClientError::Decode(what)),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(Self::fail(what, other, &bytes)),
        }
    }

    /// GET a JSON document and the path of the next page from its `Link` header (RFC 5988, as
    /// `/v2/<name>/tags/list` and `/v2/_catalog` paginate).
    pub async fn get_page(
        &self,
        what: &'static str,
        path: &str,
    ) -> Result<Option<(serde_json::Value, Option<String>)>, AdminClientError> {
        let (status, headers, bytes) = self
            .within(TIMEOUT, what, self.exchange(Method::GET, path, None, None))
            .await?;
        match status {
            StatusCode::OK => {
                let value =
                    serde_json::from_slice(&bytes).map_err(|_| AdminClientError::Decode(what))?;
                let next = headers
                    .get("link")
                    .and_then(|v| v.to_str().ok())
                    .and_then(next_link);
                Ok(Some((value, next)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(Self::fail(what, other, &bytes)),
        }
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), AdminClientError> {
        let (status, _, bytes) = self.exchange(method, path, body, None).await?;
        Ok((status, bytes))
    }

    /// One request, answering a Bearer challenge once: with a cached token for the challenged
    /// scope, or a new one from the realm.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        accept: Option<&str>,
    ) -> Result<(StatusCode, axum::http::HeaderMap, Bytes), AdminClientError> {
        let cached = self.cached_token(path);
        let first = self
            .exchange_with(
                method.clone(),
                path,
                body.clone(),
                accept,
                cached.as_deref().or(self.authorization.as_deref()),
            )
            .await?;
        if first.0 != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let Some(challenge) = first
            .1
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(BearerChallenge::parse)
        else {
            return Ok(first);
        };
        let token = self.fetch_token(&challenge).await?;
        let bearer = format!("Bearer {token}");
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(challenge.scope.clone(), bearer.clone());
        self.exchange_with(method, path, body, accept, Some(&bearer))
            .await
    }

    /// A token cached for the repository `path` names (`/v2/<name>/…`).
    fn cached_token(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix("/v2/")?;
        let end = ["/manifests/", "/tags/", "/blobs/", "/referrers/"]
            .iter()
            .filter_map(|m| rest.find(m))
            .min()?;
        let prefix = format!("repository:{}:", &rest[..end]);
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .iter()
            .find(|(scope, _)| scope.starts_with(&prefix))
            .map(|(_, t)| t.clone())
    }

    async fn fetch_token(&self, challenge: &BearerChallenge) -> Result<String, AdminClientError> {
        const WHAT: &str = "get a registry token";
        let bad_realm = || AdminClientError::Connect {
            endpoint: challenge.realm.clone(),
            message: "the token realm is not an http(s) URL this client can reach".into(),
        };
        let (tls, rest) = match challenge.realm.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(bad_realm()),
        };
        let (authority, realm_path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad_realm())?),
            None => (authority, if tls { 443 } else { 80 }),
        };
        if tls != self.tls.is_some() {
            return Err(bad_realm());
        }
        let realm = AdminClient {
            host: host.to_owned(),
            port,
            tls: self.tls.clone(),
            authorization: self.authorization.clone(),
            tokens: Default::default(),
        };
        let separator = if realm_path.contains('?') { '&' } else { '?' };
        let query = format!(
            "{realm_path}{separator}service={}&scope={}",
            query_encode(&challenge.service),
            query_encode(&challenge.scope)
        );
        let (status, _, bytes) = realm
            .within(
                TIMEOUT,
                WHAT,
                realm.exchange_with(
                    Method::GET,
                    &query,
                    None,
                    None,
                    realm.authorization.as_deref(),
                ),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(Self::fail(WHAT, status, &bytes));
        }
        let body: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| AdminClientError::Decode(WHAT))?;
        body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .map(str::to_owned)
            .ok_or(AdminClientError::Decode(WHAT))
    }

    async fn exchange_with(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<(StatusCode, axum::http::HeaderMap, Bytes), AdminClientError> {
        let connect_error = |message: String| AdminClientError::Connect {
            endpoint: self.endpoint(),
            message,
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let body_bytes = body.map(|b| serde_json::to_vec(&b).unwrap_or_default());
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.endpoint())
            .header("content-type", "application/json");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let request = request
            .body(Full::new(Bytes::from(body_bytes.unwrap_or_default())))
            .map_err(|e| connect_error(e.to_string()))?;
        let response = match &self.tls {
            None => {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| connect_error(e.to_string()))?;
                tokio::spawn(conn);
                sender.send_request(request).await
            }
            Some(config) => {
                let server_name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| connect_error(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(server_name, stream)
                    .await
                    .map_err(|e| connect_error(format!("TLS: {e}")))?;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| connect_error(e.to_string()))?;
                tokio::spawn(conn);
                sender.send_request(request).await
            }
        }
        .map_err(|e| connect_error(e.to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| connect_error(e.to_string()))?
            .to_bytes();
        Ok((status, headers, bytes))
    }

    fn fail(what: &'static str, status: StatusCode, body: &[u8]) -> AdminClientError {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        AdminClientError::Status {
            what,
            status: status.as_u16(),
            message,
        }
    }

    fn issued(what: &'static str, body: &[u8]) -> Result<IssuedRobot, AdminClientError> {
        serde_json::from_slice(body).map_err(|_| AdminClientError::Decode(what))
    }
}

/// One grant for a robot: these actions (`pull`, `push`, `delete`) on these repository globs.
pub struct RobotPermissions<'a> {
    pub repositories: &'a [String],
    pub actions: &'a [&'a str],
}

impl AdminClient {
    pub async fn create(
        &self,
        name: &str,
        description: &str,
        permissions: &RobotPermissions<'_>,
        expires_in: Option<Duration>,
    ) -> Result<IssuedRobot, AdminClientError> {
        let mut body = serde_json::json!({
            "name": name,
            "description": description,
            "permissions": [{"repositories": permissions.repositories, "actions": permissions.actions}],
        });
        if let Some(lifetime) = expires_in {
            body["expiresIn"] = format!("{}s", lifetime.as_secs()).into();
        }
        let (status, bytes) = self
            .call("create robot", Method::POST, "/admin/v1/robots", Some(body))
            .await?;
        match status {
            StatusCode::CREATED => Self::issued("create robot", &bytes),
            other => Err(Self::fail("create robot", other, &bytes)),
        }
    }

    pub async fn update(
        &self,
        name: &str,
        description: &str,
        permissions: &RobotPermissions<'_>,
    ) -> Result<(), AdminClientError> {
        let body = serde_json::json!({
            "description": description,
            "permissions": [{"repositories": permissions.repositories, "actions": permissions.actions}],
        });
        let (status, bytes) = self
            .call(
                "update robot",
                Method::PUT,
                &format!("/admin/v1/robots/{name}"),
                Some(body),
            )
            .await?;
        match status {
            StatusCode::OK => Ok(()),
            other => Err(Self::fail("update robot", other, &bytes)),
        }
    }

    pub async fn rotate(
        &self,
        name: &str,
        expires_in: Duration,
        previous_valid_for: Duration,
    ) -> Result<IssuedRobot, AdminClientError> {
        let body = serde_json::json!({
            "expiresIn": format!("{}s", expires_in.as_secs()),
            "previousValidFor": format!("{}s", previous_valid_for.as_secs()),
        });
        let (status, bytes) = self
            .call(
                "rotate robot",
                Method::POST,
                &format!("/admin/v1/robots/{name}/rotate"),
                Some(body),
            )
            .await?;
        match status {
            StatusCode::OK => Self::issued("rotate robot", &bytes),
            other => Err(Self::fail("rotate robot", other, &bytes)),
        }
    }

    /// Returns whether the robot existed.
    pub async fn delete(&self, name: &str) -> Result<bool, AdminClientError> {
        let (status, bytes) = self
            .call(
                "revoke robot",
                Method::DELETE,
                &format!("/admin/v1/robots/{name}"),
                None,
            )
            .await?;
        match status {
            StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(Self::fail("revoke robot", other, &bytes)),
        }
    }
}
