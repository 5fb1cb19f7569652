//! The one-shot jobs the operator schedules as Kubernetes Jobs and CronJobs. Each talks to a
//! registry's admin API and reports a small JSON summary on stdout and in the container's
//! termination message, which the operator copies into status.

pub mod gc;
pub mod replicate;
pub mod retention;

use crate::admin_client::{AdminClient, AdminClientError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("--registry {0:?} is not an http:// or https:// URL with a host")]
    Url(String),
    #[error("{0} is not set (the job reads the registry credentials from the environment)")]
    MissingCredential(&'static str),
    #[error("cannot read the CA file {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Admin(#[from] AdminClientError),
    #[error(transparent)]
    Oci(#[from] crate::oci_client::OciError),
    #[error("{0}")]
    Invalid(String),
}

/// `https://host:port` → (host, port, tls).
pub fn parse_endpoint(url: &str) -> Result<(String, u16, bool), JobError> {
    let bad = || JobError::Url(url.to_owned());
    let (tls, rest) = match url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        _ => return Err(bad()),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port, tls))
}

/// The admin client a job uses: credentials from `WHARF_USERNAME` / `WHARF_PASSWORD`.
pub fn client(registry: &str, ca_file: Option<&Path>) -> Result<AdminClient, JobError> {
    let (host, port, tls) = parse_endpoint(registry)?;
    let user = std::env::var("WHARF_USERNAME")
        .map_err(|_| JobError::MissingCredential("WHARF_USERNAME"))?;
    let password = std::env::var("WHARF_PASSWORD")
        .map_err(|_| JobError::MissingCredential("WHARF_PASSWORD"))?;
    let ca = match (tls, ca_file) {
        (true, Some(path)) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| JobError::Ca {
                    path: path.to_owned(),
                    source,
                })?,
            )
        }
        _ => None,
    };
    if tls && ca.is_none() {
        return Err(JobError::Invalid(
            "an https:// registry needs --ca-file".into(),
        ));
    }
    Ok(AdminClient::new(
        &host,
        port,
        ca.as_deref(),
        &user,
        &password,
    )?)
}

/// Prints the summary and writes it where Kubernetes reads the termination message (at most
/// 4096 bytes are kept; the summary is far smaller).
pub fn report(summary: &serde_json::Value, termination_log: &Path) {
    let text = summary.to_string();
    println!("{text}");
    if let Err(e) = std::fs::write(termination_log, &text)
        && termination_log.exists()
    {
        eprintln!("wharf: cannot write {}: {e}", termination_log.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("https://main.registry.svc:5000").unwrap(),
            ("main.registry.svc".into(), 5000, true)
        );
        assert_eq!(
            parse_endpoint("http://10.0.0.1:5000/").unwrap(),
            ("10.0.0.1".into(), 5000, false)
        );
        assert_eq!(
            parse_endpoint("http://reg").unwrap(),
            ("reg".into(), 80, false)
        );
        assert!(parse_endpoint("main:5000").is_err());
        assert!(parse_endpoint("http://:5000").is_err());
    }
}
