//! Registry credentials as Kubernetes hands them over: a mounted Secret of type
//! `kubernetes.io/dockerconfigjson` (the entry for the registry's host) or
//! `kubernetes.io/basic-auth` (`username` and `password` files), or two environment values.
//! Never printed: `Debug` hides the password.

use base64::Engine;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("cannot read the credentials in {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} has no credentials for {host} (its auths name {known})")]
    NoEntry {
        path: String,
        host: String,
        known: String,
    },
    #[error("the credentials for {host} in {path} are not valid: {message}")]
    Invalid {
        path: String,
        host: String,
        message: String,
    },
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// From a directory holding a mounted Secret: `.dockerconfigjson` (the entry for `host`)
    /// or `username` and `password`.
    pub fn from_secret_dir(dir: &Path, host: &str) -> Result<Credentials, CredentialsError> {
        let config = dir.join(".dockerconfigjson");
        if config.exists() {
            let text = read(&config)?;
            return from_docker_config(&text, host, &config.display().to_string());
        }
        let username = read(&dir.join("username"))?;
        let password = read(&dir.join("password"))?;
        Ok(Credentials {
            username: username.trim_end_matches('\n').to_owned(),
            password: password.trim_end_matches('\n').to_owned(),
        })
    }
}

fn read(path: &Path) -> Result<String, CredentialsError> {
    std::fs::read_to_string(path).map_err(|e| CredentialsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The entry for `host` of a Docker config: by exact key, or by a key whose host part (after
/// an optional scheme, before any path) is `host`.
pub fn from_docker_config(
    text: &str,
    host: &str,
    path: &str,
) -> Result<Credentials, CredentialsError> {
    let invalid = |message: &str| CredentialsError::Invalid {
        path: path.to_owned(),
        host: host.to_owned(),
        message: message.to_owned(),
    };
    let config: DockerConfig = serde_json::from_str(text).map_err(|_| CredentialsError::Read {
        path: path.to_owned(),
        message: "not a Docker config (JSON with \"auths\")".into(),
    })?;
    let key_host = |key: &str| {
        let without_scheme = key.split_once("://").map_or(key, |(_, rest)| rest);
        without_scheme
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let entry = config
        .auths
        .get(host)
        .or_else(|| {
            config
                .auths
                .iter()
                .find(|(k, _)| key_host(k) == host)
                .map(|(_, v)| v)
        })
        .ok_or_else(|| {
            let mut known: Vec<&str> = config.auths.keys().map(String::as_str).collect();
            known.sort_unstable();
            CredentialsError::NoEntry {
                path: path.to_owned(),
                host: host.to_owned(),
                known: if known.is_empty() {
                    "no registry".into()
                } else {
                    known.join(", ")
                },
            }
        })?;
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Credentials {
            username: username.clone(),
            password: password.clone(),
        });
    }
    let encoded = entry
        .auth
        .as_deref()
        .ok_or_else(|| invalid("neither auth nor username and password"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid("auth is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid("auth is not text"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| invalid("auth is not user:password"))?;
    Ok(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries_by_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("robot$ci:s3cret");
        let text = format!(
            r#"{{"auths": {{"https://reg.example.org/v1/": {{"auth": "{auth}"}}, "other:5000": {{"username": "u", "password": "p"}}}}}}"#
        );
        let got = from_docker_config(&text, "reg.example.org", "cfg").unwrap();
        assert_eq!(
            (got.username.as_str(), got.password.as_str()),
            ("robot$ci", "s3cret")
        );
        let got = from_docker_config(&text, "other:5000", "cfg").unwrap();
        assert_eq!((got.username.as_str(), got.password.as_str()), ("u", "p"));
        let missing = from_docker_config(&text, "elsewhere", "cfg").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cfg has no credentials for elsewhere (its auths name https://reg.example.org/v1/, other:5000)"
        );
        let broken =
            from_docker_config(r#"{"auths": {"h": {"auth": "!!"}}}"#, "h", "cfg").unwrap_err();
        assert!(
            broken.to_string().contains("auth is not base64"),
            "{broken}"
        );
    }

    #[test]
    fn the_password_is_never_printed() {
        let c = Credentials {
            username: "robot".into(),
            password: "wharf_topsecret".into(),
        };
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
