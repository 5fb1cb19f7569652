//! Manifest parsing and validation: pure functions over the pushed bytes, no storage access.
//! The handler asks storage about the references this returns.

use super::digest::Digest;
use super::error::RegistryError;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The spec's limit: registries SHOULD accept manifests up to 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: Option<String>,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// What the registry needs to know about a manifest to store and index it.
#[derive(Debug)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: Kind,
    /// Blobs that must be in the repository (config and distributable layers).
    pub blobs: Vec<Digest>,
    /// Distributable layers; a sparse push (when allowed) may omit them.
    pub layers: Vec<Digest>,
    /// Child manifests of an index.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for images without one the config's media type (spec: referrers API).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

fn digest_of(d: &Descriptor, what: &str) -> Result<Digest, RegistryError> {
    if d.size < 0 {
        return Err(RegistryError::ManifestInvalid(format!(
            "{what} has a negative size"
        )));
    }
    d.digest
        .parse()
        .map_err(|e| RegistryError::ManifestInvalid(format!("{what}: {e}")))
}

/// Layers the image spec marks as never pushed to registries (foreign or non-distributable).
fn is_non_distributable(media_type: Option<&str>) -> bool {
    media_type.is_some_and(|m| {
        m.contains(".nondistributable.")
            || m == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    })
}

/// Parses a manifest pushed with `content_type` (the request's Content-Type, possibly empty).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, RegistryError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(RegistryError::ManifestTooLarge(MAX_MANIFEST_BYTES));
    }
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::ManifestInvalid(format!("not a JSON manifest: {e}")))?;
    // Clients send the media type as Content-Type; the document's own field must agree with it.
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (content_type, raw.media_type.as_deref()) {
        (Some(header), Some(body)) if header != body => {
            return Err(RegistryError::ManifestInvalid(format!(
                "Content-Type {header} does not match the manifest's mediaType {body}"
            )));
        }
        (Some(header), _) => header.to_owned(),
        (None, Some(body)) => body.to_owned(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) if raw.config.is_some() => OCI_MANIFEST.to_owned(),
        (None, None) => {
            return Err(RegistryError::ManifestInvalid(
                "no Content-Type header and no mediaType field".into(),
            ));
        }
    };
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Kind::Image,
        OCI_INDEX | DOCKER_LIST => Kind::Index,
        other => {
            return Err(RegistryError::ManifestInvalid(format!(
                "unsupported manifest media type {other}"
            )));
        }
    };
    if raw.schema_version != Some(2) {
        return Err(RegistryError::ManifestInvalid(
            "schemaVersion must be 2".into(),
        ));
    }

    let mut parsed = ParsedManifest {
        media_type,
        kind,
        blobs: Vec::new(),
        layers: Vec::new(),
        children: Vec::new(),
        subject: raw
            .subject
            .as_ref()
            .map(|s| digest_of(s, "subject"))
            .transpose()?,
        artifact_type: raw.artifact_type.clone(),
        annotations: raw.annotations,
    };
    match kind {
        Kind::Image => {
            let config = raw.config.ok_or_else(|| {
                RegistryError::ManifestInvalid("image manifest without config".into())
            })?;
            parsed.blobs.push(digest_of(&config, "config")?);
            if parsed.artifact_type.is_none() {
                parsed.artifact_type = config.media_type.clone();
            }
            let layers = raw.layers.ok_or_else(|| {
                RegistryError::ManifestInvalid("image manifest without layers".into())
            })?;
            for (i, layer) in layers.iter().enumerate() {
                let digest = digest_of(layer, &format!("layer {i}"))?;
                if is_non_distributable(layer.media_type.as_deref()) || !layer.urls.is_empty() {
                    continue;
                }
                parsed.layers.push(digest);
            }
        }
        Kind::Index => {
            let manifests = raw
                .manifests
                .ok_or_else(|| RegistryError::ManifestInvalid("index without manifests".into()))?;
            for (i, m) in manifests.iter().enumerate() {
                parsed
                    .children
                    .push(digest_of(m, &format!("manifest {i}"))?);
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":3}},
                      {{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"{D2}","size":3}}]{extra}}}"#
        )
    }

    #[test]
    fn image_manifest_lists_config_and_distributable_layers() {
        let m = parse(image("").as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.blobs, vec![D1.parse().unwrap()]);
        assert_eq!(m.layers, vec![D2.parse().unwrap()]);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":9}}"#
        );
        let m = parse(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(m.subject, Some(D2.parse().unwrap()));
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sig"));
        assert_eq!(m.media_type, OCI_MANIFEST);
    }

    #[test]
    fn index_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":5}}]}}"#
        );
        let m = parse(body.as_bytes(), Some(DOCKER_LIST)).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.children, vec![D1.parse().unwrap()]);
    }

    #[test]
    fn rejections() {
        let mismatch = parse(image("").as_bytes(), Some(OCI_INDEX)).unwrap_err();
        assert!(
            matches!(mismatch, RegistryError::ManifestInvalid(_)),
            "{mismatch}"
        );
        assert!(matches!(
            parse(b"{not json", Some(OCI_MANIFEST)),
            Err(RegistryError::ManifestInvalid(_))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":1,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#, None),
            Err(RegistryError::ManifestInvalid(_))
        ));
        let bad_digest = image("").replace(D1, "sha256:xyz");
        assert!(matches!(
            parse(bad_digest.as_bytes(), None),
            Err(RegistryError::ManifestInvalid(_))
        ));
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(
            parse(&huge, None),
            Err(RegistryError::ManifestTooLarge(_))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None),
            Err(RegistryError::ManifestInvalid(_))
        ));
    }
}
