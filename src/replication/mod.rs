//! Replication: copying images between registries digest for digest. `select` decides which
//! tags (pure), `names` where they land, `platforms` cuts an index down; `copy` writes one tag
//! with everything it references and its referrers, `blobs` moves the bytes. `Replicator::run`
//! walks the source and reports what it did (`report`). `wharf replicate` (src/jobs/) is the
//! command around it.

pub mod blobs;
pub mod copy;
pub mod names;
pub mod platforms;
pub mod report;
pub mod select;
pub mod throttle;

use crate::crd::replication_policy::ReplicationRun;
use crate::oci_client::Client;
use blobs::BlobCopier;
use copy::TagJob;
use futures_util::{StreamExt, stream};
use names::Naming;
use report::{Counters, Ledger, Outcome, TagReport};
use select::Rules;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use throttle::Throttle;

#[derive(Debug, Clone)]
pub struct Options {
    pub overwrite: bool,
    pub replicate_deletion: bool,
    pub concurrency: usize,
    pub dry_run: bool,
    pub bandwidth_limit: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            overwrite: false,
            replicate_deletion: false,
            concurrency: 4,
            dry_run: false,
            bandwidth_limit: None,
        }
    }
}

/// Limits a run to one repository (and one tag of it): a push-triggered run.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub repository: Option<String>,
    pub tag: Option<String>,
}

pub struct Replicator {
    source: Arc<Client>,
    destination: Arc<Client>,
    rules: Rules,
    naming: Naming,
    options: Options,
    blobs: BlobCopier,
    counters: Arc<Counters>,
    ledger: Ledger,
}

impl Replicator {
    pub fn new(
        source: Client,
        destination: Client,
        rules: Rules,
        naming: Naming,
        options: Options,
    ) -> Replicator {
        let source = Arc::new(source);
        let destination = Arc::new(destination);
        let counters = Arc::new(Counters::default());
        let throttle = options
            .bandwidth_limit
            .map(|rate| Arc::new(Throttle::new(rate)));
        Replicator {
            blobs: BlobCopier::new(
                source.clone(),
                destination.clone(),
                throttle,
                counters.clone(),
                options.dry_run,
            ),
            source,
            destination,
            rules,
            naming,
            options,
            counters,
            ledger: Ledger::default(),
        }
    }

    /// One run: every selected tag of every covered repository (within `scope`), then the
    /// deletions, with each failure recorded and the rest carried on.
    pub async fn run(&self, scope: &Scope) -> (ReplicationRun, Vec<TagReport>) {
        let started = Instant::now();
        let repositories = self.repositories(scope).await;
        let mut jobs = Vec::new();
        for repository in &repositories {
            let Some(destination) = self.naming.destination(repository) else {
                self.ledger.failure(
                    repository,
                    "nothing is left of the name once stripPrefix is removed".into(),
                );
                continue;
            };
            let tags = match self.source.list_tags(repository).await {
                Ok(tags) => tags,
                Err(e) => {
                    self.ledger
                        .failure(repository, format!("cannot list its tags: {e}"));
                    continue;
                }
            };
            let mut selected = self.rules.select(repository, &tags);
            if let Some(only) = &scope.tag {
                selected.retain(|s| &s.tag == only);
            }
            if self.options.replicate_deletion && scope.tag.is_none() {
                self.delete_gone(repository, &destination, &tags).await;
            }
            let source_tags = Arc::new(tags.into_iter().collect::<HashSet<String>>());
            jobs.extend(selected.into_iter().map(|selected| TagJob {
                repository: repository.clone(),
                destination: destination.clone(),
                selected,
                source_tags: source_tags.clone(),
            }));
        }
        stream::iter(jobs.iter())
            .for_each_concurrent(self.options.concurrency.max(1), |job| self.copy_tag(job))
            .await;
        let (mut run, tags) = self.ledger.finish(
            &self.counters,
            self.options.dry_run,
            started.elapsed().as_secs_f64(),
        );
        if repositories.is_empty() && run.failed > 0 {
            run.message = run.failures.first().map(|f| f.reason.clone());
        }
        (run, tags)
    }

    /// The source repositories the rules cover: those they name literally, and those the
    /// catalog lists (unless every rule is literal, and so the catalog is not needed).
    async fn repositories(&self, scope: &Scope) -> Vec<String> {
        if let Some(only) = &scope.repository {
            return if self.rules.covers(only) {
                vec![only.clone()]
            } else {
                Vec::new()
            };
        }
        let mut names = self.rules.literal_repositories();
        if !self.rules.all_literal() {
            match self.source.catalog().await {
                Ok(catalog) => names.extend(catalog.into_iter().filter(|r| self.rules.covers(r))),
                Err(e) => self.ledger.failure(
                    "_catalog",
                    format!("cannot list the source's repositories: {e}"),
                ),
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Destination tags the rules select for `repository` whose source tag is gone.
    async fn delete_gone(&self, repository: &str, destination: &str, source_tags: &[String]) {
        let present = match self.destination.list_tags(destination).await {
            Ok(tags) => tags,
            Err(e) => {
                self.ledger.failure(
                    repository,
                    format!("cannot list the destination's tags of {destination}: {e}"),
                );
                return;
            }
        };
        let at_source: HashSet<&String> = source_tags.iter().collect();
        let gone: Vec<String> = self
            .rules
            .select(repository, &present)
            .into_iter()
            .map(|s| s.tag)
            .filter(|t| !at_source.contains(t))
            .collect();
        for tag in gone {
            let mut report = TagReport {
                repository: repository.to_owned(),
                tag: tag.clone(),
                destination: destination.to_owned(),
                outcome: Outcome::Deleted,
                source_digest: None,
                digest: None,
                reason: Some("the source tag is gone".into()),
            };
            if !self.options.dry_run
                && let Err(e) = self.destination.delete_manifest(destination, &tag).await
            {
                report.outcome = Outcome::Failed;
                report.reason = Some(format!("cannot delete the tag whose source is gone: {e}"));
            }
            self.ledger.tag(report);
        }
    }
}
