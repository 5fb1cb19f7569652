//! `wharf registry`: the OCI Distribution registry server.
//!
//! Where things are: `routes.rs` maps paths to endpoints, `api/` holds one module per endpoint
//! group (`api/uploads.rs` is the upload path), `storage/` the backends, `server.rs` the
//! listener (TLS, graceful shutdown, health and metrics endpoints).

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod digest;
pub mod error;
pub mod gc;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod range;
pub mod routes;
pub mod server;
pub mod storage;
mod tls;
mod upload_hashes;
pub mod usage;

use auth::Auth;
use config::Config;
use metrics::Metrics;
use storage::Store;
use upload_hashes::UploadHashes;

/// Everything a request handler needs, shared by all connections.
pub struct Registry<S: Store> {
    pub store: std::sync::Arc<S>,
    pub config: Config,
    pub auth: Auth,
    pub metrics: Metrics,
    pub gc: gc::Collector,
    pub pulls: usage::PullLog,
    pub notifier: notify::Notifier,
    upload_hashes: UploadHashes,
}

impl<S: Store> Registry<S> {
    pub fn new(store: std::sync::Arc<S>, config: Config, auth: Auth) -> Registry<S> {
        Registry {
            store,
            config,
            auth,
            metrics: Metrics::default(),
            gc: gc::Collector::default(),
            pulls: usage::PullLog::default(),
            notifier: notify::Notifier::default(),
            upload_hashes: UploadHashes::default(),
        }
    }
}
