//! Maps a request path to the API endpoint it names. Repository names may contain any number of
//! `/`, so the path is read from the right: the fixed suffix (`/manifests/<ref>`, `/blobs/<digest>`,
//! `/blobs/uploads/<id>`, `/tags/list`, `/referrers/<digest>`) decides the endpoint and whatever
//! is left of it is the name.

use super::digest::Digest;
use super::error::RegistryError;
use super::names::{Reference, RepoName, Tag};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// end-1: `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// end-8: `/v2/<name>/tags/list`
    Tags(RepoName),
    /// end-2, end-3, end-7, end-9: `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// end-2, end-10: `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// end-4a, end-4b, end-11: `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// end-5, end-6, end-13: `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// end-12: `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

impl Route {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(..) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(..) => "upload_start",
            Route::Upload(..) => "upload",
            Route::Referrers(..) => "referrers",
        }
    }

    pub fn repository(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
        }
    }
}

/// Parses a path under `/v2`. `None` means no endpoint has this shape (a plain 404).
pub fn parse(path: &str) -> Option<Result<Route, RegistryError>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Ok(Route::Base));
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Ok(Route::Catalog));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let at = |i: usize| -> &str { segments[i] };
    let name_of = |end: usize| -> Result<RepoName, RegistryError> {
        RepoName::parse(&segments[..end].join("/")).map_err(RegistryError::from)
    };
    let route = if n >= 3 && at(n - 2) == "blobs" && at(n - 1) == "uploads" {
        // `/blobs/uploads` with no trailing slash: clients vary; accept both forms.
        name_of(n - 2).map(Route::UploadStart)
    } else if n >= 4 && at(n - 3) == "blobs" && at(n - 2) == "uploads" {
        if at(n - 1).is_empty() {
            name_of(n - 3).map(Route::UploadStart)
        } else {
            name_of(n - 3).map(|name| Route::Upload(name, at(n - 1).to_owned()))
        }
    } else if n >= 3 && at(n - 2) == "tags" && at(n - 1) == "list" {
        name_of(n - 2).map(Route::Tags)
    } else if n >= 3 && at(n - 2) == "manifests" {
        name_of(n - 2).and_then(|name| Ok(Route::Manifest(name, parse_reference(at(n - 1))?)))
    } else if n >= 3 && at(n - 2) == "blobs" {
        name_of(n - 2).and_then(|name| Ok(Route::Blob(name, parse_digest(at(n - 1))?)))
    } else if n >= 3 && at(n - 2) == "referrers" {
        name_of(n - 2).and_then(|name| Ok(Route::Referrers(name, parse_digest(at(n - 1))?)))
    } else {
        return None;
    };
    Some(route)
}

pub fn parse_digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse().map_err(RegistryError::from)
}

fn parse_reference(s: &str) -> Result<Reference, RegistryError> {
    if s.contains(':') {
        Ok(Reference::Digest(
            s.parse().map_err(RegistryError::DigestInvalid)?,
        ))
    } else {
        Ok(Reference::Tag(Tag::parse(s)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(path: &str) -> Route {
        parse(path)
            .unwrap_or_else(|| panic!("{path}: no route"))
            .unwrap()
    }

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn routes_every_endpoint() {
        assert_eq!(ok("/v2/"), Route::Base);
        assert_eq!(ok("/v2"), Route::Base);
        assert_eq!(ok("/v2/_catalog"), Route::Catalog);
        assert_eq!(ok("/v2/a/b/tags/list"), Route::Tags(name("a/b")));
        assert_eq!(
            ok("/v2/a/manifests/latest"),
            Route::Manifest(name("a"), Reference::Tag(Tag::parse("latest").unwrap()))
        );
        assert_eq!(
            ok(&format!("/v2/a/b/c/manifests/{D}")),
            Route::Manifest(name("a/b/c"), Reference::Digest(D.parse().unwrap()))
        );
        assert_eq!(
            ok(&format!("/v2/x/blobs/{D}")),
            Route::Blob(name("x"), D.parse().unwrap())
        );
        assert_eq!(ok("/v2/x/blobs/uploads/"), Route::UploadStart(name("x")));
        assert_eq!(ok("/v2/x/blobs/uploads"), Route::UploadStart(name("x")));
        assert_eq!(
            ok("/v2/x/blobs/uploads/abc"),
            Route::Upload(name("x"), "abc".into())
        );
        assert_eq!(
            ok(&format!("/v2/x/referrers/{D}")),
            Route::Referrers(name("x"), D.parse().unwrap())
        );
    }

    #[test]
    fn names_that_look_like_endpoints_parse_from_the_right() {
        assert_eq!(
            ok("/v2/blobs/manifests/tags/list"),
            Route::Tags(name("blobs/manifests"))
        );
        assert_eq!(
            ok("/v2/manifests/manifests/manifests/v1"),
            Route::Manifest(
                name("manifests/manifests"),
                Reference::Tag(Tag::parse("v1").unwrap())
            )
        );
    }

    #[test]
    fn rejects_bad_names_and_references() {
        assert!(parse("/v2/A/tags/list").unwrap().is_err());
        assert!(parse("/v2/../x/tags/list").unwrap().is_err());
        assert!(parse("/v2/x/manifests/.bad").unwrap().is_err());
        assert!(parse("/v2/x/blobs/sha256:zz").unwrap().is_err());
        assert!(parse("/v3/x/tags/list").is_none());
        assert!(parse("/v2/x/unknown/thing").is_none());
    }
}
