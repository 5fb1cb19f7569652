//! Who may do what. Today: htpasswd basic auth (bcrypt) with optional anonymous pull. Users come
//! from one or more htpasswd files (the operator mounts its generated admin file next to a user's
//! own Secret); on a name in several files the first file wins. Verified
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
    modified: Vec<Option<SystemTime>>,
    checked: Instant,
    /// sha256(user ":" password) of pairs that bcrypt accepted, mapped to the user.
    verified: HashMap<[u8; 32], String>,
}

pub struct Auth {
    htpasswd: Option<(Vec<PathBuf>, Mutex<Users>)>,
    anonymous_pull: bool,
    challenge: HeaderValue,
}

fn modification_times(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Users by name, and the files' modification times when they were read.
type LoadedUsers = (HashMap<String, String>, Vec<Option<SystemTime>>);

fn load_all(paths: &[PathBuf]) -> Result<LoadedUsers, AuthError> {
    let modified = modification_times(paths);
    let mut hashes = HashMap::new();
    for path in paths {
        for (user, hash) in load(path)? {
            hashes.entry(user).or_insert(hash);
        }
    }
    Ok((hashes, modified))
}

fn load(path: &PathBuf) -> Result<Vec<(String, String)>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.clone(),
        source,
    })?;
    let mut hashes = Vec::new();
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
        hashes.push((user.to_owned(), hash.to_owned()));
    }
    Ok(hashes)
}

impl Auth {
    /// Basic auth against `htpasswd` files; no files means no authentication at all.
    pub fn new(
        htpasswd: Vec<PathBuf>,
        realm: &str,
        anonymous_pull: bool,
    ) -> Result<Auth, AuthError> {
        let htpasswd = match htpasswd.is_empty() {
            false => {
                let (hashes, modified) = load_all(&htpasswd)?;
                Some((
                    htpasswd,
                    Mutex::new(Users {
                        hashes,
                        modified,
                        checked: Instant::now(),
                        verified: HashMap::new(),
                    }),
                ))
            }
            true => None,
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
        let Some((paths, users)) = &self.htpasswd else {
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
            if modification_times(paths) != users.modified {
                match load_all(paths) {
                    Ok((hashes, modified)) => {
                        users.hashes = hashes;
                        users.modified = modified;
                        users.verified.clear();
                        tracing::info!(files = paths.len(), "htpasswd reloaded");
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
        let auth = Auth::new(vec![path.clone()], "test", false).unwrap();
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

        let anon = Auth::new(vec![path.clone()], "test", true).unwrap();
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
            Auth::new(vec![path], "t", false),
            Err(AuthError::UnsupportedHash { line: 1, .. })
        ));
    }
}

#[cfg(test)]
mod several_files {
    use super::*;

    #[test]
    fn users_come_from_every_file_and_the_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("admin");
        let extra = dir.path().join("extra");
        std::fs::write(&admin, format!("admin:{}\n", bcrypt::hash("a", 4).unwrap())).unwrap();
        std::fs::write(
            &extra,
            format!(
                "admin:{}\nci:{}\n",
                bcrypt::hash("shadow", 4).unwrap(),
                bcrypt::hash("c", 4).unwrap()
            ),
        )
        .unwrap();
        let auth = Auth::new(vec![admin, extra], "t", false).unwrap();
        let login = |user: &str, pass: &str| {
            let mut h = HeaderMap::new();
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
            );
            auth.authorize(&h, None, Access::Pull).is_ok()
        };
        assert!(login("admin", "a"));
        assert!(
            !login("admin", "shadow"),
            "a later file cannot take over a user"
        );
        assert!(login("ci", "c"));
    }
}
