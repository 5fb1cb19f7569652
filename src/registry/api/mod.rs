//! The Distribution API: one dispatcher that routes by path (read from the right), checks access,
//! and hands the request to the module for its endpoint group.

mod blobs;
mod listing;
mod manifests;
mod referrers;
mod uploads;

use super::Registry;
use super::auth::{Access, Scope};
use super::error::RegistryError;
use super::routes::{self, Route};
use super::storage::Store;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument;

pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// Query parameters, keeping repeated keys (`?tag=a&tag=b`).
pub struct Query(HashMap<String, Vec<String>>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_pairs(raw.unwrap_or("")) {
            map.entry(k).or_default().push(v);
        }
        Query(map)
    }

    pub fn first(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    pub fn all(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or_default()
    }
}

fn form_pairs(raw: &str) -> impl Iterator<Item = (String, String)> + '_ {
    raw.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The entry point for everything under `/v2`.
pub async fn dispatch<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = routes::parse(&path);
    let route_kind = match &route {
        Some(Ok(r)) => r.kind(),
        _ => "invalid",
    };
    registry.metrics.request_started();
    let request_id = request_id(request.headers());
    let response = match route {
        None => not_found(),
        Some(Err(e)) => e.into_response(),
        Some(Ok(route)) => {
            let span = tracing::info_span!(
                "request",
                request_id = %request_id,
                route = route.kind(),
                repository = route.repository().map(|r| r.as_str()),
                user = tracing::field::Empty,
            );
            match handle(&registry, &method, route, request)
                .instrument(span)
                .await
            {
                Ok(r) => r,
                Err(e) => e.into_response(),
            }
        }
    };
    let mut response = response;
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    // Echoed so that a client or proxy can find this request in the registry's logs.
    response
        .headers_mut()
        .insert("x-request-id", hv(&request_id));
    tracing::debug!(
        request_id = %request_id,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "access"
    );
    registry
        .metrics
        .request_finished(route_kind, &method, response.status(), started.elapsed());
    response
}

/// The caller's `X-Request-Id` when it is a sane token (so proxies' ids correlate), else a new one.
fn request_id(headers: &HeaderMap) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: OnceLock<String> = OnceLock::new();
    if let Some(given) = header_str(headers, "x-request-id")
        && !given.is_empty()
        && given.len() <= 64
        && given
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return given.to_owned();
    }
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
    format!("{prefix}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn not_found() -> Response {
    let mut r =
        Json::ok(serde_json::json!({"errors":[{"code":"NOT_FOUND","message":"no such endpoint"}]}));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

async fn handle<S: Store>(
    registry: &Registry<S>,
    method: &Method,
    route: Route,
    request: Request,
) -> Result<Response, RegistryError> {
    let access = match *method {
        Method::GET | Method::HEAD => Access::Pull,
        Method::DELETE => Access::Delete,
        _ => Access::Push,
    };
    let scope = match &route {
        Route::Base => Scope::Base,
        Route::Catalog => Scope::Catalog,
        other => Scope::Repository(
            other.repository().expect("repository routes name one"),
            access,
        ),
    };
    let identity = registry.auth.authorize(request.headers(), scope).await?;
    if access != Access::Pull && registry.config.read_only {
        return Err(RegistryError::Unsupported(
            "the registry is in read-only mode",
        ));
    }
    tracing::Span::current().record("user", identity.name.as_deref());
    let query = Query::parse(request.uri().query());
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    match (method.clone(), route) {
        (Method::GET, Route::Base) | (Method::HEAD, Route::Base) => {
            Ok(Json::ok(serde_json::json!({})))
        }
        (Method::GET, Route::Catalog) => listing::catalog(registry, &query, &identity).await,
        (Method::GET, Route::Tags(repo)) => listing::tags(registry, &repo, &query).await,
        (Method::GET, Route::Manifest(repo, reference)) => {
            manifests::get(registry, &repo, &reference, true).await
        }
        (Method::HEAD, Route::Manifest(repo, reference)) => {
            manifests::get(registry, &repo, &reference, false).await
        }
        (Method::PUT, Route::Manifest(repo, reference)) => {
            manifests::put(registry, &repo, &reference, &query, &headers, body).await
        }
        (Method::DELETE, Route::Manifest(repo, reference)) => {
            manifests::delete(registry, &repo, &reference).await
        }
        (Method::GET, Route::Blob(repo, digest)) => {
            blobs::get(registry, &repo, &digest, &headers, true).await
        }
        (Method::HEAD, Route::Blob(repo, digest)) => {
            blobs::get(registry, &repo, &digest, &headers, false).await
        }
        (Method::DELETE, Route::Blob(repo, digest)) => {
            blobs::delete(registry, &repo, &digest).await
        }
        (Method::POST, Route::UploadStart(repo)) => {
            uploads::start(registry, &repo, &query, &headers, body, &identity).await
        }
        (Method::GET, Route::Upload(repo, id)) => uploads::status(registry, &repo, &id).await,
        (Method::PATCH, Route::Upload(repo, id)) => {
            uploads::patch(registry, &repo, &id, &headers, body).await
        }
        (Method::PUT, Route::Upload(repo, id)) => {
            uploads::finish(registry, &repo, &id, &query, &headers, body).await
        }
        (Method::DELETE, Route::Upload(repo, id)) => uploads::cancel(registry, &repo, &id).await,
        (Method::GET, Route::Referrers(repo, digest)) => {
            referrers::list(registry, &repo, &digest, &query).await
        }
        _ => Err(RegistryError::Unsupported(
            "method not allowed on this endpoint",
        )),
    }
}

/// A JSON response with the exact Content-Type given.
pub struct Json;

impl Json {
    pub fn ok(value: serde_json::Value) -> Response {
        Self::with_type(value, "application/json")
    }

    pub fn with_type(value: serde_json::Value, content_type: &'static str) -> Response {
        let body = serde_json::to_vec(&value).unwrap_or_default();
        let mut r = Response::new(Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    }
}

/// An empty response with a status and headers.
pub fn empty(status: StatusCode, headers: &[(&'static str, HeaderValue)]) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    for (name, value) in headers {
        r.headers_mut().append(*name, value.clone());
    }
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// `n` and `last` pagination shared by tag and catalog listings. Returns the page and, when more
/// entries follow, the `last` value for the next page.
pub fn paginate<'a>(
    sorted: &'a [String],
    query: &Query,
) -> Result<(&'a [String], Option<usize>), RegistryError> {
    let start = match query.first("last") {
        Some(last) if !last.is_empty() => sorted.partition_point(|x| x.as_str() <= last),
        _ => 0,
    };
    let rest = &sorted[start..];
    let n = match query.first("n") {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| RegistryError::BadRequest(format!("n={n} is not a number")))?,
        ),
        None => None,
    };
    match n {
        Some(0) => Ok((&rest[..0], None)),
        Some(n) if n < rest.len() => Ok((&rest[..n], Some(n))),
        _ => Ok((rest, None)),
    }
}

pub fn next_link(path: &str, n: usize, last: &str) -> HeaderValue {
    hv(&format!(
        "<{path}?n={n}&last={}>; rel=\"next\"",
        url_encode(last)
    ))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeated_keys_and_decodes() {
        let q = Query::parse(Some("tag=a&tag=b&digest=sha256%3Aabc&x"));
        assert_eq!(q.all("tag"), ["a", "b"]);
        assert_eq!(q.first("digest"), Some("sha256:abc"));
        assert_eq!(q.first("x"), Some(""));
        assert_eq!(q.first("missing"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn request_ids() {
        let mut headers = HeaderMap::new();
        let a = request_id(&headers);
        let b = request_id(&headers);
        assert_ne!(a, b);
        headers.insert("x-request-id", HeaderValue::from_static("proxy-123.abc"));
        assert_eq!(request_id(&headers), "proxy-123.abc");
        headers.insert(
            "x-request-id",
            HeaderValue::from_static("bad id with spaces"),
        );
        assert_ne!(request_id(&headers), "bad id with spaces");
    }

    #[test]
    fn pagination() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let page = |q: &str| {
            let (items, next) = paginate(&all, &Query::parse(Some(q))).unwrap();
            (items.to_vec(), next)
        };
        assert_eq!(page(""), (all.clone(), None));
        assert_eq!(page("n=2"), (vec!["a".into(), "b".into()], Some(2)));
        assert_eq!(page("n=2&last=b"), (vec!["c".into(), "d".into()], None));
        assert_eq!(page("last=bb"), (vec!["c".into(), "d".into()], None));
        assert_eq!(page("n=0"), (vec![], None));
        assert!(paginate(&all, &Query::parse(Some("n=x"))).is_err());
    }
}
