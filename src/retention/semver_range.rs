//! Semver ranges as people write them in policies: space-separated comparators that must all
//! hold (`>=1.0.0 <2`), alternatives with `||`, and `^`/`~`/`x` shorthands, through the `semver`
//! crate (which wants comma-separated comparators). Tags may carry a leading `v`.

#[derive(Debug, Clone)]
pub struct Range(Vec<semver::VersionReq>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a semver range like \">=1.0.0 <2\" or \"^1.2\"")]
pub struct RangeError(pub String);

impl Range {
    pub fn parse(text: &str) -> Result<Range, RangeError> {
        let alternatives = text
            .split("||")
            .map(|alt| {
                let comparators: Vec<&str> = alt.split_whitespace().collect();
                if comparators.is_empty() {
                    return Err(RangeError(text.to_owned()));
                }
                semver::VersionReq::parse(&comparators.join(", "))
                    .map_err(|_| RangeError(text.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Range(alternatives))
    }

    pub fn matches(&self, version: &semver::Version) -> bool {
        self.0.iter().any(|r| r.matches(version))
    }
}

/// `v1.2.3` or `1.2.3` (with pre-release and build metadata) as a version.
pub fn version_of(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = Range::parse(">=1.0.0 <2").unwrap();
        assert!(r.matches(&version_of("v1.4.0").unwrap()));
        assert!(!r.matches(&version_of("2.0.0").unwrap()));
        assert!(!r.matches(&version_of("0.9.9").unwrap()));
        let alt = Range::parse("^1.2 || ~3.1.0").unwrap();
        assert!(alt.matches(&version_of("1.9.0").unwrap()));
        assert!(alt.matches(&version_of("3.1.7").unwrap()));
        assert!(!alt.matches(&version_of("3.2.0").unwrap()));
        assert!(version_of("main-abc1234").is_none());
        assert!(Range::parse("banana").is_err());
        assert!(Range::parse("").is_err());
    }
}
