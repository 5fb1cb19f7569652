//! The leader's side of the Pod webhook: the CA and serving certificate (renewed before they
//! expire, reusing `registry/tls.rs`) and the MutatingWebhookConfiguration with that CA as
//! `caBundle`. Written only when something differs.

use super::Context;
use super::build::webhook_configuration;
use super::names::{WEBHOOK_CA_SECRET, WEBHOOK_SERVICE, WEBHOOK_TLS_SECRET};
use super::reconcile::ReconcileError;
use super::stores::WEBHOOK_TLS_LABEL;
use crate::crd::image_pull_credential::InjectMode;
use crate::operator::apply::{Outcome, apply};
use crate::operator::registry::tls::{
    DNS_NAMES_ANNOTATION, NOT_AFTER_ANNOTATION, SelfSignedTls, self_signed,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use std::collections::BTreeMap;

pub fn dns_names(namespace: &str) -> Vec<String> {
    vec![
        WEBHOOK_SERVICE.to_owned(),
        format!("{WEBHOOK_SERVICE}.{namespace}"),
        format!("{WEBHOOK_SERVICE}.{namespace}.svc"),
        format!("{WEBHOOK_SERVICE}.{namespace}.svc.cluster.local"),
    ]
}

fn secret(
    name: &str,
    namespace: &str,
    annotations: BTreeMap<String, String>,
    data: &[(&str, &str)],
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                WEBHOOK_TLS_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// The CA and serving Secrets. They belong to the operator's installation, like its Lease: no
/// owner, removed with the operator's namespace.
pub fn certificate_secrets(namespace: &str, tls: &SelfSignedTls) -> (Secret, Secret) {
    let ca = secret(
        WEBHOOK_CA_SECRET,
        namespace,
        BTreeMap::from([(
            NOT_AFTER_ANNOTATION.to_owned(),
            tls.ca_not_after.to_string(),
        )]),
        &[("tls.crt", &tls.ca_cert_pem), ("tls.key", &tls.ca_key_pem)],
    );
    let serving = secret(
        WEBHOOK_TLS_SECRET,
        namespace,
        BTreeMap::from([
            (NOT_AFTER_ANNOTATION.to_owned(), tls.not_after.to_string()),
            (DNS_NAMES_ANNOTATION.to_owned(), tls.dns_names.join(",")),
        ]),
        &[
            ("tls.crt", &tls.cert_pem),
            ("tls.key", &tls.key_pem),
            ("ca.crt", &tls.ca_cert_pem),
        ],
    );
    (ca, serving)
}

/// Brings the webhook's certificates and configuration up to date; returns how many objects
/// were written. Without PodWebhook credentials there is nothing to do: the configuration's
/// owner references let Kubernetes delete it when the last one goes.
pub async fn ensure(ctx: &Context, now: i64) -> Result<usize, ReconcileError> {
    let credentials = ctx.credentials.state();
    if !credentials
        .iter()
        .any(|c| c.spec.mode() == InjectMode::PodWebhook && c.metadata.deletion_timestamp.is_none())
    {
        return Ok(0);
    }
    let ns = &ctx.operator_namespace;
    let live_ca = ctx
        .stores
        .webhook_secrets
        .get(&ObjectRef::new(WEBHOOK_CA_SECRET).within(ns));
    let live_tls = ctx
        .stores
        .webhook_secrets
        .get(&ObjectRef::new(WEBHOOK_TLS_SECRET).within(ns));
    let tls = self_signed(
        ns,
        "webhook",
        &dns_names(ns),
        live_ca.as_deref(),
        live_tls.as_deref(),
        now,
    )?;
    let (ca, serving) = certificate_secrets(ns, &tls);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut written = 0;
    for (desired, live) in [(&ca, live_ca), (&serving, live_tls)] {
        if apply(&secrets, desired, live.as_deref()).await? == Outcome::Written {
            written += 1;
        }
    }
    let Some(desired) = webhook_configuration(
        credentials.iter().map(|c| c.as_ref()),
        ns,
        tls.ca_cert_pem.as_bytes(),
    ) else {
        return Ok(written);
    };
    let live = ctx
        .stores
        .webhook_configurations
        .get(&ObjectRef::new(super::names::WEBHOOK_CONFIGURATION));
    let api: Api<MutatingWebhookConfiguration> = Api::all(ctx.client.clone());
    if apply(&api, &desired, live.as_deref()).await? == Outcome::Written {
        written += 1;
    }
    Ok(written)
}
