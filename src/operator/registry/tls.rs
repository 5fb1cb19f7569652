//! Certificates for `tls.selfSigned`: one CA per Registry (key in the Secret `<name>-ca`,
//! certificate published in the ConfigMap `<name>-ca` for clients to trust) and a serving
//! certificate for the Service's DNS names. Like the admin credential, existing material is reused
//! so that a reconcile with nothing changed writes nothing; it is renewed well before it expires
//! and reissued when the names it must cover change.

use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::time::Duration;
use time::OffsetDateTime;

pub const NOT_AFTER_ANNOTATION: &str = "wharf.dev/not-after";
pub const DNS_NAMES_ANNOTATION: &str = "wharf.dev/dns-names";
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SERVING_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Renew once a certificate is in the last third of its life, like cert-manager's default.
const SERVING_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);
/// Tolerate clients whose clock is a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("time out of range")]
    Time,
}

#[derive(Clone, PartialEq, Eq)]
pub struct SelfSignedTls {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// Unix seconds.
    pub ca_not_after: i64,
    pub cert_pem: String,
    pub key_pem: String,
    pub dns_names: Vec<String>,
    pub not_after: i64,
}

impl std::fmt::Debug for SelfSignedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSignedTls")
            .field("dns_names", &self.dns_names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl SelfSignedTls {
    /// When the serving certificate (or the CA) should next be renewed, in Unix seconds.
    pub fn renew_at(&self) -> i64 {
        (self.not_after - SERVING_RENEW_BEFORE.as_secs() as i64)
            .min(self.ca_not_after - CA_RENEW_BEFORE.as_secs() as i64)
    }
}

fn value(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|v| !v.is_empty())
}

fn annotation(secret: Option<&Secret>, key: &str) -> Option<String> {
    secret?.metadata.annotations.as_ref()?.get(key).cloned()
}

fn ca_params(namespace: &str, registry: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "wharf");
    dn.push(
        DnType::CommonName,
        format!("wharf CA {namespace}/{registry}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn at(unix: i64) -> Result<OffsetDateTime, TlsError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| TlsError::Time)
}

/// The certificates for a self-signed Registry at time `now` (Unix seconds), reusing what the
/// existing Secrets hold whenever it is still good.
pub fn self_signed(
    namespace: &str,
    registry: &str,
    dns_names: &[String],
    ca_secret: Option<&Secret>,
    tls_secret: Option<&Secret>,
    now: i64,
) -> Result<SelfSignedTls, TlsError> {
    let params = ca_params(namespace, registry)?;
    let existing_ca = match (
        value(ca_secret, "tls.crt"),
        value(ca_secret, "tls.key"),
        annotation(ca_secret, NOT_AFTER_ANNOTATION).and_then(|v| v.parse::<i64>().ok()),
    ) {
        (Some(cert), Some(key), Some(not_after))
            if not_after - CA_RENEW_BEFORE.as_secs() as i64 > now =>
        {
            KeyPair::from_pem(&key).ok().map(|k| (cert, k, not_after))
        }
        _ => None,
    };
    let ca_reused = existing_ca.is_some();
    let (ca_cert_pem, ca_key, ca_not_after) = match existing_ca {
        Some(ca) => ca,
        None => {
            let key = KeyPair::generate()?;
            let mut p = params.clone();
            let not_after = now + CA_VALIDITY.as_secs() as i64;
            p.not_before = at(now - BACKDATE.as_secs() as i64)?;
            p.not_after = at(not_after)?;
            (p.self_signed(&key)?.pem(), key, not_after)
        }
    };

    let existing_names = annotation(tls_secret, DNS_NAMES_ANNOTATION);
    let existing_not_after =
        annotation(tls_secret, NOT_AFTER_ANNOTATION).and_then(|v| v.parse::<i64>().ok());
    let serving_reusable = ca_reused
        && existing_names.as_deref() == Some(dns_names.join(",").as_str())
        && value(tls_secret, "ca.crt").as_deref() == Some(ca_cert_pem.as_str())
        && existing_not_after
            .is_some_and(|not_after| not_after - SERVING_RENEW_BEFORE.as_secs() as i64 > now);
    if serving_reusable
        && let (Some(cert_pem), Some(key_pem), Some(not_after)) = (
            value(tls_secret, "tls.crt"),
            value(tls_secret, "tls.key"),
            existing_not_after,
        )
    {
        return Ok(SelfSignedTls {
            ca_cert_pem,
            ca_key_pem: ca_key.serialize_pem(),
            ca_not_after,
            cert_pem,
            key_pem,
            dns_names: dns_names.to_vec(),
            not_after,
        });
    }

    let issuer = Issuer::new(params, &ca_key);
    let key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    serving.distinguished_name = dn;
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.use_authority_key_identifier_extension = true;
    let not_after = (now + SERVING_VALIDITY.as_secs() as i64).min(ca_not_after);
    serving.not_before = at(now - BACKDATE.as_secs() as i64)?;
    serving.not_after = at(not_after)?;
    let cert = serving.signed_by(&key, &issuer)?;
    Ok(SelfSignedTls {
        ca_cert_pem,
        ca_key_pem: ca_key.serialize_pem(),
        ca_not_after,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        dns_names: dns_names.to_vec(),
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use rustls::client::danger::ServerCertVerifier;
    use std::collections::BTreeMap;

    const NOW: i64 = 1_800_000_000;

    fn names() -> Vec<String> {
        vec!["main.ns.svc".into(), "localhost".into(), "127.0.0.1".into()]
    }

    fn as_secrets(t: &SelfSignedTls) -> (Secret, Secret) {
        let secret = |data: Vec<(&str, &str)>, annotations: Vec<(&str, String)>| Secret {
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(
                    annotations
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            ..Secret::default()
        };
        (
            secret(
                vec![("tls.crt", &t.ca_cert_pem), ("tls.key", &t.ca_key_pem)],
                vec![(NOT_AFTER_ANNOTATION, t.ca_not_after.to_string())],
            ),
            secret(
                vec![
                    ("tls.crt", &t.cert_pem),
                    ("tls.key", &t.key_pem),
                    ("ca.crt", &t.ca_cert_pem),
                ],
                vec![
                    (NOT_AFTER_ANNOTATION, t.not_after.to_string()),
                    (DNS_NAMES_ANNOTATION, t.dns_names.join(",")),
                ],
            ),
        )
    }

    #[test]
    fn issues_a_chain_rustls_accepts_for_every_name() {
        let t = self_signed("ns", "main", &names(), None, None, NOW).unwrap();
        let ca = rustls_pemfile::certs(&mut t.ca_cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let leaf = rustls_pemfile::certs(&mut t.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        let when = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(NOW as u64));
        for name in names() {
            let server = rustls::pki_types::ServerName::try_from(name.clone()).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &server, &[], when)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("other.ns.svc").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], when)
                .is_err()
        );
    }

    #[test]
    fn reuses_good_material_and_renews_or_reissues_when_due() {
        let first = self_signed("ns", "main", &names(), None, None, NOW).unwrap();
        let (ca, tls) = as_secrets(&first);
        let same = self_signed("ns", "main", &names(), Some(&ca), Some(&tls), NOW + 3600).unwrap();
        assert_eq!(same, first, "nothing due: byte-for-byte reuse");

        let renewed_at = first.renew_at() + 1;
        let renewed =
            self_signed("ns", "main", &names(), Some(&ca), Some(&tls), renewed_at).unwrap();
        assert_eq!(
            renewed.ca_cert_pem, first.ca_cert_pem,
            "the CA outlives the leaf"
        );
        assert_ne!(renewed.cert_pem, first.cert_pem);
        assert!(renewed.not_after > first.not_after);

        let mut more = names();
        more.push("registry.example.com".into());
        let reissued = self_signed("ns", "main", &more, Some(&ca), Some(&tls), NOW).unwrap();
        assert_eq!(reissued.ca_cert_pem, first.ca_cert_pem);
        assert_ne!(reissued.cert_pem, first.cert_pem);

        let fresh_ca = self_signed("ns", "main", &names(), None, Some(&tls), NOW).unwrap();
        assert_ne!(fresh_ca.ca_cert_pem, first.ca_cert_pem);
        assert_ne!(
            fresh_ca.cert_pem, first.cert_pem,
            "a new CA means a new leaf"
        );
    }
}
