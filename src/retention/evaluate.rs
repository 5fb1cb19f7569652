//! The evaluator: a repository's listing and a policy in, the tags and manifests to delete out.

use super::semver_range::{Range, RangeError, version_of};
use super::{KeepRule, Manifest, Policy};
use crate::registry::auth::permissions::glob_matches;
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvalError {
    #[error("tagRegex {0:?} is not a valid regular expression")]
    Regex(String),
    #[error(transparent)]
    Semver(#[from] RangeError),
}

/// A tag the run removes: the manifest it points at, and why no rule kept it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TagCandidate {
    pub tag: String,
    pub digest: String,
    pub reason: String,
}

/// A manifest the run deletes, with the tags that go with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestCandidate {
    pub digest: String,
    pub tags: Vec<String>,
    pub reason: String,
}

/// What a run deletes in one repository, and why the rest stays.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Tags removed from manifests that keep other tags (one delete each).
    pub delete_tags: Vec<String>,
    /// Manifests deleted with all their tags, by digest (one delete each).
    pub delete_manifests: Vec<String>,
    /// Every tag that goes, whether alone or with its manifest, by tag: what a report lists.
    pub tags: Vec<TagCandidate>,
    /// Every manifest that goes, by digest.
    pub manifests: Vec<ManifestCandidate>,
    /// Surviving tags and the first reason each survives.
    pub kept: BTreeMap<String, &'static str>,
    pub tags_evaluated: usize,
}

impl Decision {
    pub fn deletions(&self) -> usize {
        self.delete_tags.len() + self.delete_manifests.len()
    }
}

struct Tagged<'a> {
    tag: &'a str,
    manifest: &'a Manifest,
}

struct CompiledRule<'a> {
    rule: &'a KeepRule,
    regex: Option<regex_lite::Regex>,
    semver: Option<Range>,
}

impl<'a> CompiledRule<'a> {
    fn compile(rule: &'a KeepRule) -> Result<Self, EvalError> {
        let regex = match &rule.tag_regex {
            Some(r) => Some(regex_lite::Regex::new(r).map_err(|_| EvalError::Regex(r.clone()))?),
            None => None,
        };
        let semver = rule.semver.as_deref().map(Range::parse).transpose()?;
        Ok(CompiledRule {
            rule,
            regex,
            semver,
        })
    }

    fn selects(&self, tag: &str) -> bool {
        (self.rule.tags.is_empty() || self.rule.tags.iter().any(|g| glob_matches(g, tag)))
            && self.regex.as_ref().is_none_or(|r| r.is_match(tag))
            && self
                .semver
                .as_ref()
                .is_none_or(|range| version_of(tag).is_some_and(|v| range.matches(&v)))
    }

    /// Why this rule did not keep `t`, if it selects it at all.
    fn passed_over(&self, index: usize, t: &Tagged, now: u64) -> Option<String> {
        if !self.selects(t.tag) {
            return None;
        }
        let rule = format!("keep[{index}] selects it, but");
        let older = |at: u64, d: std::time::Duration| at + d.as_secs() < now;
        if let Some(d) = self.rule.pushed_within
            && older(t.manifest.pushed_at, d)
        {
            return Some(format!("{rule} it was pushed more than {} ago", span(d)));
        }
        if let Some(d) = self.rule.pulled_within
            && t.manifest.last_pulled_at.is_none_or(|at| older(at, d))
        {
            return Some(format!("{rule} it was not pulled in the last {}", span(d)));
        }
        if let Some(n) = self.rule.most_recently_pushed {
            return Some(format!(
                "{rule} it is not among the {n} most recently pushed"
            ));
        }
        if let Some(n) = self.rule.newest {
            let which = if self.semver.is_some() {
                "highest versions"
            } else {
                "most recently pushed"
            };
            return Some(format!("{rule} it is not among the {n} {which}"));
        }
        None
    }

    /// The tags among `all` this rule keeps.
    fn keeps<'t>(&self, all: &'t [Tagged<'t>], now: u64) -> HashSet<&'t str> {
        let within = |at: Option<u64>, d: Option<std::time::Duration>| match d {
            None => true,
            Some(d) => at.is_some_and(|at| at + d.as_secs() >= now),
        };
        let mut candidates: Vec<&Tagged> = all
            .iter()
            .filter(|t| self.selects(t.tag))
            .filter(|t| within(Some(t.manifest.pushed_at), self.rule.pushed_within))
            .filter(|t| within(t.manifest.last_pulled_at, self.rule.pulled_within))
            .collect();
        // Most recently pushed first; the tag name breaks ties so the result never depends on
        // listing order.
        candidates.sort_by(|a, b| {
            b.manifest
                .pushed_at
                .cmp(&a.manifest.pushed_at)
                .then(a.tag.cmp(b.tag))
        });
        let mut kept: HashSet<&str> = candidates.iter().map(|t| t.tag).collect();
        if let Some(n) = self.rule.most_recently_pushed {
            let top: HashSet<&str> = candidates.iter().take(n).map(|t| t.tag).collect();
            kept.retain(|t| top.contains(t));
        }
        if let Some(n) = self.rule.newest {
            let top: HashSet<&str> = match &self.semver {
                Some(_) => {
                    let mut versioned: Vec<(semver::Version, &str)> = candidates
                        .iter()
                        .filter_map(|t| Some((version_of(t.tag)?, t.tag)))
                        .collect();
                    versioned.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
                    versioned.into_iter().take(n).map(|(_, t)| t).collect()
                }
                None => candidates.iter().take(n).map(|t| t.tag).collect(),
            };
            kept.retain(|t| top.contains(t));
        }
        kept
    }
}

/// Decides one repository. `in_use` holds digests running in the cluster; `now` is Unix seconds.
pub fn evaluate(
    listing: &[Manifest],
    policy: &Policy,
    in_use: &HashSet<String>,
    now: u64,
) -> Result<Decision, EvalError> {
    let rules = policy
        .keep
        .iter()
        .map(CompiledRule::compile)
        .collect::<Result<Vec<_>, _>>()?;
    let tagged: Vec<Tagged> = listing
        .iter()
        .flat_map(|m| m.tags.iter().map(move |tag| Tagged { tag, manifest: m }))
        .collect();
    let mut kept: BTreeMap<String, &'static str> = BTreeMap::new();
    for t in &tagged {
        if policy.protected_tags.iter().any(|g| glob_matches(g, t.tag)) {
            kept.entry(t.tag.to_owned()).or_insert("protected");
        } else if in_use.contains(&t.manifest.digest) {
            kept.entry(t.tag.to_owned())
                .or_insert("in use in the cluster");
        }
    }
    for rule in &rules {
        for tag in rule.keeps(&tagged, now) {
            kept.entry(tag.to_owned()).or_insert("kept by a rule");
        }
    }
    // The floor: the most recently pushed tags stay until the repository has enough.
    let mut by_recency: Vec<&Tagged> = tagged.iter().collect();
    by_recency.sort_by(|a, b| {
        b.manifest
            .pushed_at
            .cmp(&a.manifest.pushed_at)
            .then(a.tag.cmp(b.tag))
    });
    for t in by_recency {
        if kept.len() >= policy.min_tags_per_repository {
            break;
        }
        kept.entry(t.tag.to_owned())
            .or_insert("minimum tags per repository");
    }

    // Manifests that stay: a surviving tag, in use, or (untagged) too young or not collected;
    // then everything a staying index contains, and referrers of staying manifests.
    let by_digest: BTreeMap<&str, &Manifest> =
        listing.iter().map(|m| (m.digest.as_str(), m)).collect();
    let mut staying: BTreeSet<&str> = BTreeSet::new();
    for m in listing {
        let tags_survive = m.tags.iter().any(|t| kept.contains_key(t));
        let untagged_stays = m.tags.is_empty()
            && m.subject.is_none()
            && policy
                .untagged_older_than
                .is_none_or(|age| m.pushed_at + age.as_secs() > now);
        if tags_survive || untagged_stays || in_use.contains(&m.digest) {
            staying.insert(&m.digest);
        }
    }
    loop {
        let mut grown = false;
        for m in listing {
            if staying.contains(m.digest.as_str()) {
                for child in &m.children {
                    if by_digest.contains_key(child.as_str()) && staying.insert(child.as_str()) {
                        grown = true;
                    }
                }
            } else if let Some(subject) = &m.subject {
                // A referrer stays with its subject; with `keep_referrers`, also without it; one
                // whose subject is not in the repository is left alone.
                let subject_stays =
                    staying.contains(subject.as_str()) || !by_digest.contains_key(subject.as_str());
                if (subject_stays || policy.keep_referrers) && staying.insert(&m.digest) {
                    grown = true;
                }
            }
        }
        if !grown {
            break;
        }
    }

    let mut decision = Decision {
        tags_evaluated: tagged.len(),
        kept,
        ..Decision::default()
    };
    let why_not_kept = |t: &Tagged| {
        rules
            .iter()
            .enumerate()
            .find_map(|(i, rule)| rule.passed_over(i, t, now))
            .unwrap_or_else(|| match rules.is_empty() {
                true => "the policy has no keep rules".to_owned(),
                false => "no keep rule selects it".to_owned(),
            })
    };
    for t in &tagged {
        if !decision.kept.contains_key(t.tag) {
            decision.tags.push(TagCandidate {
                tag: t.tag.to_owned(),
                digest: t.manifest.digest.clone(),
                reason: why_not_kept(t),
            });
        }
    }
    for m in listing {
        if staying.contains(m.digest.as_str()) {
            decision.delete_tags.extend(
                m.tags
                    .iter()
                    .filter(|t| !decision.kept.contains_key(*t))
                    .cloned(),
            );
            continue;
        }
        let reason = match (&m.subject, m.tags.is_empty(), policy.untagged_older_than) {
            (_, false, _) => "none of its tags is kept".to_owned(),
            (Some(subject), true, _) => format!("its subject {subject} is deleted"),
            (None, true, Some(age)) if age.as_secs() > 0 => {
                format!("untagged for more than {}", span(age))
            }
            (None, true, _) => "untagged".to_owned(),
        };
        decision.delete_manifests.push(m.digest.clone());
        decision.manifests.push(ManifestCandidate {
            digest: m.digest.clone(),
            tags: m.tags.clone(),
            reason,
        });
    }
    decision.delete_tags.sort();
    decision.delete_manifests.sort();
    decision.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    decision.manifests.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(decision)
}

/// A duration as a policy writes it: `7d`, `168h` → `7d`, `90m`, `45s`.
fn span(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests;
