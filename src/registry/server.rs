//! The listener: plain HTTP or TLS, HTTP/1.1 and HTTP/2, health and metrics endpoints next to
//! the API, background maintenance, and a graceful shutdown that lets in-flight requests finish.

use super::Registry;
use super::api;
use super::auth::{Auth, AuthError, AuthOptions, Scope};
use super::config::{Config, ConfigError, RegistryArgs};
use super::storage::Store;
use super::storage::fs::FsStore;
use super::storage::s3::{S3SetupError, S3Store};
use super::tls::{self, TlsError};
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long shutdown waits for in-flight requests (a large blob transfer) before giving up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot use storage directory {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot use S3 storage: {0}")]
    S3(#[from] S3SetupError),
    #[error(transparent)]
    Notify(#[from] crate::registry::notify::NotifyError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

pub fn router<S: Store>(registry: Arc<Registry<S>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics::<S>))
        .route(
            "/auth/token",
            get(super::auth::endpoint::get::<S>).post(super::auth::endpoint::post::<S>),
        )
        .merge(super::admin::routes::<S>())
        .fallback(api::dispatch::<S>)
        .with_state(registry)
}

async fn readyz<S: Store>(State(registry): State<Arc<Registry<S>>>) -> impl IntoResponse {
    match registry
        .store
        .list_tags(&super::names::RepoName::parse("readyz-probe").expect("valid name"))
        .await
    {
        Ok(_) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::warn!(error = %e, "storage is not readable");
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// Metrics need the same credentials as the API when auth is on (they reveal repository
/// activity); the health endpoints stay open for kubelet probes and reveal nothing.
async fn metrics<S: Store>(
    State(registry): State<Arc<Registry<S>>>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = registry.auth.authorize(&headers, Scope::Base).await {
        return denied.into_response();
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        registry.metrics.render() + &registry.gc.render() + &registry.notifier.render(),
    )
        .into_response()
}

pub async fn run(args: RegistryArgs) -> Result<(), ServerError> {
    let config = Config::resolve(&args)?;
    crate::logging::init(config.log_json);
    match &config.s3 {
        Some(s3) => {
            let store = S3Store::connect(s3).await?;
            let location = format!(
                "s3://{}/{}",
                s3.bucket,
                s3.prefix.as_deref().unwrap_or_default()
            );
            serve_store(store, config, location).await
        }
        None => {
            let store = FsStore::new(&config.storage_root, config.fsync).map_err(|source| {
                ServerError::Storage {
                    path: config.storage_root.display().to_string(),
                    source,
                }
            })?;
            let location = config.storage_root.display().to_string();
            serve_store(store, config, location).await
        }
    }
}

async fn serve_store<S: Store>(
    store: Arc<S>,
    config: Config,
    location: String,
) -> Result<(), ServerError> {
    let auth = Auth::new(
        AuthOptions {
            htpasswd: config.htpasswd.clone(),
            realm: config.realm.clone(),
            anonymous_pull: config.anonymous_pull,
            rules: config.access_rules.clone(),
            token: config.token.clone(),
            tls: config.tls.is_some(),
        },
        store.clone(),
    )
    .await?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::server_config(cert.clone(), key.clone())?),
        None => None,
    };
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
    let mut registry = Registry::new(store, config.clone(), auth);
    registry.notifier = crate::registry::notify::Notifier::start(&config.notifications)?;
    let registry = Arc::new(registry);
    tokio::spawn(maintenance(registry.clone()));
    tracing::info!(
        listen = %config.listen,
        storage = %location,
        tls = tls.is_some(),
        auth = !config.htpasswd.is_empty(),
        token_auth = config.token.is_some() && !config.htpasswd.is_empty(),
        read_only = config.read_only,
        "registry serving"
    );
    serve(listener, router(registry.clone()), tls, shutdown_signal()).await;
    registry.pulls.flush(registry.store.as_ref()).await;
    tracing::info!("registry stopped");
    Ok(())
}

/// Accepts connections until `shutdown` completes, then waits for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                    Err(e) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                },
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("in-flight requests did not finish in time"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Purges stale uploads and samples the store's size for `/metrics`.
async fn maintenance<S: Store>(registry: Arc<Registry<S>>) {
    let mut purge = tokio::time::interval(registry.config.upload_purge_interval);
    let mut sample = tokio::time::interval(Duration::from_secs(60));
    let mut pulls = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = purge.tick() => match registry.store.purge_uploads(registry.config.upload_purge_after).await {
                Ok(0) => {}
                Ok(n) => {
                    registry.metrics.uploads_purged(n as u64);
                    tracing::info!(purged = n, "stale uploads purged");
                }
                Err(e) => tracing::warn!(error = %e, "upload purge failed"),
            },
            _ = pulls.tick() => {
                registry.pulls.flush(registry.store.as_ref()).await;
            }
            _ = sample.tick() => {
                let store = registry.store.clone();
                if let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || store.blob_bytes()).await {
                    registry.metrics.set_storage_bytes(bytes);
                }
            }
        }
    }
}
