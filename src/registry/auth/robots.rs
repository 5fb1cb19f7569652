//! Robot accounts: machine credentials with their own permissions and expiry, managed through
//! the admin API. Each robot is one document (`robots/<name>.json`) so that replicas sharing the
//! storage see the same accounts and writes to different robots never race. Only a SHA-256 of
//! each secret is stored: secrets are 256 random bits, so a fast hash is as strong as bcrypt
//! and costs nothing per request. A rotation keeps the previous secret valid for a grace period
//! so that holders of the old one can switch without a failed pull.

use super::permissions::Permission;
use crate::registry::storage::{Documents, StorageError};
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Usernames of robots carry this prefix, so they can never be mistaken for htpasswd users.
pub const USERNAME_PREFIX: &str = "robot$";
/// How long a verified robot credential is trusted without reading its document again. A
/// revocation or rotation made through another replica takes effect within this time.
const VERIFIED_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RobotError {
    #[error(
        "robot name {0:?} must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error(
        "repository pattern {0:?} is not a valid glob (lowercase name characters, '/', '*', '?')"
    )]
    InvalidPattern(String),
    #[error("a robot needs at least one permission with at least one repository and one action")]
    NoPermissions,
    #[error("robot {0} already exists")]
    Exists(String),
    #[error("robot {0} does not exist")]
    NotFound(String),
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),
    #[error("expiresIn {0:?} is not a duration like 24h or 7d")]
    InvalidExpiry(String),
    #[error("robot document {0} is corrupt")]
    Corrupt(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Robot {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<Permission>,
    pub created_at: u64,
    /// The robot stops authenticating after this time (Unix seconds); `None`: never.
    pub expires_at: Option<u64>,
    pub secrets: Vec<RobotSecret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RobotSecret {
    /// Short public id; refresh tokens name it, so rotating it away ends them.
    pub id: String,
    pub sha256: String,
    pub created_at: u64,
    /// Set on a superseded secret: valid until then (the rotation grace period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<u64>,
}

impl Robot {
    pub fn username(&self) -> String {
        format!("{USERNAME_PREFIX}{}", self.name)
    }

    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// The id of the secret `secret` matches, if the robot and that secret are valid at `now`.
    pub fn check_secret(&self, secret: &str, now: u64) -> Option<String> {
        if self.expired(now) {
            return None;
        }
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        self.secrets
            .iter()
            // Comparing hashes of 256-bit secrets: timing reveals nothing an attacker can use.
            .find(|s| s.sha256 == hash && s.valid_until.is_none_or(|t| t > now))
            .map(|s| s.id.clone())
    }

    pub fn has_secret_id(&self, id: &str, now: u64) -> bool {
        !self.expired(now)
            && self
                .secrets
                .iter()
                .any(|s| s.id == id && s.valid_until.is_none_or(|t| t > now))
    }
}

/// What a caller asks for when creating or updating a robot.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RobotRequest {
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<Permission>,
    /// Lifetime from now, like `24h`; absent: no expiry.
    pub expires_in: Option<String>,
}

pub fn validate_name(name: &str) -> Result<(), RobotError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RobotError::InvalidName(name.to_owned()))
    }
}

pub fn validate_permissions(perms: &[Permission]) -> Result<(), RobotError> {
    if perms.is_empty()
        || perms
            .iter()
            .any(|p| p.repositories.is_empty() || p.actions.is_empty())
    {
        return Err(RobotError::NoPermissions);
    }
    for pattern in perms.iter().flat_map(|p| &p.repositories) {
        if !super::permissions::valid_pattern(pattern) {
            return Err(RobotError::InvalidPattern(pattern.clone()));
        }
    }
    Ok(())
}

fn key(name: &str) -> String {
    format!("robots/{name}.json")
}

/// A new secret, returned once to the caller, and its stored form.
fn new_secret(now: u64) -> (String, RobotSecret) {
    let rng = SystemRandom::new();
    let mut raw = [0u8; 32];
    let mut id = [0u8; 4];
    rng.fill(&mut raw).expect("system randomness");
    rng.fill(&mut id).expect("system randomness");
    let secret = format!(
        "wharf_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let stored = RobotSecret {
        id: hex::encode(id),
        sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        created_at: now,
        valid_until: None,
    };
    (secret, stored)
}

/// (username, sha256 of secret) → (robot, secret id, when verified)
type VerifiedCache = HashMap<(String, [u8; 32]), (Robot, String, Instant)>;

pub struct Robots {
    docs: Arc<dyn Documents>,
    verified: Mutex<VerifiedCache>,
}

impl Robots {
    pub fn new(docs: Arc<dyn Documents>) -> Robots {
        Robots {
            docs,
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Option<Robot>, RobotError> {
        validate_name(name)?;
        match self.docs.get_document(&key(name)).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| RobotError::Corrupt(key(name))),
        }
    }

    pub async fn list(&self) -> Result<Vec<Robot>, RobotError> {
        let mut out = Vec::new();
        for k in self.docs.list_documents("robots").await? {
            let Some(name) = k
                .strip_prefix("robots/")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if let Some(robot) = self.get(name).await? {
                out.push(robot);
            }
        }
        Ok(out)
    }

    fn expiry(expires_in: Option<&str>, now: u64) -> Result<Option<u64>, RobotError> {
        match expires_in {
            None => Ok(None),
            Some(s) => crate::duration::parse(s)
                .map(|d| Some(now + d.as_secs()))
                .map_err(|_| RobotError::InvalidExpiry(s.to_owned())),
        }
    }

    /// Creates a robot; returns it and its secret (shown this once).
    pub async fn create(&self, req: RobotRequest, now: u64) -> Result<(Robot, String), RobotError> {
        let name = req.name.clone().unwrap_or_default();
        validate_name(&name)?;
        validate_permissions(&req.permissions)?;
        let (secret, stored) = new_secret(now);
        let robot = Robot {
            name: name.clone(),
            description: req.description,
            permissions: req.permissions,
            created_at: now,
            expires_at: Self::expiry(req.expires_in.as_deref(), now)?,
            secrets: vec![stored],
        };
        let bytes = serde_json::to_vec(&robot).expect("robot serializes");
        if !self.docs.create_document(&key(&name), bytes).await? {
            return Err(RobotError::Exists(name));
        }
        Ok((robot, secret))
    }

    /// Replaces permissions and description; the secrets stay.
    pub async fn update(&self, name: &str, req: RobotRequest) -> Result<Robot, RobotError> {
        validate_permissions(&req.permissions)?;
        let mut robot = self
            .get(name)
            .await?
            .ok_or_else(|| RobotError::NotFound(name.to_owned()))?;
        robot.permissions = req.permissions;
        robot.description = req.description;
        self.save(&robot).await?;
        Ok(robot)
    }

    /// Issues a new secret. Earlier secrets stay valid for `grace` (zero: they stop at once).
    /// `expires_in`, when given, also moves the robot's expiry.
    pub async fn rotate(
        &self,
        name: &str,
        expires_in: Option<&str>,
        grace: Duration,
        now: u64,
    ) -> Result<(Robot, String), RobotError> {
        let mut robot = self
            .get(name)
            .await?
            .ok_or_else(|| RobotError::NotFound(name.to_owned()))?;
        if let Some(e) = Self::expiry(expires_in, now)? {
            robot.expires_at = Some(e);
        }
        let until = now + grace.as_secs();
        robot
            .secrets
            .retain(|s| s.valid_until.is_none_or(|t| t > now));
        for s in &mut robot.secrets {
            s.valid_until = Some(s.valid_until.map_or(until, |t| t.min(until)));
        }
        robot
            .secrets
            .retain(|s| s.valid_until.is_none_or(|t| t > now));
        let (secret, stored) = new_secret(now);
        robot.secrets.push(stored);
        self.save(&robot).await?;
        Ok((robot, secret))
    }

    pub async fn delete(&self, name: &str) -> Result<bool, RobotError> {
        validate_name(name)?;
        let deleted = self.docs.delete_document(&key(name)).await?;
        self.forget(name);
        Ok(deleted)
    }

    async fn save(&self, robot: &Robot) -> Result<(), RobotError> {
        let bytes = serde_json::to_vec(robot).expect("robot serializes");
        self.docs.put_document(&key(&robot.name), bytes).await?;
        self.forget(&robot.name);
        Ok(())
    }

    fn forget(&self, name: &str) {
        let username = format!("{USERNAME_PREFIX}{name}");
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(u, _), _| u != &username);
    }

    /// Checks `robot$<name>` / secret; returns the robot and the id of the matching secret.
    pub async fn verify(
        &self,
        username: &str,
        secret: &str,
        now: u64,
    ) -> Result<Option<(Robot, String)>, RobotError> {
        let Some(name) = username.strip_prefix(USERNAME_PREFIX) else {
            return Ok(None);
        };
        if validate_name(name).is_err() {
            return Ok(None);
        }
        let cache_key = (
            username.to_owned(),
            Sha256::digest(secret.as_bytes()).into(),
        );
        if let Some((robot, id, at)) = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
            && at.elapsed() < VERIFIED_TTL
            && robot.has_secret_id(id, now)
        {
            return Ok(Some((robot.clone(), id.clone())));
        }
        let Some(robot) = self.get(name).await? else {
            return Ok(None);
        };
        let Some(id) = robot.check_secret(secret, now) else {
            return Ok(None);
        };
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, (robot.clone(), id.clone(), Instant::now()));
        Ok(Some((robot, id)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::permissions::Action;
    use super::*;
    use crate::registry::storage::fs::FsStore;

    fn request(name: &str, expires_in: Option<&str>) -> RobotRequest {
        RobotRequest {
            name: Some(name.into()),
            description: "ci".into(),
            permissions: vec![Permission {
                repositories: vec!["team-a/**".into()],
                actions: vec![Action::Pull],
            }],
            expires_in: expires_in.map(Into::into),
        }
    }

    #[tokio::test]
    async fn lifecycle_create_verify_rotate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path(), false).unwrap();
        let robots = Robots::new(store.clone());
        let now = 1_000_000;
        let (robot, secret) = robots
            .create(request("puller", Some("1h")), now)
            .await
            .unwrap();
        assert_eq!(robot.username(), "robot$puller");
        assert!(matches!(
            robots.create(request("puller", None), now).await,
            Err(RobotError::Exists(_))
        ));
        assert!(
            robots
                .verify("robot$puller", &secret, now)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            robots
                .verify("robot$puller", "wrong", now)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            robots
                .verify("puller", &secret, now)
                .await
                .unwrap()
                .is_none()
        );
        // expiry
        assert!(
            robots
                .verify("robot$puller", &secret, now + 3600)
                .await
                .unwrap()
                .is_none()
        );
        // the stored document holds no secret
        let doc = std::fs::read_to_string(dir.path().join("_wharf/robots/puller.json")).unwrap();
        assert!(!doc.contains(&secret));

        // rotation with a grace period: both work until the grace ends, then only the new one
        let (_, new_secret) = robots
            .rotate("puller", Some("2h"), Duration::from_secs(60), now + 10)
            .await
            .unwrap();
        assert!(
            robots
                .verify("robot$puller", &secret, now + 20)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            robots
                .verify("robot$puller", &new_secret, now + 20)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            robots
                .verify("robot$puller", &secret, now + 71)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            robots
                .verify("robot$puller", &new_secret, now + 3700)
                .await
                .unwrap()
                .is_some()
        );

        assert_eq!(robots.list().await.unwrap().len(), 1);
        assert!(robots.delete("puller").await.unwrap());
        assert!(
            robots
                .verify("robot$puller", &new_secret, now + 20)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let robots = Robots::new(FsStore::new(dir.path(), false).unwrap());
        assert!(matches!(
            robots.create(request("Bad Name", None), 0).await,
            Err(RobotError::InvalidName(_))
        ));
        let mut r = request("ok", None);
        r.permissions[0].repositories = vec!["UPPER/**".into()];
        assert!(matches!(
            robots.create(r, 0).await,
            Err(RobotError::InvalidPattern(_))
        ));
        let mut r = request("ok", None);
        r.permissions.clear();
        assert!(matches!(
            robots.create(r, 0).await,
            Err(RobotError::NoPermissions)
        ));
    }
}
