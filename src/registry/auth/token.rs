//! Docker registry tokens: compact JWTs signed with HMAC-SHA256. The registry is both issuer and
//! verifier, so a shared secret (mounted from a Secret, or kept in storage) lets every replica
//! verify what any replica issued. Only `HS256` is accepted: a token naming another algorithm,
//! or `none`, is refused before its signature is looked at.

use super::permissions::Action;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Clock skew tolerated between replicas (and clients' idea of `nbf`).
const LEEWAY_SECS: u64 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm is not HS256")]
    Algorithm,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued for another registry")]
    WrongAudience,
    #[error("token is not of the expected kind")]
    WrongKind,
}

/// One `access` entry: actions granted on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl ResourceAccess {
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind
            && self.name == name
            && self.actions.iter().any(|a| a == action || a == "*")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceAccess>,
    /// Set on refresh tokens only: which credential they were issued from, so that rotating or
    /// revoking it also ends its refresh tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_of: Option<String>,
}

impl Claims {
    pub fn allows_repository(&self, repository: &str, action: Action) -> bool {
        self.access
            .iter()
            .any(|a| a.allows("repository", repository, action.as_str()))
    }

    pub fn allows_catalog(&self) -> bool {
        self.access
            .iter()
            .any(|a| a.kind == "registry" && a.name == "catalog")
    }
}

pub struct TokenKeys {
    key: hmac::Key,
    pub issuer: String,
    pub service: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
}

impl TokenKeys {
    pub fn new(secret: &[u8], issuer: &str, service: &str) -> TokenKeys {
        TokenKeys {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            issuer: issuer.to_owned(),
            service: service.to_owned(),
        }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{header}.{body}");
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(tag.as_ref()))
    }

    /// Verifies signature, issuer, audience and validity window at `now` (Unix seconds).
    /// `refresh` selects which kind of token is expected.
    pub fn verify(&self, token: &str, now: u64, refresh: bool) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let signature = B64.decode(s).map_err(|_| TokenError::Malformed)?;
        let signing_input = &token[..h.len() + 1 + b.len()];
        hmac::verify(&self.key, signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = B64
            .decode(b)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.iss != self.issuer || claims.aud != self.service {
            return Err(TokenError::WrongAudience);
        }
        if claims.exp + LEEWAY_SECS <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + LEEWAY_SECS {
            return Err(TokenError::NotYetValid);
        }
        if claims.refresh_of.is_some() != refresh {
            return Err(TokenError::WrongKind);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: u64) -> Claims {
        Claims {
            iss: "wharf".into(),
            sub: "alice".into(),
            aud: "registry".into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "1".into(),
            access: vec![ResourceAccess {
                kind: "repository".into(),
                name: "team-a/app".into(),
                actions: vec!["pull".into()],
            }],
            refresh_of: None,
        }
    }

    #[test]
    fn round_trip_and_scope() {
        let keys = TokenKeys::new(b"k1", "wharf", "registry");
        let now = 1_000_000;
        let token = keys.sign(&claims(now));
        let back = keys.verify(&token, now + 10, false).unwrap();
        assert!(back.allows_repository("team-a/app", Action::Pull));
        assert!(!back.allows_repository("team-a/app", Action::Push));
        assert!(!back.allows_repository("team-b/x", Action::Pull));
        assert!(!back.allows_catalog());
    }

    #[test]
    fn refuses_forged_expired_and_foreign_tokens() {
        let keys = TokenKeys::new(b"k1", "wharf", "registry");
        let now = 1_000_000;
        let token = keys.sign(&claims(now));
        let other_key = TokenKeys::new(b"k2", "wharf", "registry");
        assert_eq!(
            other_key.verify(&token, now, false),
            Err(TokenError::Signature)
        );
        assert_eq!(
            keys.verify(&token, now + 400, false),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys.verify(&token, now - 100, false),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(keys.verify(&token, now, true), Err(TokenError::WrongKind));
        let foreign = TokenKeys::new(b"k1", "wharf", "elsewhere");
        assert_eq!(
            foreign.verify(&token, now, false),
            Err(TokenError::WrongAudience)
        );

        // A body edited to grant push keeps the old signature: refused.
        let mut forged = claims(now);
        forged.access[0].actions.push("push".into());
        let forged_body = B64.encode(serde_json::to_vec(&forged).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
        assert_eq!(
            keys.verify(&tampered, now, false),
            Err(TokenError::Signature)
        );

        // alg=none with an empty signature.
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            forged_body
        );
        assert_eq!(keys.verify(&none, now, false), Err(TokenError::Algorithm));
        assert_eq!(keys.verify("a.b", now, false), Err(TokenError::Malformed));
    }
}
