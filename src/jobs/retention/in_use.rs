//! What the cluster runs, as the operator lists it: one image reference per line (from Pods,
//! their `imageID`s and pod templates). A reference by digest protects that digest in every
//! repository; a reference by tag protects the tag in the repository of that name, whatever
//! host it names, since a registry is known by many names (Service, cluster IP, Ingress).

use std::collections::{HashMap, HashSet};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct InUse {
    pub digests: HashSet<String>,
    /// Repository → tags.
    pub tags: HashMap<String, HashSet<String>>,
}

impl InUse {
    pub fn parse(text: &str) -> InUse {
        let mut in_use = InUse::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            // A bare digest (`sha256:…`) protects that digest.
            if line.starts_with("sha256:") || line.starts_with("sha512:") {
                in_use.digests.insert(line.to_owned());
                continue;
            }
            let Some((repository, reference)) = split_reference(line) else {
                continue;
            };
            match reference {
                Reference::Digest(d) => {
                    in_use.digests.insert(d.to_owned());
                }
                Reference::Tag(t) => {
                    in_use
                        .tags
                        .entry(repository)
                        .or_default()
                        .insert(t.to_owned());
                }
            }
        }
        in_use
    }

    pub fn tags_of(&self, repository: &str) -> Vec<String> {
        self.tags
            .get(repository)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Reference<'a> {
    Tag(&'a str),
    Digest(&'a str),
}

/// `host:5000/team/app:v1` → (`team/app`, Tag `v1`); `team/app@sha256:…` → Digest. A reference
/// with both a tag and a digest is pinned by the digest. `docker-pullable://` (old kubelets'
/// imageID prefix) is dropped. Without a tag, `latest`.
fn split_reference(line: &str) -> Option<(String, Reference<'_>)> {
    let line = line
        .strip_prefix("docker-pullable://")
        .or_else(|| line.strip_prefix("docker://"))
        .unwrap_or(line);
    let (name, reference) = match line.split_once('@') {
        Some((name, digest)) if digest.contains(':') => (name, Reference::Digest(digest)),
        Some(_) => return None,
        None => {
            let last_slash = line.rfind('/').map_or(0, |i| i + 1);
            match line[last_slash..].rfind(':') {
                Some(i) => (
                    &line[..last_slash + i],
                    Reference::Tag(&line[last_slash + i + 1..]),
                ),
                None => (line, Reference::Tag("latest")),
            }
        }
    };
    // A tag on a digest reference (`app:v1@sha256:…`) says nothing more.
    let name = match (&reference, name.rfind('/')) {
        (Reference::Digest(_), slash) => {
            let start = slash.map_or(0, |i| i + 1);
            match name[start..].rfind(':') {
                Some(i) => &name[..start + i],
                None => name,
            }
        }
        _ => name,
    };
    let repository = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => name,
    };
    (!repository.is_empty()).then(|| (repository.to_owned(), reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_repository_and_a_tag_or_digest() {
        let d = "sha256:".to_owned() + &"a".repeat(64);
        let cases = [
            (
                "10.0.0.5:5000/team/app:v1",
                "team/app",
                Reference::Tag("v1"),
            ),
            (
                "main.registry.svc:5000/app",
                "app",
                Reference::Tag("latest"),
            ),
            ("localhost/app:1", "app", Reference::Tag("1")),
            (
                "library/busybox:1.36",
                "library/busybox",
                Reference::Tag("1.36"),
            ),
        ];
        for (line, repo, reference) in cases {
            assert_eq!(
                split_reference(line),
                Some((repo.to_owned(), reference)),
                "{line}"
            );
        }
        let pinned = format!("reg:5000/team/app:v1@{d}");
        assert_eq!(
            split_reference(&pinned),
            Some(("team/app".to_owned(), Reference::Digest(&d)))
        );
        let image_id = format!("docker-pullable://reg.example.org/app@{d}");
        assert_eq!(
            split_reference(&image_id),
            Some(("app".to_owned(), Reference::Digest(&d)))
        );
    }

    #[test]
    fn the_file_collects_digests_and_tags_per_repository() {
        let d = "sha256:".to_owned() + &"b".repeat(64);
        let bare = format!("sha256:{}", "e".repeat(64));
        let text = format!("reg:5000/ci/app:main-1\n\n  reg:5000/ci/app@{d}\nother/x:2\n{bare}\n");
        let in_use = InUse::parse(&text);
        assert!(in_use.digests.contains(&d) && in_use.digests.contains(&bare));
        assert_eq!(in_use.tags_of("ci/app"), ["main-1"]);
        assert_eq!(in_use.tags_of("other/x"), ["2"]);
        assert!(in_use.tags_of("ci/other").is_empty());
    }
}
