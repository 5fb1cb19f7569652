//! Serving certificates loaded from PEM files and reloaded when the files change (cert-manager
//! and mounted Secrets rotate them in place), checked at most once a second on handshakes.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0} holds no PEM private key")]
    NoKey(PathBuf),
    #[error("private key in {path} is not usable: {message}")]
    BadKey { path: PathBuf, message: String },
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_pem = read(key)?;
    let private = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey(key.to_owned()))?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| TlsError::BadKey {
            path: key.to_owned(),
            message: e.to_string(),
        })?;
    Ok(CertifiedKey::new(chain, signer))
}

struct Current {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Current>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .finish()
    }
}

impl ReloadingCert {
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<ReloadingCert, TlsError> {
        let loaded = load(&cert, &key)?;
        let stamps = (modified(&cert), modified(&key));
        Ok(ReloadingCert {
            cert,
            key,
            current: Mutex::new(Current {
                key: Arc::new(loaded),
                stamps,
                checked: Instant::now(),
            }),
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.checked.elapsed() >= Duration::from_secs(1) {
            current.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != current.stamps {
                match load(&self.cert, &self.key) {
                    Ok(k) => {
                        current.key = Arc::new(k);
                        current.stamps = stamps;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    // Mid-rotation the pair can be briefly inconsistent: keep serving the old one.
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but cannot be loaded yet")
                    }
                }
            }
        }
        Some(current.key.clone())
    }
}

pub fn server_config(cert: PathBuf, key: PathBuf) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let resolver = ReloadingCert::new(cert, key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
