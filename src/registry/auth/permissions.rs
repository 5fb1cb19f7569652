//! What an account may do: pull, push or delete on repositories named by glob patterns.
//! `*` matches within one path segment, `**` across segments (`team-a/**` is everything below
//! `team-a/`), `?` one character. Pure functions, shared by basic auth, tokens and robots.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// `*` stands for every action, as in Docker token scopes.
    pub fn parse_list(s: &str) -> Vec<Action> {
        let mut out = Vec::new();
        for word in s.split(',').map(str::trim) {
            match word {
                "pull" => out.push(Action::Pull),
                "push" => out.push(Action::Push),
                "delete" => out.push(Action::Delete),
                "*" => out.extend(Action::ALL),
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// One grant: these actions on repositories matching any of these patterns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub repositories: Vec<String>,
    pub actions: Vec<Action>,
}

/// What an identity may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// Everything, including the admin API (htpasswd users without access rules).
    Admin,
    /// Exactly what the listed permissions allow.
    Limited(Vec<Permission>),
}

impl Grants {
    pub fn allows(&self, repository: &str, action: Action) -> bool {
        match self {
            Grants::Admin => true,
            Grants::Limited(perms) => perms.iter().any(|p| {
                p.actions.contains(&action)
                    && p.repositories.iter().any(|g| glob_matches(g, repository))
            }),
        }
    }

    /// The subset of `wanted` this identity may perform on `repository`.
    pub fn permitted(&self, repository: &str, wanted: &[Action]) -> Vec<Action> {
        wanted
            .iter()
            .copied()
            .filter(|a| self.allows(repository, *a))
            .collect()
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Grants::Admin)
    }
}

/// Checks a pattern: at most 256 characters and only characters a repository name or a glob uses.
pub fn valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 256
        && pattern
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*?".contains(&b))
}

pub fn glob_matches(pattern: &str, name: &str) -> bool {
    matches_from(pattern.as_bytes(), name.as_bytes())
}

fn matches_from(p: &[u8], n: &[u8]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            // `a/**` covers what is below `a/`; `**/x` also matches `x` at the top.
            if let Some(after_slash) = rest.strip_prefix(b"/")
                && matches_from(after_slash, n)
            {
                return true;
            }
            (0..=n.len()).any(|i| matches_from(rest, &n[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            let segment_end = n.iter().position(|&b| b == b'/').unwrap_or(n.len());
            (0..=segment_end).any(|i| matches_from(rest, &n[i..]))
        }
        Some(b'?') => n.first().is_some_and(|&c| c != b'/') && matches_from(&p[1..], &n[1..]),
        Some(&c) => n.first() == Some(&c) && matches_from(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("team-a/**", "team-a/app", true),
            ("team-a/**", "team-a/x/y/z", true),
            ("team-a/**", "team-a", false),
            ("team-a/**", "team-ab/app", false),
            ("team-a/**", "team-b/x", false),
            ("team-a/*", "team-a/app", true),
            ("team-a/*", "team-a/x/y", false),
            ("*/app", "team-a/app", true),
            ("*/app", "a/b/app", false),
            ("**/app", "app", true),
            ("**/app", "a/b/app", true),
            ("**", "anything/at/all", true),
            ("lib?", "lib1", true),
            ("lib?", "lib/", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("a/**/z", "a/b/c/z", true),
            ("a/**/z", "a/z", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(glob_matches(pattern, name), want, "{pattern} vs {name}");
        }
    }

    #[test]
    fn grants_intersect_with_what_is_asked() {
        let grants = Grants::Limited(vec![
            Permission {
                repositories: vec!["team-a/**".into()],
                actions: vec![Action::Pull],
            },
            Permission {
                repositories: vec!["team-a/ci/*".into()],
                actions: vec![Action::Push, Action::Pull],
            },
        ]);
        assert_eq!(grants.permitted("team-a/app", &Action::ALL), [Action::Pull]);
        assert_eq!(
            grants.permitted("team-a/ci/x", &Action::ALL),
            [Action::Pull, Action::Push]
        );
        assert!(grants.permitted("team-b/x", &Action::ALL).is_empty());
        assert!(!grants.is_admin());
        assert!(Grants::Admin.allows("x", Action::Delete));
    }

    #[test]
    fn action_lists() {
        assert_eq!(
            Action::parse_list("push,pull"),
            [Action::Pull, Action::Push]
        );
        assert_eq!(Action::parse_list("*"), Action::ALL);
        assert!(Action::parse_list("bogus").is_empty());
        assert!(valid_pattern("team-a/**") && !valid_pattern("Team") && !valid_pattern(""));
    }
}
