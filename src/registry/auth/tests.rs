//! `Auth` end to end over real files: basic and token flows, scopes, robots, anonymous pulls.

use super::*;
use crate::registry::storage::fs::FsStore;
use axum::http::HeaderValue;

fn basic(user: &str, secret: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
    );
    h.insert(header::HOST, HeaderValue::from_static("reg.example:5000"));
    h
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

async fn setup(token: bool, anonymous_pull: bool) -> (tempfile::TempDir, Auth) {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!(
            "admin:{}\nci:{}\n",
            bcrypt::hash("a", 4).unwrap(),
            bcrypt::hash("c", 4).unwrap()
        ),
    )
    .unwrap();
    let store = FsStore::new(dir.path().join("data"), false).unwrap();
    let auth = Auth::new(
        AuthOptions {
            htpasswd: vec![htpasswd],
            realm: "test".into(),
            anonymous_pull,
            rules: vec![AccessRule {
                users: vec!["ci".into()],
                repositories: vec!["team-a/**".into()],
                actions: vec![Action::Pull, Action::Push],
            }],
            token: token.then(|| TokenSettings {
                realm: None,
                service: "wharf-registry".into(),
                issuer: "wharf".into(),
                lifetime: Duration::from_secs(300),
                refresh_lifetime: Duration::from_secs(3600),
                key_file: None,
                require_token: false,
            }),
            tls: false,
        },
        store,
    )
    .await
    .unwrap();
    (dir, auth)
}

fn challenge_of(e: RegistryError) -> String {
    match e {
        RegistryError::Unauthorized { challenge } => challenge.to_str().unwrap().to_owned(),
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn basic_auth_applies_user_rules() {
    let (_dir, auth) = setup(false, false).await;
    let a = repo("team-a/app");
    let b = repo("team-b/x");
    assert!(
        auth.authorize(&basic("admin", "a"), Scope::Repository(&b, Action::Delete))
            .await
            .is_ok()
    );
    assert!(
        auth.authorize(&basic("ci", "c"), Scope::Repository(&a, Action::Push))
            .await
            .is_ok()
    );
    assert!(matches!(
        auth.authorize(&basic("ci", "c"), Scope::Repository(&a, Action::Delete))
            .await,
        Err(RegistryError::Denied(_))
    ));
    assert!(matches!(
        auth.authorize(&basic("ci", "c"), Scope::Repository(&b, Action::Pull))
            .await,
        Err(RegistryError::Denied(_))
    ));
    let challenge = challenge_of(
        auth.authorize(&basic("ci", "bad"), Scope::Base)
            .await
            .unwrap_err(),
    );
    assert_eq!(challenge, "Basic realm=\"test\"");
    assert!(
        auth.authorize(&HeaderMap::new(), Scope::Repository(&a, Action::Pull))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn anonymous_pull_is_pull_only_and_base_still_challenges() {
    let (_dir, auth) = setup(true, true).await;
    let a = repo("team-a/app");
    assert!(
        auth.authorize(&HeaderMap::new(), Scope::Repository(&a, Action::Pull))
            .await
            .is_ok()
    );
    let c = challenge_of(
        auth.authorize(&HeaderMap::new(), Scope::Repository(&a, Action::Push))
            .await
            .unwrap_err(),
    );
    assert!(
        c.contains("scope=\"repository:team-a/app:pull,push\""),
        "{c}"
    );
    assert!(
        auth.authorize(&HeaderMap::new(), Scope::Base)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn bearer_challenge_and_token_scopes() {
    let (_dir, auth) = setup(true, false).await;
    let a = repo("team-a/app");
    let mut no_creds = HeaderMap::new();
    no_creds.insert(header::HOST, HeaderValue::from_static("reg.example:5000"));
    let c = challenge_of(
        auth.authorize(&no_creds, Scope::Repository(&a, Action::Pull))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        c,
        "Bearer realm=\"http://reg.example:5000/auth/token\",service=\"wharf-registry\",scope=\"repository:team-a/app:pull\""
    );

    let tokens = auth.tokens().unwrap();
    let now = now_unix();
    let ci = auth.login("ci", "c").await.unwrap().unwrap();
    let access = super::endpoint::grant(
        &ci.grants,
        &[
            "repository:team-a/app:pull,push,delete".into(),
            "repository:team-b/x:pull".into(),
        ],
    );
    let claims = Claims {
        iss: "wharf".into(),
        sub: "ci".into(),
        aud: "wharf-registry".into(),
        exp: now + 60,
        nbf: now,
        iat: now,
        jti: "t".into(),
        access,
        refresh_of: None,
    };
    let token = tokens.keys().sign(&claims);
    let id = auth
        .authorize(&bearer(&token), Scope::Repository(&a, Action::Push))
        .await
        .unwrap();
    assert_eq!(id.name.as_deref(), Some("ci"));
    let c = challenge_of(
        auth.authorize(&bearer(&token), Scope::Repository(&a, Action::Delete))
            .await
            .unwrap_err(),
    );
    assert!(c.contains("error=\"insufficient_scope\""), "{c}");
    let b = repo("team-b/x");
    assert!(
        auth.authorize(&bearer(&token), Scope::Repository(&b, Action::Pull))
            .await
            .is_err()
    );
    // The catalog needs its own scope, and is filtered by the account's current grants.
    assert!(
        auth.authorize(&bearer(&token), Scope::Catalog)
            .await
            .is_err()
    );
    let grants = auth.catalog_grants(&id).await.unwrap();
    assert!(grants.allows("team-a/x", Action::Pull) && !grants.allows("team-b/x", Action::Pull));

    let c = challenge_of(
        auth.authorize(&bearer("x.y.z"), Scope::Base)
            .await
            .unwrap_err(),
    );
    assert!(c.contains("error=\"invalid_token\""), "{c}");
}

#[tokio::test]
async fn robots_authenticate_with_their_own_permissions_and_the_admin_api_is_admin_only() {
    let (_dir, auth) = setup(true, false).await;
    let robots = auth.robots().unwrap();
    let (_, secret) = robots
        .create(
            robots::RobotRequest {
                name: Some("puller".into()),
                description: String::new(),
                permissions: vec![Permission {
                    repositories: vec!["team-a/**".into()],
                    actions: vec![Action::Pull],
                }],
                expires_in: Some("1h".into()),
            },
            now_unix(),
        )
        .await
        .unwrap();
    let a = repo("team-a/app");
    let robot = basic("robot$puller", &secret);
    assert!(
        auth.authorize(&robot, Scope::Repository(&a, Action::Pull))
            .await
            .is_ok()
    );
    assert!(matches!(
        auth.authorize(&robot, Scope::Repository(&a, Action::Push))
            .await,
        Err(RegistryError::Denied(_))
    ));
    assert!(matches!(
        auth.authorize_admin(&robot).await,
        Err(RegistryError::Denied(_))
    ));
    assert!(matches!(
        auth.authorize_admin(&basic("ci", "c")).await,
        Err(RegistryError::Denied(_))
    ));
    assert!(auth.authorize_admin(&basic("admin", "a")).await.is_ok());
    assert!(matches!(
        auth.authorize_admin(&basic("admin", "wrong")).await,
        Err(RegistryError::Unauthorized { .. })
    ));
    let login = auth.login("robot$puller", &secret).await.unwrap().unwrap();
    assert!(login.expires_at.is_some());
    // Refresh tokens stop with the credential: revoke the robot.
    assert!(
        auth.current_grants("robot$puller", Some(&login.credential))
            .await
            .unwrap()
            .is_some()
    );
    robots.delete("puller").await.unwrap();
    assert!(
        auth.current_grants("robot$puller", Some(&login.credential))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        auth.authorize(&robot, Scope::Repository(&a, Action::Pull))
            .await
            .is_err()
    );
}
