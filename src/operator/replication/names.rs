//! Names and labels of what a ReplicationPolicy owns.

use crate::operator::retention::names::short_hash;
use std::collections::BTreeMap;

/// On every Job, CronJob, ConfigMap and Secret of a policy: which policy it belongs to.
pub const POLICY_LABEL: &str = "wharf.dev/replication-policy";
/// Removes the policy's robot accounts from its Registries before the policy goes.
pub const FINALIZER: &str = "wharf.dev/replication-cleanup";
pub const RUN_COMPONENT: &str = "replication";
/// On a push-triggered Job: the repository and tag it copies.
pub const PUSHED_ANNOTATION: &str = "wharf.dev/pushed";

pub fn labels(policy: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "wharf".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            RUN_COMPONENT.to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            crate::operator::registry::names::MANAGED_BY.to_owned(),
        ),
        (POLICY_LABEL.to_owned(), policy.to_owned()),
    ])
}

/// Which end of a copy a robot or Secret serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn word(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

pub struct PolicyNames<'a> {
    pub policy: &'a str,
    pub namespace: &'a str,
}

impl PolicyNames<'_> {
    /// The spec every run mounts.
    pub fn config(&self) -> String {
        format!("{}-replication", self.policy)
    }
    /// At most 52 characters (Jobs add 11): `-replicate` fits a 42-character policy name.
    pub fn cron_job(&self) -> String {
        format!("{}-replicate", self.policy)
    }
    /// The robot credential of one side (wharf Registries only).
    pub fn credential(&self, side: Side) -> String {
        format!("{}-repl-{}", self.policy, side.word())
    }
    /// An on-demand run, one per `requested-at` value.
    pub fn requested_job(&self, requested_at: &str) -> String {
        format!("{}-replication-{}", self.policy, short_hash(requested_at))
    }
    /// The run a push of `digest` to `repository:tag` starts: one per push, whichever operator
    /// replica hears of it first.
    pub fn push_job(&self, repository: &str, tag: &str, digest: &str) -> String {
        format!(
            "{}-push-{}",
            self.policy,
            short_hash(&format!("{repository}:{tag}@{digest}"))
        )
    }
    /// `rs-`/`rd-<policy>-<hash of namespace and policy>`: unique per Registry, at most 54
    /// characters, one per side (a policy may copy within one Registry).
    pub fn robot(&self, side: Side) -> String {
        let letter = match side {
            Side::Source => 's',
            Side::Destination => 'd',
        };
        format!(
            "r{letter}-{}-{}",
            self.policy,
            &short_hash(&format!("{}/{}", self.namespace, self.policy))[..6]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_kubernetes_limits_for_the_longest_policy_name() {
        let policy = format!("a{}", "b".repeat(41));
        let names = PolicyNames {
            policy: &policy,
            namespace: "registry-system",
        };
        assert!(names.cron_job().len() <= 52);
        for name in [
            names.config(),
            names.credential(Side::Destination),
            names.requested_job("2026-11-23T10:00:00Z"),
            names.push_job("team/app", "v1", "sha256:00"),
        ] {
            assert!(name.len() <= 63, "{name} is too long");
        }
        assert!(names.robot(Side::Source).len() <= 54);
        assert_ne!(names.robot(Side::Source), names.robot(Side::Destination));
        assert_ne!(
            names.push_job("a", "1", "sha256:00"),
            names.push_job("a", "1", "sha256:01")
        );
    }
}
