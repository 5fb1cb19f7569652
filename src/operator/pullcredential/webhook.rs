//! The Pod webhook: every operator replica serves it (HTTPS on :8443 behind the `wharf-webhook`
//! Service), so injection does not depend on which replica leads. It is stateless: the webhook
//! configuration routes each credential's namespaces to `/mutate/pods/<secret>`, and the answer
//! is a JSON patch adding that Secret to `imagePullSecrets`. The serving certificate comes from
//! the Secret the leader maintains and is swapped in live when it is renewed.

use super::build::pod_patch;
use super::names::{WEBHOOK_PORT, WEBHOOK_TLS_SECRET};
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};

/// The current serving certificate; `None` until the leader has issued one (the API server
/// then fails the call, and `failurePolicy: Ignore` lets the Pod through unchanged).
#[derive(Debug, Default)]
pub struct CurrentCert(RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn certified_key(secret: &Secret) -> Option<CertifiedKey> {
    let data = secret.data.as_ref()?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.get("tls.crt")?.0.as_slice())
        .collect::<Result<_, _>>()
        .ok()?;
    let key = rustls_pemfile::private_key(&mut data.get("tls.key")?.0.as_slice()).ok()??;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).ok()
}

/// The AdmissionReview answer for one request.
pub fn review(request: &serde_json::Value, secret: &str) -> serde_json::Value {
    let req = &request["request"];
    let uid = req["uid"].clone();
    let mut response = serde_json::json!({"uid": uid, "allowed": true});
    let is_pod_create = req["kind"]["kind"] == "Pod" && req["operation"] == "CREATE";
    if is_pod_create && let Some(patch) = pod_patch(&req["object"], secret) {
        response["patchType"] = "JSONPatch".into();
        response["patch"] = base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&patch).unwrap_or_default())
            .into();
        tracing::info!(
            namespace = req["namespace"].as_str().unwrap_or(""),
            pod = req["object"]["metadata"]["name"]
                .as_str()
                .or(req["object"]["metadata"]["generateName"].as_str())
                .unwrap_or(""),
            secret,
            "imagePullSecret injected"
        );
    }
    serde_json::json!({
        "apiVersion": request["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    })
}

async fn mutate(Path(secret): Path<String>, body: Bytes) -> Response {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(request) => (
            [("content-type", "application/json")],
            serde_json::to_vec(&review(&request, &secret)).unwrap_or_default(),
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        )
            .into_response(),
    }
}

/// Keeps `cert` equal to what the serving Secret holds.
async fn follow_certificate(client: Client, namespace: String, cert: Arc<CurrentCert>) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={WEBHOOK_TLS_SECRET}"));
    let mut events = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(secret) => match certified_key(&secret) {
                Some(key) => {
                    *cert.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(key));
                    tracing::info!("webhook serving certificate loaded");
                }
                None => tracing::warn!("the webhook serving Secret holds no usable certificate"),
            },
            Err(e) => tracing::debug!(error = %e, "webhook certificate watch"),
        }
    }
}

/// Serves the webhook until `shutdown` resolves.
pub async fn serve(
    client: Client,
    namespace: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cert = Arc::new(CurrentCert::default());
    tokio::spawn(follow_certificate(client, namespace, cert.clone()));
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", WEBHOOK_PORT)).await?;
    let app = Router::new().route("/mutate/pods/{secret}", post(mutate));
    tracing::info!(port = WEBHOOK_PORT, "pod webhook serving");
    crate::registry::server::serve(listener, app, Some(Arc::new(tls)), shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn review_patches_pod_creations_only() {
        let request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "abc", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
            "namespace": "team-a", "object": {"metadata": {"name": "p"}, "spec": {"containers": []}}}});
        let answer = review(&request, "corp-pull");
        assert_eq!(answer["response"]["uid"], "abc");
        assert_eq!(answer["response"]["allowed"], true);
        let patch: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(answer["response"]["patch"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(patch[0]["value"], json!([{"name": "corp-pull"}]));

        let mut update = request.clone();
        update["request"]["operation"] = "UPDATE".into();
        assert!(
            review(&update, "corp-pull")["response"]
                .get("patch")
                .is_none()
        );
    }
}
