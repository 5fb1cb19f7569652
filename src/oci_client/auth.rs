//! The registry handshake: a 401's challenge answered with Basic credentials or a Docker token
//! for the scope asked, cached per scope until shortly before it expires, so that only the
//! first request of a scope pays for the round trip.

use super::challenge::{BearerChallenge, query_encode};
use super::{Credentials, OciError, OciResult};
use reqwest::RequestBuilder;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token is dropped this long before the registry says it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Docker's default when the token endpoint names no lifetime.
const DEFAULT_LIFETIME: u64 = 60;

pub struct Auth {
    http: reqwest::Client,
    credentials: Option<Credentials>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The registry asked for Basic once: send it with every request from now on.
    basic: bool,
    tokens: HashMap<String, (String, Instant)>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Auth {
    pub fn new(http: reqwest::Client, credentials: Option<Credentials>) -> Auth {
        Auth {
            http,
            credentials,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `request` with whatever this client already knows the registry wants for `scope`.
    pub fn authorize(&self, request: RequestBuilder, scope: &str) -> RequestBuilder {
        let state = self.state();
        if let Some((token, until)) = state.tokens.get(scope)
            && Instant::now() < *until
        {
            return request.bearer_auth(token);
        }
        match (&self.credentials, state.basic) {
            (Some(c), true) => request.basic_auth(&c.username, Some(&c.password)),
            _ => request,
        }
    }

    /// Learns from a 401's `WWW-Authenticate`; `true` when the request is worth sending again.
    pub async fn answer(
        &self,
        challenge: Option<&str>,
        scope: &str,
        host: &str,
    ) -> OciResult<bool> {
        let Some(challenge) = challenge else {
            return Ok(false);
        };
        if let Some(bearer) = BearerChallenge::parse(challenge) {
            let (token, lifetime) = self.fetch_token(&bearer, scope, host).await?;
            let until = Instant::now()
                + lifetime
                    .saturating_sub(EXPIRY_MARGIN)
                    .max(Duration::from_secs(5));
            self.state().tokens.insert(scope.to_owned(), (token, until));
            return Ok(true);
        }
        if challenge
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("basic")
            && self.credentials.is_some()
        {
            // Even when another request already learnt it: this one may have gone out before,
            // without credentials. The caller answers one challenge per request, so a refusal
            // of the credentials themselves still ends there.
            self.state().basic = true;
            return Ok(true);
        }
        Ok(false)
    }

    async fn fetch_token(
        &self,
        challenge: &BearerChallenge,
        scope: &str,
        host: &str,
    ) -> OciResult<(String, Duration)> {
        let refused = |message: String| OciError::Unauthorized {
            what: "get a token".into(),
            host: host.to_owned(),
            message,
        };
        if !(challenge.realm.starts_with("https://") || challenge.realm.starts_with("http://")) {
            return Err(refused(format!(
                "the token realm {:?} is not an http(s) URL",
                challenge.realm
            )));
        }
        // The scope the registry challenged for, and the one this request needs (a mount
        // needs pull on its source as well as push on its target).
        let mut scopes: Vec<&str> = scope.split(' ').collect();
        if !challenge.scope.is_empty() && !scopes.contains(&challenge.scope.as_str()) {
            scopes.push(&challenge.scope);
        }
        let separator = if challenge.realm.contains('?') {
            '&'
        } else {
            '?'
        };
        let mut url = format!(
            "{}{separator}service={}",
            challenge.realm,
            query_encode(&challenge.service)
        );
        for s in scopes {
            url.push_str("&scope=");
            url.push_str(&query_encode(s));
        }
        let mut request = self.http.get(&url);
        if let Some(c) = &self.credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let response = request.send().await.map_err(|e| {
            refused(format!(
                "the token endpoint does not answer: {}",
                super::without_url(&e)
            ))
        })?;
        let status = response.status();
        let body = super::read_limited(response, 64 * 1024)
            .await
            .map_err(refused)?;
        if !status.is_success() {
            return Err(refused(format!(
                "the token endpoint answered HTTP {}",
                status.as_u16()
            )));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| refused("the token endpoint's answer is not a token".into()))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| refused("the token endpoint's answer holds no token".into()))?;
        Ok((
            token,
            Duration::from_secs(parsed.expires_in.unwrap_or(DEFAULT_LIFETIME)),
        ))
    }
}
