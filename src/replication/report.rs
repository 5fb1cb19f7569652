//! What a run did: counters the copy tasks bump as they go, and the summary built from them
//! at the end (the `status.lastRun` shape), with the first failures quoted.

use crate::crd::replication_policy::{FAILURES_REPORTED, ReplicationFailure, ReplicationRun};
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Default)]
pub struct Counters {
    blobs_copied: AtomicI64,
    blobs_mounted: AtomicI64,
    blobs_present: AtomicI64,
    bytes: AtomicI64,
}

impl Counters {
    pub fn blob_copied(&self) {
        self.blobs_copied.fetch_add(1, Ordering::Relaxed);
    }
    pub fn blob_mounted(&self) {
        self.blobs_mounted.fetch_add(1, Ordering::Relaxed);
    }
    pub fn blob_present(&self) {
        self.blobs_present.fetch_add(1, Ordering::Relaxed);
    }
    pub fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n as i64, Ordering::Relaxed);
    }
}

/// What happened to one selected tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Copied,
    Skipped,
    Conflict,
    Deleted,
    Failed,
}

/// One line of the run's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagReport {
    pub repository: String,
    pub tag: String,
    pub destination: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// The digest the destination tag points to: the source's, except for a
    /// platform-filtered index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Default)]
pub struct Ledger {
    tags: Mutex<Vec<TagReport>>,
    /// Failures of a whole repository or of the run (a listing that failed).
    failures: Mutex<Vec<ReplicationFailure>>,
    referrers: AtomicI64,
}

impl Ledger {
    pub fn tag(&self, report: TagReport) {
        match report.outcome {
            Outcome::Failed | Outcome::Conflict => {
                tracing::warn!(repository = %report.repository, tag = %report.tag, outcome = ?report.outcome, reason = report.reason.as_deref().unwrap_or(""), "tag not replicated")
            }
            outcome => {
                tracing::info!(repository = %report.repository, tag = %report.tag, ?outcome, digest = report.digest.as_deref().unwrap_or(""), "tag replicated")
            }
        }
        self.tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
    }

    pub fn failure(&self, repository: &str, reason: String) {
        tracing::warn!(repository, reason = %reason, "repository not replicated");
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ReplicationFailure {
                repository: repository.to_owned(),
                tag: None,
                reason,
            });
    }

    pub fn referrer_copied(&self) {
        self.referrers.fetch_add(1, Ordering::Relaxed);
    }

    /// The summary, and every tag's line sorted by repository and tag.
    pub fn finish(
        &self,
        counters: &Counters,
        dry_run: bool,
        seconds: f64,
    ) -> (ReplicationRun, Vec<TagReport>) {
        let mut tags = self.tags.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tags.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
        let count = |o: Outcome| tags.iter().filter(|t| t.outcome == o).count() as i64;
        let repo_failures = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut failures: Vec<ReplicationFailure> = repo_failures.clone();
        failures.extend(
            tags.iter()
                .filter(|t| t.outcome == Outcome::Failed)
                .map(|t| ReplicationFailure {
                    repository: t.repository.clone(),
                    tag: Some(t.tag.clone()),
                    reason: t.reason.clone().unwrap_or_default(),
                }),
        );
        let failed = failures.len() as i64;
        failures.truncate(FAILURES_REPORTED);
        let selected = tags
            .iter()
            .filter(|t| t.outcome != Outcome::Deleted)
            .count() as i64;
        let run = ReplicationRun {
            succeeded: failed == 0,
            dry_run,
            tags_selected: selected,
            copied: count(Outcome::Copied),
            skipped: count(Outcome::Skipped),
            conflicts: count(Outcome::Conflict),
            deleted: count(Outcome::Deleted),
            failed,
            referrers_copied: self.referrers.load(Ordering::Relaxed),
            blobs_copied: counters.blobs_copied.load(Ordering::Relaxed),
            blobs_mounted: counters.blobs_mounted.load(Ordering::Relaxed),
            blobs_present: counters.blobs_present.load(Ordering::Relaxed),
            bytes_transferred: counters.bytes.load(Ordering::Relaxed),
            duration_seconds: (seconds * 1000.0).round() / 1000.0,
            failures,
            ..ReplicationRun::default()
        };
        (run, tags)
    }
}
