//! A platform-filtered copy of an index (pure). The copy lists the source's entries for the
//! platforms asked, unchanged (same digests, sizes, annotations), plus the attestation
//! manifests BuildKit attaches to those entries, and nothing else; it is a new manifest with a
//! digest of its own. An OCI index records where it came from in the annotation
//! `dev.wharf.replication.source-digest`; the run's report lists both digests.

use super::select::Platform;
use serde_json::{Map, Value};
use std::collections::HashSet;

pub const SOURCE_DIGEST_ANNOTATION: &str = "dev.wharf.replication.source-digest";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every entry is kept: copy the source's bytes as they are.
    Unchanged,
    /// No entry matches any platform asked.
    Empty,
    /// The new index's bytes.
    Index(Vec<u8>),
}

pub fn filter_index(
    bytes: &[u8],
    media_type: &str,
    source_digest: &str,
    platforms: &[Platform],
) -> Result<Filtered, String> {
    let mut index: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| format!("the index is not JSON: {e}"))?;
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .ok_or("the index has no manifests list")?;
    let wanted = |entry: &Value| platforms.iter().any(|p| p.covers(&entry["platform"]));
    let kept_digests: HashSet<&str> = entries
        .iter()
        .filter(|e| wanted(e))
        .filter_map(|e| e["digest"].as_str())
        .collect();
    let kept: Vec<Value> = entries
        .iter()
        .filter(|e| {
            wanted(e) || {
                let annotations = &e["annotations"];
                annotations["vnd.docker.reference.type"] == "attestation-manifest"
                    && annotations["vnd.docker.reference.digest"]
                        .as_str()
                        .is_some_and(|d| kept_digests.contains(d))
            }
        })
        .cloned()
        .collect();
    if kept.len() == entries.len() {
        return Ok(Filtered::Unchanged);
    }
    if kept_digests.is_empty() {
        return Ok(Filtered::Empty);
    }
    index.insert("manifests".into(), Value::Array(kept));
    if media_type == OCI_INDEX {
        let annotations = index
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(
                SOURCE_DIGEST_ANNOTATION.into(),
                Value::String(source_digest.to_owned()),
            );
        }
    }
    serde_json::to_vec(&Value::Object(index))
        .map(Filtered::Index)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(digest: &str, platform: Value) -> Value {
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 100, "platform": platform})
    }

    fn index() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                entry("sha256:amd", json!({"os": "linux", "architecture": "amd64"})),
                entry("sha256:arm", json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:att-amd", "size": 5,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": "sha256:amd"}},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn keeps_the_platforms_asked_and_their_attestations() {
        let amd = Platform::parse("linux/amd64").unwrap();
        let Filtered::Index(bytes) =
            filter_index(&index(), OCI_INDEX, "sha256:src", &[amd]).unwrap()
        else {
            panic!("expected a new index");
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let digests: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, ["sha256:amd", "sha256:att-amd"]);
        assert_eq!(v["annotations"][SOURCE_DIGEST_ANNOTATION], "sha256:src");
        assert_eq!(
            v["manifests"][0],
            entry(
                "sha256:amd",
                json!({"os": "linux", "architecture": "amd64"})
            )
        );
    }

    #[test]
    fn all_platforms_or_none() {
        let all = [
            Platform::parse("linux/amd64").unwrap(),
            Platform::parse("linux/arm64").unwrap(),
        ];
        assert_eq!(
            filter_index(&index(), OCI_INDEX, "sha256:src", &all).unwrap(),
            Filtered::Unchanged
        );
        let none = [Platform::parse("windows/amd64").unwrap()];
        assert_eq!(
            filter_index(&index(), OCI_INDEX, "sha256:src", &none).unwrap(),
            Filtered::Empty
        );
        assert!(filter_index(b"{}", OCI_INDEX, "x", &none).is_err());
    }

    #[test]
    fn a_docker_manifest_list_gets_no_annotation() {
        let docker = "application/vnd.docker.distribution.manifest.list.v2+json";
        let arm = Platform::parse("linux/arm64").unwrap();
        let Filtered::Index(bytes) = filter_index(&index(), docker, "sha256:src", &[arm]).unwrap()
        else {
            panic!("expected a new index");
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v.get("annotations").is_none());
        assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    }
}
