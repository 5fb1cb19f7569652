//! Repository names, tags and manifest references, validated with the distribution spec's grammar
//! before anything touches storage (a name never contains `..`, uppercase or empty components).

use super::digest::Digest;
use std::fmt;

/// The spec limits tags to 128 characters; names are limited by us (Distribution uses 255) so
/// that a name always fits in a path on every filesystem and object store.
pub const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "repository name {0:?} is invalid: components are lowercase letters and digits separated by '.', '_', '__' or dashes, joined by '/'"
    )]
    Repository(String),
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error(
        "tag {0:?} is invalid: up to 128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'"
    )]
    Tag(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(name: &str) -> Result<RepoName, NameError> {
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if name.is_empty() || !name.split('/').all(valid_path_component) {
            return Err(NameError::Repository(name.to_owned()));
        }
        Ok(RepoName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: exactly ".", "_", "__", or any number of "-".
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
    pub fn parse(tag: &str) -> Result<Tag, NameError> {
        let bytes = tag.as_bytes();
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_TAG_LEN
            && word(bytes[0])
            && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
        if ok {
            Ok(Tag(tag.to_owned()))
        } else {
            Err(NameError::Tag(tag.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        let good = [
            "a",
            "library/alpine",
            "a/b/c/d/e",
            "my-app",
            "my--app",
            "a.b",
            "a_b",
            "a__b",
            "0/1",
        ];
        for name in good {
            assert!(RepoName::parse(name).is_ok(), "{name} rejected");
        }
        let bad = [
            "",
            "A",
            "Library/alpine",
            "a/",
            "/a",
            "a//b",
            "../a",
            "a/../b",
            "a/./b",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a_",
            "a b",
            "a:b",
            "a._b",
        ];
        for name in bad {
            assert!(RepoName::parse(name).is_err(), "{name:?} accepted");
        }
        assert_eq!(RepoName::parse(&"a".repeat(256)), Err(NameError::TooLong));
        assert!(RepoName::parse(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn tags() {
        for tag in ["latest", "v1.2.3", "_x", "A-b.c_d", &"t".repeat(128)] {
            assert!(Tag::parse(tag).is_ok(), "{tag} rejected");
        }
        for tag in ["", ".x", "-x", "a/b", "a:b", "../x", &"t".repeat(129)] {
            assert!(Tag::parse(tag).is_err(), "{tag:?} accepted");
        }
    }
}
