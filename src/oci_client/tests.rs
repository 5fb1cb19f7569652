use super::*;

#[test]
fn index_entries_and_the_referrers_tag() {
    let index = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:aa","size":1},{"digest":"sha256:bb","size":2}]}"#;
    let entries = index_entries(index);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["digest"], "sha256:bb");
    assert!(index_entries(b"not json").is_empty());
    let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
    assert_eq!(
        referrers_tag(&digest),
        format!("sha256-{}", "ab".repeat(32))
    );
    assert_eq!(
        embedded_media_type(br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#)
            .as_deref(),
        Some("application/vnd.oci.image.index.v1+json")
    );
}

#[test]
fn endpoints_must_be_http_urls_with_a_host() {
    for bad in ["ftp://x", "registry.example.org", "http://"] {
        let endpoint = Endpoint {
            url: bad.into(),
            ..Endpoint::default()
        };
        assert!(
            matches!(
                Client::new(&endpoint, RetryPolicy::default()),
                Err(OciError::Url { .. })
            ),
            "{bad}"
        );
    }
    let ok = Client::new(
        &Endpoint {
            url: "http://127.0.0.1:5000/".into(),
            ..Endpoint::default()
        },
        RetryPolicy::default(),
    )
    .unwrap();
    assert_eq!(ok.host(), "127.0.0.1:5000");
    assert_eq!(
        ok.url("/v2/a/tags/list?n=2").as_str(),
        "http://127.0.0.1:5000/v2/a/tags/list?n=2"
    );
}

#[tokio::test]
async fn every_request_refused_before_basic_was_learnt_is_sent_again() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let credentials = Credentials {
        username: "u".into(),
        password: "p".into(),
    };
    let auth = auth::Auth::new(reqwest::Client::new(), Some(credentials));
    // Two requests went out at once without credentials; both are answered with Basic.
    for _ in 0..2 {
        assert!(
            auth.answer(Some("Basic realm=\"r\""), "repository:a:pull", "h")
                .await
                .unwrap()
        );
    }
    let anonymous = auth::Auth::new(reqwest::Client::new(), None);
    assert!(
        !anonymous
            .answer(Some("Basic realm=\"r\""), "repository:a:pull", "h")
            .await
            .unwrap(),
        "without credentials there is nothing to send"
    );
}
