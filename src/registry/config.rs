//! Registry configuration: a YAML file, overridden by flags and `WHARF_REGISTRY_*` environment
//! variables, over defaults that make `wharf registry --storage ./data` a working registry.

use super::auth::{AccessRule, TokenSettings};
use super::notify::NotificationEndpoint;
use super::storage::s3::S3Config;
use crate::duration;
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("listen address {0:?} is not HOST:PORT or :PORT")]
    Listen(String),
    #[error("TLS needs both a certificate and a key file")]
    TlsIncomplete,
    #[error("storage.s3.bucket is required for S3 storage")]
    S3Bucket,
}

/// Flags of `wharf registry`. Each also reads an environment variable.
#[derive(Debug, Args, Default)]
pub struct RegistryArgs {
    /// YAML configuration file; flags and environment variables override it.
    #[arg(long, env = "WHARF_REGISTRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the filesystem storage.
    #[arg(long, env = "WHARF_REGISTRY_STORAGE")]
    pub storage: Option<PathBuf>,
    /// Address to serve on, HOST:PORT or :PORT [default: :5000].
    #[arg(long, env = "WHARF_REGISTRY_LISTEN")]
    pub listen: Option<String>,
    /// htpasswd file (bcrypt entries) enabling basic auth.
    #[arg(long, env = "WHARF_REGISTRY_HTPASSWD")]
    pub htpasswd: Option<PathBuf>,
    /// Let unauthenticated clients pull when auth is on.
    #[arg(long, env = "WHARF_REGISTRY_ANONYMOUS_PULL", num_args = 0..=1, default_missing_value = "true")]
    pub anonymous_pull: Option<bool>,
    /// Serve Docker token authentication at /auth/token (needs --htpasswd).
    #[arg(long, env = "WHARF_REGISTRY_TOKEN_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub token_auth: Option<bool>,
    /// Refuse every write.
    #[arg(long, env = "WHARF_REGISTRY_READ_ONLY", num_args = 0..=1, default_missing_value = "true")]
    pub read_only: Option<bool>,
    /// Allow manifest and blob deletion [default: true].
    #[arg(long, env = "WHARF_REGISTRY_DELETES", num_args = 0..=1, default_missing_value = "true")]
    pub deletes: Option<bool>,
    /// Accept manifests whose layers or child manifests are not in the repository.
    #[arg(long, env = "WHARF_REGISTRY_ALLOW_SPARSE_MANIFESTS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_sparse_manifests: Option<bool>,
    /// PEM certificate chain; serving TLS, reloaded when the file changes.
    #[arg(long, env = "WHARF_REGISTRY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "WHARF_REGISTRY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Log format: json or text [default: json].
    #[arg(long, env = "WHARF_LOG_FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    read_only: Option<bool>,
    #[serde(default)]
    storage: FileStorage,
    #[serde(default)]
    auth: FileAuth,
    tls: Option<FileTls>,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    notifications: FileNotifications,
}

/// `notifications.endpoints`: where push events go.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileNotifications {
    #[serde(default)]
    endpoints: Vec<FileNotificationEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileNotificationEndpoint {
    name: String,
    url: String,
    /// A file holding the bearer token (a mounted Secret); read at each delivery.
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    #[serde(default, with = "duration::serde_opt")]
    timeout: Option<Duration>,
    max_attempts: Option<u32>,
    queue_size: Option<usize>,
    #[serde(default, with = "duration::serde_opt")]
    backoff: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileStorage {
    #[serde(default)]
    filesystem: FileFilesystem,
    s3: Option<FileS3>,
    deletes: Option<bool>,
    allow_sparse_manifests: Option<bool>,
    mount_without_from: Option<bool>,
    #[serde(default)]
    uploads: FileUploads,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileFilesystem {
    root: Option<PathBuf>,
    fsync: Option<bool>,
}

/// `storage.s3`: the bucket instead of a directory. Credentials are not configured here: they
/// come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, web identity ...),
/// so that the file can be shown and shared without leaking them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileS3 {
    bucket: String,
    prefix: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    #[serde(default)]
    path_style: bool,
    ca_bundle: Option<PathBuf>,
    #[serde(default)]
    redirect: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileUploads {
    #[serde(default, with = "duration::serde_opt")]
    purge_after: Option<Duration>,
    #[serde(default, with = "duration::serde_opt")]
    purge_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileAuth {
    #[serde(default)]
    htpasswd: OneOrMany,
    realm: Option<String>,
    anonymous_pull: Option<bool>,
    /// Per-user rules; users without any are unrestricted.
    #[serde(default)]
    access: Vec<AccessRule>,
    token: Option<FileToken>,
}

/// Docker token authentication (`auth.token`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileToken {
    enabled: Option<bool>,
    realm: Option<String>,
    service: Option<String>,
    issuer: Option<String>,
    #[serde(default, with = "duration::serde_opt")]
    lifetime: Option<Duration>,
    #[serde(default, with = "duration::serde_opt")]
    refresh_lifetime: Option<Duration>,
    key_file: Option<PathBuf>,
    /// Registry API calls must carry a token; basic credentials only get one at the realm.
    require_token: Option<bool>,
}

/// `htpasswd: /etc/a` or `htpasswd: [/etc/a, /etc/b]`.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<PathBuf> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: the filesystem at `storage_root`.
    pub s3: Option<S3Config>,
    pub storage_root: PathBuf,
    pub fsync: bool,
    pub deletes_enabled: bool,
    pub allow_sparse_manifests: bool,
    /// `POST ?mount=<digest>` without `from`: link any blob the registry holds. Knowing a digest
    /// is then enough to read it, as with Zot and the spec's "automatic content discovery".
    pub mount_without_from: bool,
    pub upload_purge_after: Duration,
    pub upload_purge_interval: Duration,
    pub read_only: bool,
    /// htpasswd files; users are looked up in order. Empty: no authentication.
    pub htpasswd: Vec<PathBuf>,
    pub realm: String,
    pub anonymous_pull: bool,
    pub access_rules: Vec<AccessRule>,
    /// Docker token authentication; `None`: basic auth only.
    pub token: Option<TokenSettings>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub log_json: bool,
    pub notifications: Vec<NotificationEndpoint>,
}

pub fn parse_listen(s: &str) -> Result<SocketAddr, ConfigError> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse().map_err(|_| ConfigError::Listen(s.to_owned()))
}

impl Config {
    pub fn resolve(args: &RegistryArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                serde_saphyr::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let listen = parse_listen(
            args.listen
                .as_deref()
                .or(file.listen.as_deref())
                .unwrap_or(":5000"),
        )?;
        let tls = match (
            args.tls_cert
                .clone()
                .or(file.tls.as_ref().map(|t| t.cert_file.clone())),
            args.tls_key
                .clone()
                .or(file.tls.as_ref().map(|t| t.key_file.clone())),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(ConfigError::TlsIncomplete),
        };
        let file_token = file.auth.token.unwrap_or_default();
        let token = match args.token_auth.or(file_token.enabled).unwrap_or(false) {
            false => None,
            true => Some(TokenSettings {
                realm: file_token.realm,
                service: file_token
                    .service
                    .unwrap_or_else(|| "wharf-registry".into()),
                issuer: file_token.issuer.unwrap_or_else(|| "wharf".into()),
                lifetime: file_token.lifetime.unwrap_or(Duration::from_secs(300)),
                refresh_lifetime: file_token
                    .refresh_lifetime
                    .unwrap_or(Duration::from_secs(24 * 3600)),
                key_file: file_token.key_file,
                require_token: file_token.require_token.unwrap_or(false),
            }),
        };
        let log_format = args
            .log_format
            .clone()
            .or(file.log.format)
            .unwrap_or_else(|| "json".into());
        let s3 = match file.storage.s3 {
            None => None,
            Some(s3) if s3.bucket.trim().is_empty() => return Err(ConfigError::S3Bucket),
            Some(s3) => Some(S3Config {
                bucket: s3.bucket,
                prefix: s3.prefix,
                region: s3.region,
                endpoint: s3.endpoint,
                path_style: s3.path_style,
                ca_bundle: s3.ca_bundle,
                redirect: s3.redirect,
            }),
        };
        Ok(Config {
            listen,
            s3,
            storage_root: args
                .storage
                .clone()
                .or(file.storage.filesystem.root)
                .unwrap_or_else(|| PathBuf::from("./data")),
            fsync: file.storage.filesystem.fsync.unwrap_or(false),
            deletes_enabled: args.deletes.or(file.storage.deletes).unwrap_or(true),
            allow_sparse_manifests: args
                .allow_sparse_manifests
                .or(file.storage.allow_sparse_manifests)
                .unwrap_or(false),
            mount_without_from: file.storage.mount_without_from.unwrap_or(true),
            upload_purge_after: file
                .storage
                .uploads
                .purge_after
                .unwrap_or(Duration::from_secs(24 * 3600)),
            upload_purge_interval: file
                .storage
                .uploads
                .purge_interval
                .unwrap_or(Duration::from_secs(3600)),
            read_only: args.read_only.or(file.read_only).unwrap_or(false),
            htpasswd: match &args.htpasswd {
                Some(path) => vec![path.clone()],
                None => file.auth.htpasswd.into_vec(),
            },
            realm: file.auth.realm.unwrap_or_else(|| "wharf".into()),
            anonymous_pull: args
                .anonymous_pull
                .or(file.auth.anonymous_pull)
                .unwrap_or(false),
            access_rules: file.auth.access,
            token,
            tls,
            log_json: log_format != "text",
            notifications: file
                .notifications
                .endpoints
                .into_iter()
                .map(|e| NotificationEndpoint {
                    name: e.name,
                    url: e.url,
                    token_file: e.token_file,
                    ca_file: e.ca_file,
                    timeout: e.timeout.unwrap_or(Duration::from_secs(5)),
                    max_attempts: e.max_attempts.unwrap_or(8).max(1),
                    queue_size: e.queue_size.unwrap_or(1024),
                    backoff: e.backoff.unwrap_or(Duration::from_millis(500)),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_on_5000() {
        let c = Config::resolve(&RegistryArgs::default()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:5000".parse().unwrap());
        assert!(c.deletes_enabled && !c.read_only && c.htpasswd.is_empty() && c.tls.is_none());
        assert!(c.token.is_none() && c.access_rules.is_empty());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "listen: 127.0.0.1:6000\nreadOnly: true\nstorage:\n  filesystem: {root: /srv, fsync: true}\n  deletes: false\n  uploads: {purgeAfter: 2h}\nauth: {htpasswd: /etc/h, anonymousPull: true}\n",
        )
        .unwrap();
        let mut args = RegistryArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.storage_root, PathBuf::from("/srv"));
        assert!(c.fsync && c.read_only && !c.deletes_enabled && c.anonymous_pull);
        assert_eq!(c.upload_purge_after, Duration::from_secs(7200));
        args.listen = Some(":7000".into());
        args.read_only = Some(false);
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert!(!c.read_only);
    }

    #[test]
    fn token_auth_and_access_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "auth:\n  htpasswd: [/a, /b]\n  token: {enabled: true, lifetime: 2m, service: reg}\n  access:\n  - {users: [ci], repositories: [\"team-a/**\"], actions: [pull, push]}\n",
        )
        .unwrap();
        let c = Config::resolve(&RegistryArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.htpasswd.len(), 2);
        let token = c.token.expect("token auth on");
        assert_eq!(token.lifetime, Duration::from_secs(120));
        assert_eq!(token.service, "reg");
        assert_eq!(c.access_rules[0].users, ["ci"]);
    }

    #[test]
    fn s3_storage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "storage:\n  s3: {bucket: images, prefix: reg/a, endpoint: \"http://127.0.0.1:9000\", pathStyle: true, redirect: true}\n",
        )
        .unwrap();
        let args = RegistryArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let s3 = Config::resolve(&args).unwrap().s3.expect("s3 storage");
        assert_eq!(s3.bucket, "images");
        assert_eq!(s3.prefix.as_deref(), Some("reg/a"));
        assert!(s3.path_style && s3.redirect && s3.region.is_none());
        std::fs::write(&path, "storage:\n  s3: {bucket: \"\"}\n").unwrap();
        assert!(matches!(Config::resolve(&args), Err(ConfigError::S3Bucket)));
        std::fs::write(&path, "storage:\n  s3: {bucket: b, secretKey: x}\n").unwrap();
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("secretKey"), "{err}");
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "storage:\n  filesytem: {}\n").unwrap();
        let err = Config::resolve(&RegistryArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("filesytem"), "{err}");
        let err = Config::resolve(&RegistryArgs {
            listen: Some("nope".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::Listen(_)));
        let err = Config::resolve(&RegistryArgs {
            tls_cert: Some("/c".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::TlsIncomplete));
    }
}
