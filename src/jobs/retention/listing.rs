//! What a registry holds, as the evaluator needs it. A wharf registry lists every manifest
//! with its tags, push and pull times and referrers (`GET /admin/v1/manifests`); any other OCI
//! registry only lists tags, so each tag's digest is read with a HEAD and times are unknown.

use super::super::JobError;
use crate::admin_client::AdminClient;
use crate::retention::Manifest;
use std::collections::BTreeMap;

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

/// Follows `Link: <…>; rel="next"` pages of a listing, collecting the strings under `key`.
async fn paged(
    registry: &AdminClient,
    what: &'static str,
    first: String,
    key: &str,
) -> Result<Option<Vec<String>>, JobError> {
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

/// Every repository the credential may see, or `None` when the registry has no catalog.
pub async fn repositories(registry: &AdminClient) -> Result<Option<Vec<String>>, JobError> {
    let listed = paged(
        registry,
        "list repositories",
        "/v2/_catalog?n=1000".into(),
        "repositories",
    )
    .await;
    match listed {
        Ok(list) => Ok(list),
        // Registries that refuse the catalog (403, 401 for token-only catalogs) are common.
        Err(JobError::Admin(e)) if matches!(e.status(), Some(401 | 403 | 405)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A repository's manifests; `None` when it does not exist.
pub async fn manifests(
    registry: &AdminClient,
    api: Api,
    repository: &str,
) -> Result<Option<Vec<Manifest>>, JobError> {
    match api {
        Api::Wharf => {
            let Some(listing) = registry
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
        Api::Oci => {
            let Some(tags) = paged(
                registry,
                "list tags",
                format!("/v2/{repository}/tags/list?n=1000"),
                "tags",
            )
            .await?
            else {
                return Ok(None);
            };
            let mut by_digest: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for tag in tags {
                if let Some(digest) = registry.manifest_digest(repository, &encode(&tag)).await? {
                    by_digest.entry(digest).or_default().push(tag);
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
