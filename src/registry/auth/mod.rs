//! Who may do what.
//!
//! Identities: htpasswd users (bcrypt), robot accounts (`robot$<name>`, managed through the admin
//! API), and, when allowed, anonymous pullers. Two ways to present them: HTTP basic auth on every
//! request, or Docker token auth, where a client trades its credentials at `/auth/token` for a
//! short-lived JWT listing exactly the repositories and actions it may use. With tokens on, a
//! `401` carries a `Bearer` challenge naming the scope the request needs; basic auth keeps working.
//!
//! What an identity may do: htpasswd users without access rules may do everything (and use the
//! admin API); users with rules, robots and anonymous pullers get exactly what their permissions
//! say (`permissions.rs`). Secrets are never logged.

pub mod endpoint;
pub mod htpasswd;
pub mod permissions;
pub mod robots;
pub mod token;

use super::error::RegistryError;
use super::names::RepoName;
use super::storage::Documents;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use htpasswd::{Htpasswd, HtpasswdError};
pub use permissions::Action as Access;
use permissions::{Action, Grants, Permission};
use robots::Robots;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use token::{Claims, TokenKeys};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    #[error("cannot read the token signing key {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token signing key {0} is shorter than 32 bytes")]
    KeyTooShort(PathBuf),
    #[error("cannot load or create the token signing key in storage: {0}")]
    KeyStorage(String),
}

/// Settings of the token service.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// Absolute URL of the token endpoint; by default derived from each request's Host.
    pub realm: Option<String>,
    pub service: String,
    pub issuer: String,
    pub lifetime: Duration,
    pub refresh_lifetime: Duration,
    /// HMAC secret; absent: generated once and kept in storage for every replica.
    pub key_file: Option<PathBuf>,
    /// Refuse basic credentials on the registry API (as Docker Hub and Harbor do): clients get
    /// the Bearer challenge and must fetch a token. The admin API and the realm still take them.
    pub require_token: bool,
}

/// Per-user access rules from the config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessRule {
    pub users: Vec<String>,
    pub repositories: Vec<String>,
    pub actions: Vec<Action>,
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// `/v2/`, `/metrics`: any authenticated identity.
    Base,
    /// `/v2/_catalog`: any authenticated identity; the listing is filtered.
    Catalog,
    Repository(&'a RepoName, Action),
}

/// Who is calling, and how they proved it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None`: anonymous, or an open registry.
    pub name: Option<String>,
    proof: Proof,
}

#[derive(Debug, Clone)]
enum Proof {
    /// Credentials checked on this request: the account's own grants apply.
    Account(Grants),
    /// A token: exactly its `access` claims apply.
    Token(Box<Claims>),
}

impl Identity {
    pub fn may(&self, repository: &str, action: Action) -> bool {
        match &self.proof {
            Proof::Account(g) => g.allows(repository, action),
            Proof::Token(c) => c.allows_repository(repository, action),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(&self.proof, Proof::Account(Grants::Admin))
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct TokenService {
    keys: TokenKeys,
    settings: TokenSettings,
    tls: bool,
}

pub struct Auth {
    /// `None`: no authentication at all (an open registry).
    users: Option<Htpasswd>,
    robots: Option<Robots>,
    rules: HashMap<String, Vec<Permission>>,
    pub(crate) anonymous_pull: bool,
    basic_realm: String,
    tokens: Option<TokenService>,
}

/// An account that presented valid credentials.
pub struct Account {
    pub name: String,
    pub grants: Grants,
    /// Id of the credential used (password entry or robot secret): refresh tokens carry it.
    pub credential: String,
    /// When the credential stops working (robots); tokens never outlive it.
    pub expires_at: Option<u64>,
}

/// Everything `Auth::new` needs.
pub struct AuthOptions {
    pub htpasswd: Vec<PathBuf>,
    pub realm: String,
    pub anonymous_pull: bool,
    pub rules: Vec<AccessRule>,
    pub token: Option<TokenSettings>,
    pub tls: bool,
}

impl Auth {
    /// With no htpasswd file the registry is open and robots and tokens are off: there would
    /// be nobody to administer them.
    pub async fn new(options: AuthOptions, docs: Arc<dyn Documents>) -> Result<Auth, AuthError> {
        if options.htpasswd.is_empty() {
            return Ok(Auth::open());
        }
        let mut rules: HashMap<String, Vec<Permission>> = HashMap::new();
        for rule in &options.rules {
            for user in &rule.users {
                rules.entry(user.clone()).or_default().push(Permission {
                    repositories: rule.repositories.clone(),
                    actions: rule.actions.clone(),
                });
            }
        }
        let tokens = match options.token {
            None => None,
            Some(settings) => {
                let secret = signing_key(settings.key_file.as_ref(), docs.as_ref()).await?;
                Some(TokenService {
                    keys: TokenKeys::new(&secret, &settings.issuer, &settings.service),
                    settings,
                    tls: options.tls,
                })
            }
        };
        Ok(Auth {
            users: Some(Htpasswd::load(options.htpasswd)?),
            robots: Some(Robots::new(docs)),
            rules,
            anonymous_pull: options.anonymous_pull,
            basic_realm: options.realm.replace('"', ""),
            tokens,
        })
    }

    pub fn open() -> Auth {
        Auth {
            users: None,
            robots: None,
            rules: HashMap::new(),
            anonymous_pull: true,
            basic_realm: "wharf".into(),
            tokens: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.users.is_none()
    }

    pub fn robots(&self) -> Option<&Robots> {
        self.robots.as_ref()
    }

    pub fn tokens(&self) -> Option<&TokenService> {
        self.tokens.as_ref()
    }

    fn grants_of_user(&self, user: &str) -> Grants {
        match self.rules.get(user) {
            Some(perms) => Grants::Limited(perms.clone()),
            None => Grants::Admin,
        }
    }

    pub(crate) fn anonymous_grants(&self) -> Grants {
        match self.anonymous_pull {
            true => Grants::Limited(vec![Permission {
                repositories: vec!["**".into()],
                actions: vec![Action::Pull],
            }]),
            false => Grants::Limited(Vec::new()),
        }
    }

    /// Checks a name and secret: a robot (`robot$…`) or an htpasswd user.
    pub async fn login(&self, user: &str, secret: &str) -> Result<Option<Account>, RegistryError> {
        let Some(users) = &self.users else {
            return Ok(None);
        };
        if user.starts_with(robots::USERNAME_PREFIX) {
            let Some(robots) = &self.robots else {
                return Ok(None);
            };
            let verified = robots
                .verify(user, secret, now_unix())
                .await
                .map_err(robot_storage_error)?;
            return Ok(verified.map(|(robot, credential)| Account {
                name: user.to_owned(),
                expires_at: robot.expires_at,
                grants: Grants::Limited(robot.permissions),
                credential,
            }));
        }
        Ok(users.verify(user, secret).map(|credential| Account {
            name: user.to_owned(),
            grants: self.grants_of_user(user),
            credential,
            expires_at: None,
        }))
    }

    /// The grants an account has now (for refresh tokens and catalog filtering), if it still
    /// exists and, when `credential` is given, still holds that credential.
    pub async fn current_grants(
        &self,
        name: &str,
        credential: Option<&str>,
    ) -> Result<Option<Grants>, RegistryError> {
        let Some(users) = &self.users else {
            return Ok(Some(Grants::Admin));
        };
        if let Some(robot_name) = name.strip_prefix(robots::USERNAME_PREFIX) {
            let Some(robots) = &self.robots else {
                return Ok(None);
            };
            let robot = robots.get(robot_name).await.map_err(robot_storage_error)?;
            return Ok(robot
                .filter(|r| {
                    !r.expired(now_unix())
                        && credential.is_none_or(|c| r.has_secret_id(c, now_unix()))
                })
                .map(|r| Grants::Limited(r.permissions)));
        }
        if name == ANONYMOUS {
            return Ok(Some(self.anonymous_grants()));
        }
        let entry = users.current_entry(name);
        match (entry, credential) {
            (None, _) => Ok(None),
            (Some(e), Some(c)) if e != c => Ok(None),
            _ => Ok(Some(self.grants_of_user(name))),
        }
    }

    /// Checks a request. Returns who is calling, or the error to answer with: `401` with a
    /// challenge when credentials are missing or invalid (or a token lacks the scope), `403`
    /// when valid basic credentials do not allow the action.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        scope: Scope<'_>,
    ) -> Result<Identity, RegistryError> {
        if self.is_open() {
            return Ok(Identity {
                name: None,
                proof: Proof::Account(Grants::Admin),
            });
        }
        match presented(headers) {
            Presented::Bearer(raw) => {
                let Some(tokens) = &self.tokens else {
                    return Err(self.challenge(headers, scope, None));
                };
                let claims = match tokens.keys.verify(raw, now_unix(), false) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::info!(reason = %e, "token refused");
                        return Err(self.challenge(headers, scope, Some("invalid_token")));
                    }
                };
                let allowed = match scope {
                    Scope::Base => true,
                    Scope::Catalog => claims.allows_catalog(),
                    Scope::Repository(repo, action) => {
                        claims.allows_repository(repo.as_str(), action)
                    }
                };
                if !allowed {
                    return Err(self.challenge(headers, scope, Some("insufficient_scope")));
                }
                Ok(Identity {
                    name: Some(claims.sub.clone()),
                    proof: Proof::Token(Box::new(claims)),
                })
            }
            Presented::Basic(..)
                if self
                    .tokens
                    .as_ref()
                    .is_some_and(|t| t.settings.require_token) =>
            {
                Err(self.challenge(headers, scope, None))
            }
            Presented::Basic(user, secret) => {
                let Some(account) = self.login(&user, &secret).await? else {
                    tracing::info!(user = %user, "authentication failed");
                    return Err(self.challenge(headers, scope, None));
                };
                if let Scope::Repository(repo, action) = scope
                    && !account.grants.allows(repo.as_str(), action)
                {
                    return Err(RegistryError::Denied("this account may not do that here"));
                }
                Ok(Identity {
                    name: Some(account.name),
                    proof: Proof::Account(account.grants),
                })
            }
            Presented::Nothing => {
                // The base endpoint always challenges, so that `login` really checks credentials.
                if let Scope::Repository(repo, action) = scope
                    && self.anonymous_grants().allows(repo.as_str(), action)
                {
                    return Ok(Identity {
                        name: None,
                        proof: Proof::Account(self.anonymous_grants()),
                    });
                }
                Err(self.challenge(headers, scope, None))
            }
        }
    }

    /// Admin API access: basic credentials of an unrestricted htpasswd user.
    pub async fn authorize_admin(&self, headers: &HeaderMap) -> Result<Identity, RegistryError> {
        if self.is_open() {
            return Err(RegistryError::Denied(
                "the admin API needs authentication to be configured",
            ));
        }
        let Presented::Basic(user, secret) = presented(headers) else {
            return Err(RegistryError::Unauthorized {
                challenge: basic_challenge(&self.basic_realm),
            });
        };
        match self.login(&user, &secret).await? {
            Some(account) if account.grants.is_admin() => Ok(Identity {
                name: Some(account.name),
                proof: Proof::Account(account.grants),
            }),
            Some(_) => Err(RegistryError::Denied("the admin API is for administrators")),
            None => {
                tracing::info!(user = %user, "admin authentication failed");
                Err(RegistryError::Unauthorized {
                    challenge: basic_challenge(&self.basic_realm),
                })
            }
        }
    }

    /// The grants to filter a catalog listing with.
    pub async fn catalog_grants(&self, identity: &Identity) -> Result<Grants, RegistryError> {
        match &identity.proof {
            Proof::Account(g) => Ok(g.clone()),
            Proof::Token(claims) => Ok(self
                .current_grants(&claims.sub, None)
                .await?
                .unwrap_or(Grants::Limited(Vec::new()))),
        }
    }

    fn challenge(
        &self,
        headers: &HeaderMap,
        scope: Scope<'_>,
        error: Option<&str>,
    ) -> RegistryError {
        let Some(tokens) = &self.tokens else {
            return RegistryError::Unauthorized {
                challenge: basic_challenge(&self.basic_realm),
            };
        };
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            tokens.realm(headers),
            tokens.settings.service
        );
        match scope {
            Scope::Base => {}
            Scope::Catalog => value.push_str(",scope=\"registry:catalog:*\""),
            Scope::Repository(repo, action) => {
                let actions = match action {
                    Action::Pull => "pull",
                    Action::Push => "pull,push",
                    Action::Delete => "delete",
                };
                value.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
            }
        }
        if let Some(e) = error {
            value.push_str(&format!(",error=\"{e}\""));
        }
        RegistryError::Unauthorized {
            challenge: HeaderValue::from_str(&value)
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"/auth/token\"")),
        }
    }
}

/// The name anonymous tokens are issued to.
pub const ANONYMOUS: &str = "<anonymous>";

impl TokenService {
    /// The token endpoint's URL as this client reaches the registry.
    fn realm(&self, headers: &HeaderMap) -> String {
        if let Some(realm) = &self.settings.realm {
            return realm.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or("localhost");
        let scheme = match headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
        {
            Some("https") => "https",
            Some("http") => "http",
            _ if self.tls => "https",
            _ => "http",
        };
        format!("{scheme}://{host}/auth/token")
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }
}

fn basic_challenge(realm: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"wharf\""))
}

fn robot_storage_error(e: robots::RobotError) -> RegistryError {
    tracing::error!(error = %e, "robot accounts cannot be read");
    RegistryError::Unsupported("robot accounts are unavailable")
}

pub(crate) enum Presented<'a> {
    Nothing,
    Basic(String, String),
    Bearer(&'a str),
}

pub(crate) fn presented(headers: &HeaderMap) -> Presented<'_> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Presented::Nothing;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Presented::Bearer(rest.trim());
    }
    if scheme.eq_ignore_ascii_case("basic")
        && let Some(pair) = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
        && let Some((user, secret)) = pair.split_once(':')
    {
        return Presented::Basic(user.to_owned(), secret.to_owned());
    }
    // Unreadable credentials are treated as wrong ones, not as none.
    Presented::Basic(String::new(), String::new())
}

/// The HMAC secret: from a file (the operator mounts a Secret), or created once in storage.
async fn signing_key(file: Option<&PathBuf>, docs: &dyn Documents) -> Result<Vec<u8>, AuthError> {
    if let Some(path) = file {
        let bytes = std::fs::read(path).map_err(|source| AuthError::KeyFile {
            path: path.clone(),
            source,
        })?;
        let trimmed = bytes.trim_ascii().to_vec();
        if trimmed.len() < 32 {
            return Err(AuthError::KeyTooShort(path.clone()));
        }
        return Ok(trimmed);
    }
    const KEY: &str = "token/signing-key";
    let mut fresh = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh)
        .map_err(|_| AuthError::KeyStorage("no system randomness".into()))?;
    // Whichever replica creates it first wins; everyone then reads the same key.
    docs.create_document(KEY, hex::encode(fresh).into_bytes())
        .await
        .map_err(|e| AuthError::KeyStorage(e.to_string()))?;
    docs.get_document(KEY)
        .await
        .map_err(|e| AuthError::KeyStorage(e.to_string()))?
        .filter(|k| k.len() >= 32)
        .ok_or_else(|| AuthError::KeyStorage("the stored key is missing or too short".into()))
}

#[cfg(test)]
mod tests;
