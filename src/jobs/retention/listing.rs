//! What a registry holds, as the evaluator needs it, and the deletions a run makes. A wharf
//! registry lists every manifest with its tags, push and pull times and referrers
//! (`GET /admin/v1/manifests`, through the admin client); any other OCI registry only lists
//! tags, so each tag's digest is read with a HEAD and times are unknown. That side speaks the
//! distribution API through `oci_client`, the client replication uses (token auth per scope,
//! retries, pagination).

use super::super::JobError;
use crate::admin_client::AdminClient;
use crate::oci_client::{Client as OciClient, Credentials, Endpoint, RetryPolicy};
use crate::retention::Manifest;
use std::collections::BTreeMap;
use std::path::Path;

/// How the job talks to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// A wharf registry: full listings with push and pull times.
    Wharf,
    /// Any OCI Distribution registry: tags and digests only.
    Oci,
}

/// Percent-encodes what may not appear raw in a path or query.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The registry a run lists and deletes in.
pub enum Registry {
    Wharf(AdminClient),
    Oci(OciClient),
}

impl Registry {
    /// Credentials from `WHARF_USERNAME` / `WHARF_PASSWORD` (empty for an anonymous endpoint).
    pub fn connect(url: &str, ca_file: Option<&Path>, api: Api) -> Result<Registry, JobError> {
        match api {
            Api::Wharf => Ok(Registry::Wharf(super::super::client(url, ca_file)?)),
            Api::Oci => {
                let username = std::env::var("WHARF_USERNAME").unwrap_or_default();
                let password = std::env::var("WHARF_PASSWORD").unwrap_or_default();
                let endpoint = Endpoint {
                    url: url.to_owned(),
                    credentials: (!username.is_empty())
                        .then_some(Credentials { username, password }),
                    ca_file: ca_file.map(Path::to_path_buf),
                    insecure: false,
                };
                Ok(Registry::Oci(OciClient::new(
                    &endpoint,
                    RetryPolicy::default(),
                )?))
            }
        }
    }

    /// Every repository the credential may see, or `None` when the registry has no catalog.
    pub async fn repositories(&self) -> Result<Option<Vec<String>>, JobError> {
        let listed = match self {
            Registry::Wharf(admin) => paged(
                admin,
                "list repositories",
                "/v2/_catalog?n=1000".into(),
                "repositories",
            )
            .await
            .map_err(|e| (e.status(), JobError::from(e))),
            Registry::Oci(oci) => oci
                .catalog()
                .await
                .map(Some)
                .map_err(|e| (e.status(), JobError::from(e))),
        };
        match listed {
            Ok(list) => Ok(list),
            // Registries that refuse the catalog (403, 401 for token-only catalogs) are common.
            Err((Some(401 | 403 | 404 | 405), _)) => Ok(None),
            Err((_, e)) => Err(e),
        }
    }

    /// A repository's manifests; `None` when it does not exist.
    pub async fn manifests(&self, repository: &str) -> Result<Option<Vec<Manifest>>, JobError> {
        match self {
            Registry::Wharf(admin) => {
                let Some(listing) = admin
                    .get_json(
                        "list manifests",
                        &format!("/admin/v1/manifests?repository={}", encode(repository)),
                    )
                    .await?
                else {
                    return Ok(None);
                };
                serde_json::from_value(listing["manifests"].clone())
                    .map(Some)
                    .map_err(|e| {
                        JobError::Invalid(format!(
                            "the listing of {repository} is not understood: {e}"
                        ))
                    })
            }
            Registry::Oci(oci) => {
                let tags = oci.list_tags(repository).await?;
                if tags.is_empty() {
                    return Ok(None);
                }
                let mut by_digest: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for tag in tags {
                    let head = oci.head_manifest(repository, &encode(&tag)).await?;
                    if let Some(digest) = head.and_then(|h| h.digest) {
                        by_digest.entry(digest.to_string()).or_default().push(tag);
                    }
                }
                Ok(Some(
                    by_digest
                        .into_iter()
                        .map(|(digest, tags)| oci_manifest(digest, tags))
                        .collect(),
                ))
            }
        }
    }

    /// Deletes a tag (`reference` percent-encoded) or, by digest, a manifest; `false` when it
    /// was not there.
    pub async fn delete(&self, repository: &str, reference: &str) -> Result<bool, String> {
        match self {
            Registry::Wharf(admin) => admin
                .delete_path(
                    "delete a manifest or tag",
                    &format!("/v2/{repository}/manifests/{reference}"),
                )
                .await
                .map_err(|e| e.to_string()),
            Registry::Oci(oci) => oci
                .delete_manifest(repository, reference)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// Follows `Link: <…>; rel="next"` pages of a listing, collecting the strings under `key`.
async fn paged(
    registry: &AdminClient,
    what: &'static str,
    first: String,
    key: &str,
) -> Result<Option<Vec<String>>, crate::admin_client::AdminClientError> {
    let mut out = Vec::new();
    let mut next = Some(first);
    let mut pages = 0;
    while let Some(path) = next.take() {
        let Some((page, link)) = registry.get_page(what, &path).await? else {
            return Ok(if pages == 0 { None } else { Some(out) });
        };
        out.extend(
            page[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned)),
        );
        pages += 1;
        // A registry that links a page to itself must not keep the job busy forever.
        if pages >= 10_000 {
            break;
        }
        next = link;
    }
    Ok(Some(out))
}

/// A manifest of a registry that does not say when it was pushed or pulled: rules on times
/// are refused for such registries, so 0 and `None` never decide anything.
fn oci_manifest(digest: String, tags: Vec<String>) -> Manifest {
    Manifest {
        digest,
        tags,
        pushed_at: 0,
        last_pulled_at: None,
        subject: None,
        children: Vec::new(),
    }
}
