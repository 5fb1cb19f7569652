//! `wharf retention`: one run of a retention policy against a registry. Lists every
//! repository the policy covers (`listing.rs`), decides with `crate::retention::evaluate`, and,
//! unless it is a dry run, deletes through the registry API. A run whose deletions exceed
//! `maxDeletionsPerRun` deletes nothing and says why. The summary goes to stdout and the
//! termination message; the candidates to `--report` and, with `--report-to-log`, one line of
//! the log the operator copies into a ConfigMap.

mod in_use;
mod listing;

use super::{JobError, report};
use crate::registry::auth::permissions::glob_matches;
use crate::retention::evaluate::{Decision, evaluate};
use crate::retention::{KeepRule, Policy};
use clap::Args;
use in_use::InUse;
pub use listing::Api;
use listing::{Registry, encode};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// The candidate list printed to the log stays under this, so it fits a ConfigMap.
const LOG_REPORT_BUDGET: usize = 800 * 1024;
/// Deletion errors quoted in the summary (the termination message holds 4 KiB).
const ERRORS_QUOTED: usize = 3;

#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// The registry, e.g. https://main.registry.svc:5000.
    #[arg(long, env = "WHARF_REGISTRY_URL")]
    pub registry: String,
    #[arg(long, env = "WHARF_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// `wharf` (listings with push and pull times) or `oci` (any registry: tags only).
    #[arg(long, value_enum, default_value = "wharf")]
    pub api: Api,
    /// The policy as JSON (the RetentionPolicy spec's fields).
    #[arg(long, env = "WHARF_POLICY_FILE")]
    pub policy: PathBuf,
    /// Overrides the policy's `safety.dryRun` for this run.
    #[arg(long)]
    pub dry_run: Option<bool>,
    /// Image references the cluster uses (one per line): never deleted.
    #[arg(long)]
    pub in_use: Option<PathBuf>,
    /// Where to write every candidate (JSON).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Also print the candidates as one JSON line on stdout (`{"candidates": …}`).
    #[arg(long)]
    pub report_to_log: bool,
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    exclude_repositories: Vec<String>,
    #[serde(default)]
    keep: Vec<KeepFile>,
    untagged: Option<UntaggedFile>,
    #[serde(default)]
    protect: ProtectFile,
    #[serde(default)]
    safety: SafetyFile,
    #[serde(default)]
    referrers: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeepFile {
    #[serde(default)]
    tags: Vec<String>,
    tag_regex: Option<String>,
    semver: Option<String>,
    most_recently_pushed: Option<usize>,
    newest: Option<usize>,
    pushed_within: Option<String>,
    pulled_within: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UntaggedFile {
    #[serde(default)]
    delete: bool,
    older_than: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProtectFile {
    #[serde(default)]
    tags: Vec<String>,
    /// The operator lists what the cluster runs and passes it with `--in-use`.
    in_use_by_cluster: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SafetyFile {
    #[serde(default = "yes")]
    dry_run: bool,
    max_deletions_per_run: Option<usize>,
    #[serde(default)]
    min_tags_per_repository: usize,
}

fn yes() -> bool {
    true
}

impl Default for SafetyFile {
    fn default() -> Self {
        SafetyFile {
            dry_run: true,
            max_deletions_per_run: None,
            min_tags_per_repository: 0,
        }
    }
}

fn duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, JobError> {
    text.map(|t| crate::duration::parse(t).map_err(|e| JobError::Invalid(format!("{field}: {e}"))))
        .transpose()
}

fn policy_of(file: &PolicyFile) -> Result<Policy, JobError> {
    let keep = file
        .keep
        .iter()
        .map(|k| {
            Ok(KeepRule {
                tags: k.tags.clone(),
                tag_regex: k.tag_regex.clone(),
                semver: k.semver.clone(),
                most_recently_pushed: k.most_recently_pushed,
                newest: k.newest,
                pushed_within: duration("keep.pushedWithin", k.pushed_within.as_deref())?,
                pulled_within: duration("keep.pulledWithin", k.pulled_within.as_deref())?,
            })
        })
        .collect::<Result<Vec<_>, JobError>>()?;
    let untagged_older_than = match &file.untagged {
        Some(u) if u.delete => {
            Some(duration("untagged.olderThan", u.older_than.as_deref())?.unwrap_or_default())
        }
        _ => None,
    };
    Ok(Policy {
        keep,
        untagged_older_than,
        protected_tags: file.protect.tags.clone(),
        min_tags_per_repository: file.safety.min_tags_per_repository,
        keep_referrers: file.referrers.as_deref() == Some("Keep"),
    })
}

fn covered(file: &PolicyFile, repo: &str) -> bool {
    (file.repositories.is_empty() || file.repositories.iter().any(|g| glob_matches(g, repo)))
        && !file
            .exclude_repositories
            .iter()
            .any(|g| glob_matches(g, repo))
}

/// Reads and checks a policy file: what the operator validates before scheduling it, and what
/// every run starts with.
pub fn parse_policy(text: &str, api: Api) -> Result<(PolicyFile, Policy), JobError> {
    let file: PolicyFile = serde_json::from_str(text)
        .map_err(|e| JobError::Invalid(format!("the policy is not valid: {e}")))?;
    let policy = policy_of(&file)?;
    evaluate(&[], &policy, &HashSet::new(), 0).map_err(|e| JobError::Invalid(e.to_string()))?;
    if api == Api::Oci {
        let timed = policy.keep.iter().any(|k| {
            k.pushed_within.is_some()
                || k.pulled_within.is_some()
                || k.most_recently_pushed.is_some()
                || (k.newest.is_some() && k.semver.is_none())
        });
        if timed || policy.untagged_older_than.is_some() {
            return Err(JobError::Invalid(
                "this registry does not say when tags were pushed or pulled, nor list untagged manifests: use tags, tagRegex and semver rules".into(),
            ));
        }
    }
    Ok((file, policy))
}

/// Repositories the run covers: the catalog filtered by the policy's globs, or, for registries
/// without a catalog, the policy's repositories when they are plain names.
async fn covered_repositories(
    registry: &Registry,
    file: &PolicyFile,
) -> Result<Vec<String>, JobError> {
    let listed = match registry.repositories().await? {
        Some(all) => all,
        None if !file.repositories.is_empty()
            && file.repositories.iter().all(|r| !r.contains(['*', '?'])) =>
        {
            file.repositories.clone()
        }
        None => {
            return Err(JobError::Invalid(
                "the registry does not list its repositories (/v2/_catalog): name them in repositories without wildcards".into(),
            ));
        }
    };
    let mut covered: Vec<String> = listed.into_iter().filter(|r| covered(file, r)).collect();
    covered.sort();
    covered.dedup();
    Ok(covered)
}

/// The candidates as one log line, cut at whole repositories to fit a ConfigMap.
fn log_report(candidates: &[serde_json::Value]) -> String {
    let mut kept = Vec::new();
    let mut size = 0;
    for c in candidates {
        size += c.to_string().len() + 1;
        if size > LOG_REPORT_BUDGET {
            break;
        }
        kept.push(c);
    }
    serde_json::json!({"candidates": kept, "truncated": kept.len() < candidates.len()}).to_string()
}

pub async fn run(args: RetentionArgs) -> Result<(), JobError> {
    let text = std::fs::read_to_string(&args.policy)
        .map_err(|e| JobError::Invalid(format!("cannot read {}: {e}", args.policy.display())))?;
    let (file, policy) = parse_policy(&text, args.api)?;
    let dry_run = args.dry_run.unwrap_or(file.safety.dry_run);
    let in_use = match &args.in_use {
        Some(path) => InUse::parse(
            &std::fs::read_to_string(path)
                .map_err(|e| JobError::Invalid(format!("cannot read {}: {e}", path.display())))?,
        ),
        None if file.protect.in_use_by_cluster == Some(true) => {
            return Err(JobError::Invalid(
                "the policy protects what the cluster runs (protect.inUseByCluster), but no --in-use list was given".into(),
            ));
        }
        None => InUse::default(),
    };
    let registry = Registry::connect(&args.registry, args.ca_file.as_deref(), args.api)?;
    let now = crate::registry::auth::now_unix();
    let mut decisions: Vec<(String, Decision)> = Vec::new();
    for repo in covered_repositories(&registry, &file).await? {
        let Some(manifests) = registry.manifests(&repo).await? else {
            continue;
        };
        let mut repo_policy = policy.clone();
        repo_policy.protected_tags.extend(in_use.tags_of(&repo));
        let decision = evaluate(&manifests, &repo_policy, &in_use.digests, now)
            .map_err(|e| JobError::Invalid(e.to_string()))?;
        decisions.push((repo, decision));
    }
    let to_delete: usize = decisions.iter().map(|(_, d)| d.deletions()).sum();
    let mut summary = serde_json::json!({
        "dryRun": dry_run,
        "repositories": decisions.len(),
        "tagsEvaluated": decisions.iter().map(|(_, d)| d.tags_evaluated).sum::<usize>(),
        "tagsToDelete": decisions.iter().map(|(_, d)| d.tags.len()).sum::<usize>(),
        "manifestsToDelete": decisions.iter().map(|(_, d)| d.delete_manifests.len()).sum::<usize>(),
        "tagsDeleted": 0,
        "manifestsDeleted": 0,
    });
    let candidates: Vec<serde_json::Value> = decisions
        .iter()
        .filter(|(_, d)| d.deletions() > 0)
        .map(|(repo, d)| serde_json::json!({"repository": repo, "tags": d.tags, "manifests": d.manifests}))
        .collect();
    if let Some(report_path) = &args.report {
        std::fs::write(
            report_path,
            serde_json::to_vec_pretty(&candidates).unwrap_or_default(),
        )
        .map_err(|e| JobError::Invalid(format!("cannot write {}: {e}", report_path.display())))?;
    }
    if args.report_to_log {
        println!("{}", log_report(&candidates));
    }
    if let Some(max) = file.safety.max_deletions_per_run
        && to_delete > max
    {
        summary["stalled"] = true.into();
        summary["message"] =
            format!("{to_delete} deletions exceed maxDeletionsPerRun ({max}); nothing was deleted")
                .into();
        report(&summary, &args.termination_log);
        return Ok(());
    }
    if !dry_run {
        let outcome = delete(&registry, &decisions).await;
        summary["tagsDeleted"] = outcome.tags.into();
        summary["manifestsDeleted"] = outcome.manifests.into();
        if !outcome.errors.is_empty() {
            summary["failed"] = outcome.errors.len().into();
            summary["message"] = outcome
                .errors
                .iter()
                .take(ERRORS_QUOTED)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
                .into();
        }
    }
    report(&summary, &args.termination_log);
    Ok(())
}

#[derive(Default)]
struct Deleted {
    tags: usize,
    manifests: usize,
    errors: Vec<String>,
}

/// Deletes tags first (so a manifest never loses a tag that should stay), then manifests with
/// the tags that point at them; one refusal (a registry that cannot delete a tag alone, say)
/// does not stop the rest.
async fn delete(registry: &Registry, decisions: &[(String, Decision)]) -> Deleted {
    let mut done = Deleted::default();
    for (repo, d) in decisions {
        for tag in &d.delete_tags {
            match registry.delete(repo, &encode(tag)).await {
                Ok(existed) => done.tags += existed as usize,
                Err(e) => done.errors.push(format!("{repo}:{tag}: {e}")),
            }
        }
        for manifest in &d.manifests {
            let digest = &manifest.digest;
            match registry.delete(repo, digest).await {
                // Its tags go with it: they count as deleted tags, as the report listed them.
                Ok(true) => {
                    done.manifests += 1;
                    done.tags += manifest.tags.len();
                }
                Ok(false) => {}
                Err(e) => done.errors.push(format!("{repo}@{digest}: {e}")),
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_files_map_to_the_evaluator_and_default_to_dry_run() {
        let file: PolicyFile = serde_json::from_str(
            r#"{"repositories": ["ci/**"], "excludeRepositories": ["ci/golden-*"],
            "keep": [{"tags": ["v*"]}, {"tagRegex": "^main-", "pushedWithin": "7d"}],
            "untagged": {"delete": true, "olderThan": "24h"}, "protect": {"tags": ["latest"]},
            "safety": {"maxDeletionsPerRun": 10, "minTagsPerRepository": 1}}"#,
        )
        .unwrap();
        assert!(
            file.safety.dry_run,
            "dry run unless the policy says otherwise"
        );
        let policy = policy_of(&file).unwrap();
        assert_eq!(
            policy.keep[1].pushed_within,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            policy.untagged_older_than,
            Some(Duration::from_secs(86_400))
        );
        assert!(
            covered(&file, "ci/app")
                && !covered(&file, "ci/golden-1")
                && !covered(&file, "prod/app")
        );
        assert!(serde_json::from_str::<PolicyFile>(r#"{"keeep": []}"#).is_err());
        let bad: PolicyFile =
            serde_json::from_str(r#"{"keep": [{"pushedWithin": "soon"}]}"#).unwrap();
        assert!(policy_of(&bad).is_err());
    }
}
