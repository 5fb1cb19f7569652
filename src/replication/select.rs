//! Which repositories and tags a policy's rules select (pure). Rules are OR'd, filters inside
//! a rule AND'd. When several rules select one tag their platform lists join, and a rule that
//! wants the whole index wins; referrers come along when any selecting rule wants them.

use crate::crd::replication_policy::ReplicationRule;
use crate::registry::auth::permissions::glob_matches;
use crate::retention::semver_range::{Range, version_of};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("rules[{rule}].tags.regex {regex:?} is not a regular expression: {message}")]
    Regex {
        rule: usize,
        regex: String,
        message: String,
    },
    #[error("rules[{rule}].tags.semver: {message}")]
    Semver { rule: usize, message: String },
    #[error("rules[{rule}].platforms: {platform:?} is not os/architecture[/variant]")]
    Platform { rule: usize, platform: String },
}

/// `os/architecture[/variant]`; no variant matches any variant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(text: &str) -> Option<Platform> {
        let mut parts = text.split('/');
        let os = parts.next().filter(|s| !s.is_empty())?;
        let architecture = parts.next().filter(|s| !s.is_empty())?;
        let variant = parts.next().map(str::to_owned);
        if parts.next().is_some() || variant.as_deref() == Some("") {
            return None;
        }
        Some(Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
        })
    }

    /// Does an index entry's `platform` object fall under this one?
    pub fn covers(&self, platform: &serde_json::Value) -> bool {
        platform["os"].as_str() == Some(self.os.as_str())
            && platform["architecture"].as_str() == Some(self.architecture.as_str())
            && self
                .variant
                .as_deref()
                .is_none_or(|v| platform["variant"].as_str() == Some(v))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

struct Rule {
    repositories: Vec<String>,
    exclude_repositories: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    regex: Option<regex_lite::Regex>,
    semver: Option<Range>,
    newest: Option<usize>,
    platforms: Option<Vec<Platform>>,
    referrers: bool,
}

pub struct Rules(Vec<Rule>);

/// One tag to copy, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub tag: String,
    /// `None`: the whole index (or a single manifest), byte for byte.
    pub platforms: Option<Vec<Platform>>,
    pub referrers: bool,
}

impl Rules {
    pub fn compile(rules: &[ReplicationRule]) -> Result<Rules, SelectError> {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let tags = r.tags.clone().unwrap_or_default();
                let regex = tags
                    .regex
                    .as_deref()
                    .map(|re| {
                        regex_lite::Regex::new(re).map_err(|e| SelectError::Regex {
                            rule: i,
                            regex: re.to_owned(),
                            message: e.to_string(),
                        })
                    })
                    .transpose()?;
                let semver = tags
                    .semver
                    .as_deref()
                    .map(|s| {
                        Range::parse(s).map_err(|e| SelectError::Semver {
                            rule: i,
                            message: e.to_string(),
                        })
                    })
                    .transpose()?;
                let platforms = r
                    .platforms
                    .as_ref()
                    .map(|list| {
                        list.iter()
                            .map(|p| {
                                Platform::parse(p).ok_or_else(|| SelectError::Platform {
                                    rule: i,
                                    platform: p.clone(),
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?;
                Ok(Rule {
                    repositories: r.repositories.clone(),
                    exclude_repositories: r.exclude_repositories.clone().unwrap_or_default(),
                    include: tags.include.unwrap_or_default(),
                    exclude: tags.exclude.unwrap_or_default(),
                    regex,
                    semver,
                    newest: tags.newest.map(|n| n.max(1) as usize),
                    platforms,
                    referrers: r.referrers.unwrap_or(true),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Rules)
    }

    /// Does any rule cover this source repository?
    pub fn covers(&self, repository: &str) -> bool {
        self.0.iter().any(|r| r.covers(repository))
    }

    /// The repository names rules spell out without wildcards: a registry whose catalog is
    /// closed can still be read through them.
    pub fn literal_repositories(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .iter()
            .flat_map(|r| r.repositories.iter())
            .filter(|g| !g.contains(['*', '?']))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether every rule names its repositories literally (no catalog needed).
    pub fn all_literal(&self) -> bool {
        self.0
            .iter()
            .all(|r| r.repositories.iter().all(|g| !g.contains(['*', '?'])))
    }

    /// The tags of `repository` to copy, sorted by name. Referrers tags (`sha256-<hex>…`) are
    /// never selected as tags: they travel with their subjects.
    pub fn select(&self, repository: &str, tags: &[String]) -> Vec<Selected> {
        let mut chosen: BTreeMap<String, Selected> = BTreeMap::new();
        for rule in self.0.iter().filter(|r| r.covers(repository)) {
            for tag in rule.tags(tags) {
                let entry = chosen.entry(tag.clone()).or_insert_with(|| Selected {
                    tag: tag.clone(),
                    platforms: Some(Vec::new()),
                    referrers: false,
                });
                entry.referrers |= rule.referrers;
                entry.platforms = match (entry.platforms.take(), &rule.platforms) {
                    (Some(mut have), Some(more)) => {
                        have.extend(more.iter().cloned());
                        have.sort();
                        have.dedup();
                        Some(have)
                    }
                    _ => None,
                };
            }
        }
        chosen.into_values().collect()
    }
}

impl Rule {
    fn covers(&self, repository: &str) -> bool {
        self.repositories
            .iter()
            .any(|g| glob_matches(g, repository))
            && !self
                .exclude_repositories
                .iter()
                .any(|g| glob_matches(g, repository))
    }

    fn tags<'a>(&self, tags: &'a [String]) -> Vec<&'a String> {
        let passing: Vec<&String> = tags
            .iter()
            .filter(|t| !is_referrers_tag(t))
            .filter(|t| self.include.is_empty() || self.include.iter().any(|g| glob_matches(g, t)))
            .filter(|t| !self.exclude.iter().any(|g| glob_matches(g, t)))
            .filter(|t| self.regex.as_ref().is_none_or(|re| re.is_match(t)))
            .filter(|t| {
                self.semver
                    .as_ref()
                    .is_none_or(|range| version_of(t).is_some_and(|v| range.matches(&v)))
            })
            .collect();
        let Some(newest) = self.newest else {
            return passing;
        };
        let mut versioned: Vec<(semver::Version, &String)> = passing
            .into_iter()
            .filter_map(|t| version_of(t).map(|v| (v, t)))
            .collect();
        // Highest first; `v1.2.0` and `1.2.0` are one version: the name breaks the tie.
        versioned.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        versioned.into_iter().take(newest).map(|(_, t)| t).collect()
    }
}

/// `sha256-<64 hex>` (the referrers fallback tag), and cosign's `sha256-<hex>.sig`, `.att`,
/// `.sbom`.
pub fn is_referrers_tag(tag: &str) -> bool {
    subject_of_tag(tag).is_some()
}

/// The subject digest (`sha256:<hex>`) a referrers or cosign tag belongs to.
pub fn subject_of_tag(tag: &str) -> Option<String> {
    let (algorithm, rest) = tag.split_once('-')?;
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    let hex = rest.get(..len)?;
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    match &rest[len..] {
        "" | ".sig" | ".att" | ".sbom" => Some(format!("{algorithm}:{hex}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
