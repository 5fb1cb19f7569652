//! Where a source repository lands: `stripPrefix` taken off the front, `repositoryPrefix` put
//! on (pure).

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Naming {
    pub strip_prefix: String,
    pub repository_prefix: String,
}

impl Naming {
    /// The destination repository for `source`; a source without the strip prefix keeps its
    /// whole name. `None` when nothing would be left of it.
    pub fn destination(&self, source: &str) -> Option<String> {
        let kept = source
            .strip_prefix(self.strip_prefix.as_str())
            .unwrap_or(source);
        let kept = kept.trim_start_matches('/');
        (!kept.is_empty()).then(|| format!("{}{kept}", self.repository_prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_stripped_then_added() {
        let naming = Naming {
            strip_prefix: "library/".into(),
            repository_prefix: "mirror/".into(),
        };
        assert_eq!(
            naming.destination("library/alpine").as_deref(),
            Some("mirror/alpine")
        );
        assert_eq!(
            naming.destination("team/app").as_deref(),
            Some("mirror/team/app")
        );
        assert_eq!(naming.destination("library/").as_deref(), None);
        assert_eq!(Naming::default().destination("a/b").as_deref(), Some("a/b"));
    }
}
