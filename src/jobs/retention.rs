//! `wharf retention`: one run of a retention policy against a wharf registry. Lists every
//! repository the policy covers with push and pull times (`GET /admin/v1/manifests`), decides
//! with `crate::retention::evaluate`, and, unless it is a dry run, deletes through the registry
//! API. A run whose deletions exceed `maxDeletionsPerRun` deletes nothing and says why. The
//! summary goes to stdout and the termination message; the full candidate list to `--report`.

use super::{JobError, client, report};
use crate::registry::auth::permissions::glob_matches;
use crate::retention::evaluate::{Decision, evaluate};
use crate::retention::{KeepRule, Manifest, Policy};
use clap::Args;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// The registry, e.g. https://main.registry.svc:5000.
    #[arg(long, env = "WHARF_REGISTRY_URL")]
    pub registry: String,
    #[arg(long, env = "WHARF_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The policy as JSON (the RetentionPolicy spec's fields).
    #[arg(long, env = "WHARF_POLICY_FILE")]
    pub policy: PathBuf,
    /// Digests that must never be deleted (one per line): what runs in the cluster.
    #[arg(long)]
    pub in_use: Option<PathBuf>,
    /// Where to write every candidate (JSON).
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
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

fn encode(value: &str) -> String {
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

pub async fn run(args: RetentionArgs) -> Result<(), JobError> {
    let text = std::fs::read_to_string(&args.policy)
        .map_err(|e| JobError::Invalid(format!("cannot read {}: {e}", args.policy.display())))?;
    let file: PolicyFile = serde_json::from_str(&text)
        .map_err(|e| JobError::Invalid(format!("the policy is not valid: {e}")))?;
    let policy = policy_of(&file)?;
    let in_use: HashSet<String> = match &args.in_use {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| JobError::Invalid(format!("cannot read {}: {e}", path.display())))?
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        None => HashSet::new(),
    };
    let registry = client(&args.registry, args.ca_file.as_deref())?;
    let catalog = registry
        .get_json("list repositories", "/v2/_catalog?n=100000")
        .await?
        .unwrap_or_default();
    let repositories: Vec<String> = catalog["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let now = crate::registry::auth::now_unix();
    let mut decisions: Vec<(String, Decision)> = Vec::new();
    for repo in repositories.into_iter().filter(|r| covered(&file, r)) {
        let Some(listing) = registry
            .get_json(
                "list manifests",
                &format!("/admin/v1/manifests?repository={}", encode(&repo)),
            )
            .await?
        else {
            continue;
        };
        let manifests: Vec<Manifest> = serde_json::from_value(listing["manifests"].clone())
            .map_err(|e| {
                JobError::Invalid(format!("the listing of {repo} is not understood: {e}"))
            })?;
        let decision = evaluate(&manifests, &policy, &in_use, now)
            .map_err(|e| JobError::Invalid(e.to_string()))?;
        decisions.push((repo, decision));
    }
    let to_delete: usize = decisions.iter().map(|(_, d)| d.deletions()).sum();
    let mut summary = serde_json::json!({
        "dryRun": file.safety.dry_run,
        "repositories": decisions.len(),
        "tagsEvaluated": decisions.iter().map(|(_, d)| d.tags_evaluated).sum::<usize>(),
        "tagsToDelete": decisions.iter().map(|(_, d)| d.delete_tags.len()).sum::<usize>(),
        "manifestsToDelete": decisions.iter().map(|(_, d)| d.delete_manifests.len()).sum::<usize>(),
        "tagsDeleted": 0,
        "manifestsDeleted": 0,
    });
    if let Some(report_path) = &args.report {
        let candidates: Vec<serde_json::Value> = decisions
            .iter()
            .map(|(repo, d)| serde_json::json!({"repository": repo, "tags": d.delete_tags, "manifests": d.delete_manifests}))
            .collect();
        std::fs::write(
            report_path,
            serde_json::to_vec_pretty(&candidates).unwrap_or_default(),
        )
        .map_err(|e| JobError::Invalid(format!("cannot write {}: {e}", report_path.display())))?;
    }
    if let Some(max) = file.safety.max_deletions_per_run
        && to_delete > max
    {
        summary["stalled"] = true.into();
        summary["reason"] =
            format!("{to_delete} deletions exceed maxDeletionsPerRun ({max}); nothing was deleted")
                .into();
        report(&summary, &args.termination_log);
        return Ok(());
    }
    if !file.safety.dry_run {
        let (mut tags, mut manifests) = (0, 0);
        for (repo, d) in &decisions {
            for tag in &d.delete_tags {
                tags += registry
                    .delete_path(
                        "delete a tag",
                        &format!("/v2/{repo}/manifests/{}", encode(tag)),
                    )
                    .await? as usize;
            }
            for digest in &d.delete_manifests {
                manifests += registry
                    .delete_path(
                        "delete a manifest",
                        &format!("/v2/{repo}/manifests/{digest}"),
                    )
                    .await? as usize;
            }
        }
        summary["tagsDeleted"] = tags.into();
        summary["manifestsDeleted"] = manifests.into();
    }
    report(&summary, &args.termination_log);
    Ok(())
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
