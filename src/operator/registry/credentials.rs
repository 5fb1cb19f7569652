//! The generated admin credential and its htpasswd entry. Random generation lives here, before
//! the pure build, so that a reconcile with nothing changed reproduces the same objects: an
//! existing password is reused, and so is its bcrypt hash (bcrypt salts, so re-hashing would
//! change the Secret, and roll the pods, on every pass).

use super::names::ADMIN_USER;
use k8s_openapi::api::core::v1::Secret;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Annotation on the htpasswd Secret naming the password its hash was made from (as a SHA-256:
/// the password has 190 random bits, so this reveals nothing).
pub const PASSWORD_SHA256_ANNOTATION: &str = "wharf.dev/password-sha256";
/// Low enough that the registry's first check of a credential takes milliseconds; the registry
/// caches verified credentials, so the cost is paid once per pod.
const BCRYPT_COST: u32 = 10;
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
const PASSWORD_LENGTH: usize = 33;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the system random number generator failed")]
    Random,
    #[error("cannot hash the admin password: {0}")]
    Hash(#[from] bcrypt::BcryptError),
}

#[derive(Clone, PartialEq, Eq)]
pub struct AdminCredentials {
    pub username: String,
    pub password: String,
    pub password_sha256: String,
    /// `user:bcrypt-hash\n`
    pub htpasswd: String,
    /// What the registry sends with its push events (`events_token`).
    pub events_token: String,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn secret_value(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|v| !v.is_empty())
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The bearer token a Registry's push events carry: derived from its admin password, so the
/// operator can check it from the admin Secret without keeping more state, and it changes
/// when the admin credential is rotated. It reveals nothing about the password.
pub fn events_token(admin_password: &str) -> String {
    sha256_hex(&format!("wharf push events\0{admin_password}"))
}

fn generate_password() -> Result<String, CredentialsError> {
    let mut random = [0u8; PASSWORD_LENGTH];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| CredentialsError::Random)?;
    // 256 is not a multiple of the alphabet size; the bias is under 1 bit over the whole password.
    Ok(random
        .iter()
        .map(|b| PASSWORD_ALPHABET[*b as usize % PASSWORD_ALPHABET.len()] as char)
        .collect())
}

/// The admin credential from the existing Secrets, or a new one when they are missing or do not
/// agree (someone deleted or edited the admin Secret: that is how a user rotates it).
pub fn admin_credentials(
    admin_secret: Option<&Secret>,
    htpasswd_secret: Option<&Secret>,
) -> Result<AdminCredentials, CredentialsError> {
    let password = match (
        secret_value(admin_secret, "username"),
        secret_value(admin_secret, "password"),
    ) {
        (Some(user), Some(password)) if user == ADMIN_USER => password,
        _ => generate_password()?,
    };
    let password_sha256 = sha256_hex(&password);
    let existing_hash_matches = htpasswd_secret
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(PASSWORD_SHA256_ANNOTATION))
        == Some(&password_sha256);
    let htpasswd = match secret_value(htpasswd_secret, "htpasswd") {
        Some(existing)
            if existing_hash_matches && existing.starts_with(&format!("{ADMIN_USER}:$2")) =>
        {
            existing
        }
        _ => format!("{ADMIN_USER}:{}\n", bcrypt::hash(&password, BCRYPT_COST)?),
    };
    Ok(AdminCredentials {
        username: ADMIN_USER.to_owned(),
        events_token: events_token(&password),
        password,
        password_sha256,
        htpasswd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(data: &[(&str, &str)], annotations: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            ..Secret::default()
        }
    }

    #[test]
    fn a_new_credential_is_random_and_its_hash_verifies() {
        let a = admin_credentials(None, None).unwrap();
        let b = admin_credentials(None, None).unwrap();
        assert_ne!(a.password, b.password);
        assert_eq!(a.password.len(), PASSWORD_LENGTH);
        let hash = a.htpasswd.trim().strip_prefix("wharf-admin:").unwrap();
        assert!(bcrypt::verify(&a.password, hash).unwrap());
        assert!(
            !format!("{a:?}").contains(&a.password),
            "Debug must not print the password"
        );
    }

    #[test]
    fn existing_secrets_are_reused_byte_for_byte() {
        let first = admin_credentials(None, None).unwrap();
        let admin = secret(
            &[("username", ADMIN_USER), ("password", &first.password)],
            &[],
        );
        let htpasswd = secret(
            &[("htpasswd", &first.htpasswd)],
            &[(PASSWORD_SHA256_ANNOTATION, &first.password_sha256)],
        );
        let again = admin_credentials(Some(&admin), Some(&htpasswd)).unwrap();
        assert_eq!(again, first);
    }

    #[test]
    fn a_changed_password_gets_a_new_hash() {
        let first = admin_credentials(None, None).unwrap();
        let admin = secret(&[("username", ADMIN_USER), ("password", "edited")], &[]);
        let htpasswd = secret(
            &[("htpasswd", &first.htpasswd)],
            &[(PASSWORD_SHA256_ANNOTATION, &first.password_sha256)],
        );
        let again = admin_credentials(Some(&admin), Some(&htpasswd)).unwrap();
        assert_eq!(again.password, "edited");
        assert_ne!(again.htpasswd, first.htpasswd);
    }

    #[test]
    fn a_deleted_admin_secret_means_a_new_password() {
        let first = admin_credentials(None, None).unwrap();
        let htpasswd = secret(
            &[("htpasswd", &first.htpasswd)],
            &[(PASSWORD_SHA256_ANNOTATION, &first.password_sha256)],
        );
        let again = admin_credentials(None, Some(&htpasswd)).unwrap();
        assert_ne!(again.password, first.password);
        assert_ne!(again.htpasswd, first.htpasswd);
    }
}
