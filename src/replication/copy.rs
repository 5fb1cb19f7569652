//! Copying one selected tag: the manifest as the source stores it (or a platform-filtered
//! index), everything it references first (child manifests by digest, then config and
//! layers), the tag last, so that a run killed at any moment leaves no tag pointing at
//! something missing. What the destination already has at the same digest is not sent again;
//! referrers (signatures, SBOMs, attestations) follow their subjects.

use super::Replicator;
use super::blobs::BlobOutcome;
use super::platforms::{Filtered, filter_index};
use super::report::{Outcome, TagReport};
use super::select::{Selected, subject_of_tag};
use crate::oci_client::{Manifest, OciError, index_entries, referrers_tag};
use crate::registry::digest::{Algorithm, Digest};
use futures_util::{StreamExt, stream};
use serde_json::Value;
use std::collections::HashSet;

/// Referrers of referrers (a signature on an SBOM) are followed this deep.
const REFERRER_DEPTH: usize = 3;
/// Blobs of one image copied at once.
const BLOBS_AT_ONCE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("{0}")]
    Content(String),
}

type CopyResult<T> = Result<T, CopyError>;

/// One tag to copy: where from, where to, how.
pub struct TagJob {
    pub repository: String,
    pub destination: String,
    pub selected: Selected,
    /// The source's tags, for cosign's `sha256-<hex>.sig` tags.
    pub source_tags: std::sync::Arc<HashSet<String>>,
}

impl Replicator {
    pub async fn copy_tag(&self, job: &TagJob) {
        let tag = &job.selected.tag;
        let mut report = TagReport {
            repository: job.repository.clone(),
            tag: tag.clone(),
            destination: job.destination.clone(),
            outcome: Outcome::Failed,
            source_digest: None,
            digest: None,
            reason: None,
        };
        match self.try_copy_tag(job, &mut report).await {
            Ok(outcome) => report.outcome = outcome,
            Err(e) => {
                report.outcome = Outcome::Failed;
                report.reason = Some(e.to_string());
            }
        }
        self.ledger.tag(report);
    }

    async fn try_copy_tag(&self, job: &TagJob, report: &mut TagReport) -> CopyResult<Outcome> {
        let tag = &job.selected.tag;
        let source = self
            .source
            .get_manifest(&job.repository, tag)
            .await?
            .ok_or_else(|| CopyError::Content("the tag is gone from the source".into()))?;
        report.source_digest = Some(source.digest.to_string());
        let (manifest, filtered) = self.shaped(&source, &job.selected)?;
        report.digest = Some(manifest.digest.to_string());
        let existing = self
            .destination
            .head_manifest(&job.destination, tag)
            .await?;
        let existing_digest = existing.and_then(|h| h.digest);
        let outcome = match &existing_digest {
            Some(d) if *d == manifest.digest => Outcome::Skipped,
            Some(d) if !self.options.overwrite => {
                report.reason = Some(format!(
                    "the destination tag points to {d}, not {}; overwrite is off",
                    manifest.digest
                ));
                return Ok(Outcome::Conflict);
            }
            _ => Outcome::Copied,
        };
        if outcome == Outcome::Copied {
            self.copy_manifest(&job.repository, &job.destination, &manifest, 0)
                .await?;
            if !self.options.dry_run {
                self.destination
                    .put_manifest(&job.destination, tag, &manifest)
                    .await?;
            }
        }
        if job.selected.referrers {
            // A filtered index is a new manifest: what refers to the source's index does not
            // refer to it (a signature over other bytes), but its children are unchanged.
            let mut subjects: Vec<Digest> = if filtered {
                Vec::new()
            } else {
                vec![manifest.digest.clone()]
            };
            subjects.extend(children(&manifest).into_iter().map(|(d, _)| d));
            for subject in subjects {
                self.copy_referrers(job, &subject, 0).await?;
            }
        }
        Ok(outcome)
    }

    /// The manifest to write for `selected`: the source's bytes, or its index cut down to
    /// the platforms asked (and whether it was).
    fn shaped(&self, source: &Manifest, selected: &Selected) -> CopyResult<(Manifest, bool)> {
        let Some(platforms) = &selected.platforms else {
            return Ok((source.clone(), false));
        };
        if !is_index(&source.media_type) {
            return Ok((source.clone(), false));
        }
        match filter_index(
            &source.bytes,
            &source.media_type,
            &source.digest.to_string(),
            platforms,
        )
        .map_err(CopyError::Content)?
        {
            Filtered::Unchanged => Ok((source.clone(), false)),
            Filtered::Empty => {
                let asked: Vec<String> = platforms.iter().map(ToString::to_string).collect();
                Err(CopyError::Content(format!(
                    "the index has no manifest for {}",
                    asked.join(", ")
                )))
            }
            Filtered::Index(bytes) => Ok((
                Manifest {
                    digest: Digest::of(Algorithm::Sha256, &bytes),
                    bytes,
                    media_type: source.media_type.clone(),
                },
                true,
            )),
        }
    }

    /// Writes `manifest` by digest after everything it references; nothing when the
    /// destination already has it (then it has what it references too).
    async fn copy_manifest(
        &self,
        source_repo: &str,
        dest_repo: &str,
        manifest: &Manifest,
        depth: usize,
    ) -> CopyResult<()> {
        if depth > 4 {
            return Err(CopyError::Content("indexes nested more than 4 deep".into()));
        }
        let digest = manifest.digest.to_string();
        if self
            .destination
            .head_manifest(dest_repo, &digest)
            .await?
            .is_some()
        {
            return Ok(());
        }
        for (child, _) in children(manifest) {
            let child_manifest = self
                .source
                .get_manifest(source_repo, &child.to_string())
                .await?
                .ok_or_else(|| {
                    CopyError::Content(format!("the source lacks {child}, which {digest} lists"))
                })?;
            Box::pin(self.copy_manifest(source_repo, dest_repo, &child_manifest, depth + 1))
                .await?;
        }
        let blobs = blobs_of(manifest).map_err(CopyError::Content)?;
        let results: Vec<CopyResult<BlobOutcome>> = stream::iter(blobs)
            .map(|(blob, size)| async move {
                Ok(self.blobs.copy(source_repo, dest_repo, &blob, size).await?)
            })
            .buffer_unordered(BLOBS_AT_ONCE)
            .collect()
            .await;
        for result in results {
            result?;
        }
        if !self.options.dry_run {
            let indexed_subject = self
                .destination
                .put_manifest(dest_repo, &digest, manifest)
                .await?;
            if let Some(subject) = subject_of(manifest)
                && !indexed_subject
            {
                self.add_to_referrers_tag(dest_repo, &subject, manifest)
                    .await?;
            }
        }
        Ok(())
    }

    /// Copies what refers to `subject` at the source, and what refers to those.
    async fn copy_referrers(&self, job: &TagJob, subject: &Digest, depth: usize) -> CopyResult<()> {
        if depth >= REFERRER_DEPTH {
            return Ok(());
        }
        let (descriptors, _) = self.source.referrers(&job.repository, subject).await?;
        let mut found: Vec<Digest> = descriptors
            .iter()
            .filter_map(|d| d["digest"].as_str()?.parse().ok())
            .collect();
        // cosign's tags: `sha256-<hex>.sig` and its siblings are copied as the tags they are.
        for suffix in [".sig", ".att", ".sbom"] {
            let tag = format!("{}{suffix}", referrers_tag(subject));
            if job.source_tags.contains(&tag)
                && subject_of_tag(&tag).as_deref() == Some(&subject.to_string())
            {
                self.copy_cosign_tag(job, &tag).await?;
            }
        }
        found.sort();
        found.dedup();
        for referrer in found {
            let manifest = match self
                .source
                .get_manifest(&job.repository, &referrer.to_string())
                .await?
            {
                Some(m) => m,
                None => continue,
            };
            let had = self
                .destination
                .head_manifest(&job.destination, &referrer.to_string())
                .await?
                .is_some();
            if !had {
                self.copy_manifest(&job.repository, &job.destination, &manifest, 0)
                    .await?;
                self.ledger.referrer_copied();
            }
            Box::pin(self.copy_referrers(job, &referrer, depth + 1)).await?;
        }
        Ok(())
    }

    async fn copy_cosign_tag(&self, job: &TagJob, tag: &str) -> CopyResult<()> {
        let Some(manifest) = self.source.get_manifest(&job.repository, tag).await? else {
            return Ok(());
        };
        let existing = self
            .destination
            .head_manifest(&job.destination, tag)
            .await?;
        if existing.and_then(|h| h.digest).as_ref() == Some(&manifest.digest) {
            return Ok(());
        }
        self.copy_manifest(&job.repository, &job.destination, &manifest, 0)
            .await?;
        if !self.options.dry_run {
            self.destination
                .put_manifest(&job.destination, tag, &manifest)
                .await?;
        }
        self.ledger.referrer_copied();
        Ok(())
    }

    /// Where the destination has no referrers API, clients list a subject's referrers in an
    /// index tagged `<alg>-<hex>`: add this one to it.
    async fn add_to_referrers_tag(
        &self,
        dest_repo: &str,
        subject: &Digest,
        referrer: &Manifest,
    ) -> CopyResult<()> {
        let tag = referrers_tag(subject);
        let current = self.destination.get_manifest(dest_repo, &tag).await?;
        let mut entries = current
            .as_ref()
            .map(|m| index_entries(&m.bytes))
            .unwrap_or_default();
        let digest = referrer.digest.to_string();
        if entries.iter().any(|e| e["digest"] == digest.as_str()) {
            return Ok(());
        }
        let parsed: Value = serde_json::from_slice(&referrer.bytes).unwrap_or(Value::Null);
        let mut descriptor = serde_json::json!({
            "mediaType": referrer.media_type,
            "digest": digest,
            "size": referrer.bytes.len(),
        });
        let artifact_type = parsed["artifactType"]
            .as_str()
            .or_else(|| parsed["config"]["mediaType"].as_str());
        if let Some(t) = artifact_type {
            descriptor["artifactType"] = Value::String(t.to_owned());
        }
        if let Some(a) = parsed.get("annotations").filter(|a| a.is_object()) {
            descriptor["annotations"] = a.clone();
        }
        entries.push(descriptor);
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .map_err(|e| CopyError::Content(e.to_string()))?;
        let index = Manifest {
            digest: Digest::of(Algorithm::Sha256, &bytes),
            bytes,
            media_type: "application/vnd.oci.image.index.v1+json".into(),
        };
        self.destination
            .put_manifest(dest_repo, &tag, &index)
            .await?;
        Ok(())
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The manifests an index lists, by digest and media type.
fn children(manifest: &Manifest) -> Vec<(Digest, String)> {
    if !is_index(&manifest.media_type) {
        return Vec::new();
    }
    index_entries(&manifest.bytes)
        .iter()
        .filter_map(|e| {
            let digest = e["digest"].as_str()?.parse().ok()?;
            Some((
                digest,
                e["mediaType"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// Config and layers of an image manifest (or an artifact's blobs), with their sizes. Layers
/// with `urls` are foreign (non-distributable): registries do not hold them.
fn blobs_of(manifest: &Manifest) -> Result<Vec<(Digest, u64)>, String> {
    if is_index(&manifest.media_type) {
        return Ok(Vec::new());
    }
    let parsed: Value = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| format!("manifest {} is not JSON: {e}", manifest.digest))?;
    let mut out = Vec::new();
    let config = std::iter::once(&parsed["config"]).filter(|c| c.is_object());
    let layers = parsed["layers"].as_array().into_iter().flatten();
    let blobs = parsed["blobs"].as_array().into_iter().flatten();
    for descriptor in config.chain(layers).chain(blobs) {
        if descriptor
            .get("urls")
            .is_some_and(|u| u.as_array().is_some_and(|a| !a.is_empty()))
        {
            continue;
        }
        let digest = descriptor["digest"]
            .as_str()
            .and_then(|d| d.parse::<Digest>().ok())
            .ok_or_else(|| {
                format!(
                    "manifest {} has a descriptor without a valid digest",
                    manifest.digest
                )
            })?;
        let size = descriptor["size"]
            .as_u64()
            .ok_or_else(|| format!("manifest {} gives no size for {digest}", manifest.digest))?;
        if !out.iter().any(|(d, _)| *d == digest) {
            out.push((digest, size));
        }
    }
    Ok(out)
}

fn subject_of(manifest: &Manifest) -> Option<Digest> {
    let parsed: Value = serde_json::from_slice(&manifest.bytes).ok()?;
    parsed["subject"]["digest"].as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(value: Value, media_type: &str) -> Manifest {
        let bytes = serde_json::to_vec(&value).unwrap();
        Manifest {
            digest: Digest::of(Algorithm::Sha256, &bytes),
            bytes,
            media_type: media_type.into(),
        }
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_image_references_its_config_and_layers_once_and_no_foreign_layers() {
        let m = manifest(
            serde_json::json!({"schemaVersion": 2, "config": {"digest": d('a'), "size": 10},
                "layers": [{"digest": d('b'), "size": 20}, {"digest": d('b'), "size": 20},
                           {"digest": d('c'), "size": 30, "urls": ["https://example.org/layer"]}],
                "subject": {"digest": d('e'), "size": 5}}),
            "application/vnd.oci.image.manifest.v1+json",
        );
        let blobs = blobs_of(&m).unwrap();
        assert_eq!(
            blobs,
            vec![(d('a').parse().unwrap(), 10), (d('b').parse().unwrap(), 20)]
        );
        assert_eq!(subject_of(&m), Some(d('e').parse().unwrap()));
        assert!(children(&m).is_empty());
        let broken = manifest(
            serde_json::json!({"layers": [{"digest": "nope", "size": 1}]}),
            "application/vnd.oci.image.manifest.v1+json",
        );
        assert!(
            blobs_of(&broken)
                .unwrap_err()
                .contains("without a valid digest")
        );
    }

    #[test]
    fn an_index_references_its_manifests() {
        let m = manifest(
            serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": d('a'), "mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1}]}),
            "application/vnd.docker.distribution.manifest.list.v2+json",
        );
        assert_eq!(
            children(&m),
            vec![(
                d('a').parse().unwrap(),
                "application/vnd.oci.image.manifest.v1+json".to_owned()
            )]
        );
        assert!(blobs_of(&m).unwrap().is_empty());
    }
}
