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

/// `v1.2.3` or `1.2.3` (with pre-release and build metadata) as a version, and the short
/// forms image tags use: `3.19` is 3.19.0, `3` is 3.0.0, `3.19-alpine` is 3.19.0-alpine.
pub fn version_of(tag: &str) -> Option<semver::Version> {
    let text = tag.strip_prefix('v').unwrap_or(tag);
    if let Ok(version) = semver::Version::parse(text) {
        return Some(version);
    }
    let (core, rest) = text.split_at(text.find(['-', '+']).unwrap_or(text.len()));
    let numbers: Vec<&str> = core.split('.').collect();
    if numbers.len() > 2
        || numbers
            .iter()
            .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let padding = if numbers.len() == 1 { ".0.0" } else { ".0" };
    semver::Version::parse(&format!("{core}{padding}{rest}")).ok()
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
        assert_eq!(version_of("3.19"), Some(semver::Version::new(3, 19, 0)));
        assert_eq!(version_of("v3"), Some(semver::Version::new(3, 0, 0)));
        assert_eq!(version_of("3.19-alpine").unwrap().pre.as_str(), "alpine");
        assert!(
            version_of("3.x").is_none()
                && version_of("1.2.3.4").is_none()
                && version_of("latest").is_none()
        );
        assert!(Range::parse("banana").is_err());
        assert!(Range::parse("").is_err());
    }
}
