//! htpasswd users (bcrypt). Users come from one or more files (the operator mounts its generated
//! admin file next to a user's own Secret); on a name in several files the first file wins. The
//! files are re-read when they change (a mounted Secret is updated in place). Verified
//! credentials are remembered by a hash of the pair, so bcrypt's deliberate cost is paid once per
//! credential, not once per request. Credentials are never logged.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
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

/// How often the files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

struct Users {
    hashes: HashMap<String, String>,
    modified: Vec<Option<SystemTime>>,
    checked: Instant,
    /// sha256(user ":" password) of pairs that bcrypt accepted.
    verified: HashMap<[u8; 32], String>,
}

pub struct Htpasswd {
    paths: Vec<PathBuf>,
    users: Mutex<Users>,
}

fn modification_times(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Users by name, and the files' modification times when they were read.
type LoadedUsers = (HashMap<String, String>, Vec<Option<SystemTime>>);

fn load_all(paths: &[PathBuf]) -> Result<LoadedUsers, HtpasswdError> {
    let modified = modification_times(paths);
    let mut hashes = HashMap::new();
    for path in paths {
        for (user, hash) in load(path)? {
            hashes.entry(user).or_insert(hash);
        }
    }
    Ok((hashes, modified))
}

fn load(path: &PathBuf) -> Result<Vec<(String, String)>, HtpasswdError> {
    let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
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
            return Err(HtpasswdError::UnsupportedHash {
                path: path.clone(),
                line: i + 1,
            });
        }
        hashes.push((user.to_owned(), hash.to_owned()));
    }
    Ok(hashes)
}

impl Htpasswd {
    pub fn load(paths: Vec<PathBuf>) -> Result<Htpasswd, HtpasswdError> {
        let (hashes, modified) = load_all(&paths)?;
        Ok(Htpasswd {
            paths,
            users: Mutex::new(Users {
                hashes,
                modified,
                checked: Instant::now(),
                verified: HashMap::new(),
            }),
        })
    }

    fn reload_if_changed(&self, users: &mut Users) {
        if users.checked.elapsed() <= RELOAD_CHECK {
            return;
        }
        users.checked = Instant::now();
        if modification_times(&self.paths) == users.modified {
            return;
        }
        match load_all(&self.paths) {
            Ok((hashes, modified)) => {
                users.hashes = hashes;
                users.modified = modified;
                users.verified.clear();
                tracing::info!(files = self.paths.len(), "htpasswd reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "htpasswd changed but cannot be loaded; keeping the previous users")
            }
        }
    }

    /// Checks a user's password. On success returns an id of the user's current password entry
    /// (changes when the password does), which refresh tokens carry.
    pub fn verify(&self, user: &str, password: &str) -> Option<String> {
        let key: [u8; 32] = Sha256::digest(format!("{user}:{password}").as_bytes()).into();
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_if_changed(&mut users);
        let hash = users.hashes.get(user)?.clone();
        let id = entry_id(&hash);
        if users.verified.get(&key).is_some_and(|u| u == user) {
            return Some(id);
        }
        if bcrypt::verify(password, &hash).unwrap_or(false) {
            users.verified.insert(key, user.to_owned());
            Some(id)
        } else {
            None
        }
    }

    /// The id `verify` returned for this user, if the user still has the same password entry.
    pub fn current_entry(&self, user: &str) -> Option<String> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_if_changed(&mut users);
        users.hashes.get(user).map(|h| entry_id(h))
    }
}

fn entry_id(hash: &str) -> String {
    hex::encode(&Sha256::digest(hash.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_bcrypt_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap()),
        )
        .unwrap();
        let users = Htpasswd::load(vec![path.clone()]).unwrap();
        let id = users.verify("alice", "s3cret").expect("valid password");
        // second time from the verified cache
        assert_eq!(users.verify("alice", "s3cret"), Some(id.clone()));
        assert_eq!(users.current_entry("alice"), Some(id));
        assert!(users.verify("alice", "wrong").is_none());
        assert!(users.verify("bob", "s3cret").is_none());

        std::fs::write(&path, "alice:{SHA}abc\n").unwrap();
        assert!(matches!(
            Htpasswd::load(vec![path]),
            Err(HtpasswdError::UnsupportedHash { line: 1, .. })
        ));
    }

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
        let users = Htpasswd::load(vec![admin, extra]).unwrap();
        assert!(users.verify("admin", "a").is_some());
        assert!(
            users.verify("admin", "shadow").is_none(),
            "a later file cannot take over a user"
        );
        assert!(users.verify("ci", "c").is_some());
    }
}
