//! Who may do what. Today: htpasswd basic auth (bcrypt) with optional anonymous pull. Verified
//! credentials are remembered by a hash of the pair, so bcrypt's deliberate cost is paid once per
//! credential, not once per request. Credentials are never logged.

use super::error::RegistryError;
use super::names::RepoName;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
    Delete,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read htpasswd file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "htpasswd file {path} line {line}: only bcrypt entries ($2a$, $2b$, $2y$) are supported"
    )]
    UnsupportedHash { path: PathBuf, line: usize },
}

/// How often the htpasswd file is checked for changes (a mounted Secret is updated in place).
const RELOAD_CHECK: Duration = Duration::from_secs(5);

struct Users {
    hashes: HashMap<String, String>,
    modified: Option<SystemTime>,
    checked: Instant,
    /// sha256(user ":" password) of pairs that bcrypt accepted, mapped to the user.
    verified: HashMap<[u8; 32], String>,
}

pub struct Auth {
    htpasswd: Option<(PathBuf, Mutex<Users>)>,
    anonymous_pull: bool,
    challenge: HeaderValue,
}

fn load(path: &PathBuf) -> Result<(HashMap<String, String>, Option<SystemTime>), AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.clone(),
        source,
    })?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut hashes = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            continue;
        };
        if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
            return Err(AuthError::UnsupportedHash {
                path: path.clone(),
                line: i + 1,
            });
        }
        hashes.insert(user.to_owned(), hash.to_owned());
    }
    Ok((hashes, modified))
}

impl Auth {
    pub fn new(
        htpasswd: Option<PathBuf>,
        realm: &str,
        anonymous_pull: bool,
    ) -> Result<Auth, AuthError> {
        let htpasswd = match htpasswd {
            Some(path) => {
                let (hashes, modified) = load(&path)?;
                Some((
                    path,
                    Mutex::new(Users {
                        hashes,
                        modified,
                        checked: Instant::now(),
                        verified: HashMap::new(),
                    }),
                ))
            }
            None => None,
        };
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{}\"", realm.replace('"', "")))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"wharf\""));
        Ok(Auth {
            htpasswd,
            anonymous_pull,
            challenge,
        })
    }

    pub fn open() -> Auth {
        Auth {
            htpasswd: None,
            anonymous_pull: true,
            challenge: HeaderValue::from_static("Basic realm=\"wharf\""),
        }
    }

    fn unauthorized(&self) -> RegistryError {
        RegistryError::Unauthorized {
            challenge: self.challenge.clone(),
        }
    }

    /// Checks a request for `access` to `repository` (`None`: the base or catalog endpoint).
    /// Returns the authenticated user, if any.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        repository: Option<&RepoName>,
        access: Access,
    ) -> Result<Option<String>, RegistryError> {
        let Some((path, users)) = &self.htpasswd else {
            return Ok(None);
        };
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok());
        let Some(credentials) = credentials else {
            // The base endpoint always challenges, so that `login` really checks credentials.
            if self.anonymous_pull && access == Access::Pull && repository.is_some() {
                return Ok(None);
            }
            return Err(self.unauthorized());
        };
        let Some((user, password)) = credentials.split_once(':') else {
            return Err(self.unauthorized());
        };
        let key: [u8; 32] = Sha256::digest(credentials.as_bytes()).into();
        let mut users = users.lock().unwrap_or_else(|e| e.into_inner());
        if users.checked.elapsed() > RELOAD_CHECK {
            users.checked = Instant::now();
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if modified != users.modified {
                match load(path) {
                    Ok((hashes, modified)) => {
                        users.hashes = hashes;
                        users.modified = modified;
                        users.verified.clear();
                        tracing::info!(path = %path.display(), "htpasswd reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "htpasswd changed but cannot be loaded; keeping the previous users")
                    }
                }
            }
        }
        if let Some(known) = users.verified.get(&key) {
            return Ok(Some(known.clone()));
        }
        let Some(hash) = users.hashes.get(user).cloned() else {
            return Err(self.unauthorized());
        };
        if bcrypt::verify(password, &hash).unwrap_or(false) {
            users.verified.insert(key, user.to_owned());
            Ok(Some(user.to_owned()))
        } else {
            tracing::info!(user = %user, "authentication failed");
            Err(self.unauthorized())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    #[test]
    fn htpasswd_basic_auth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
        )
        .unwrap();
        let repo = RepoName::parse("a/b").unwrap();
        let auth = Auth::new(Some(path.clone()), "test", false).unwrap();
        assert_eq!(
            auth.authorize(&basic("alice", "s3cret"), Some(&repo), Access::Push)
                .unwrap()
                .as_deref(),
            Some("alice")
        );
        // second time from the verified cache
        assert!(
            auth.authorize(&basic("alice", "s3cret"), None, Access::Pull)
                .is_ok()
        );
        assert!(
            auth.authorize(&basic("alice", "wrong"), Some(&repo), Access::Pull)
                .is_err()
        );
        assert!(
            auth.authorize(&basic("bob", "s3cret"), Some(&repo), Access::Pull)
                .is_err()
        );
        assert!(
            auth.authorize(&HeaderMap::new(), Some(&repo), Access::Pull)
                .is_err()
        );

        let anon = Auth::new(Some(path.clone()), "test", true).unwrap();
        assert!(
            anon.authorize(&HeaderMap::new(), Some(&repo), Access::Pull)
                .is_ok()
        );
        assert!(
            anon.authorize(&HeaderMap::new(), Some(&repo), Access::Push)
                .is_err()
        );
        assert!(
            anon.authorize(&HeaderMap::new(), None, Access::Pull)
                .is_err(),
            "base endpoint must challenge"
        );

        std::fs::write(&path, "alice:{SHA}abc\n").unwrap();
        assert!(matches!(
            Auth::new(Some(path), "t", false),
            Err(AuthError::UnsupportedHash { line: 1, .. })
        ));
    }
}
