//! Names and labels of what a RetentionPolicy owns.

use std::collections::BTreeMap;

/// On every Job, CronJob, ConfigMap and Secret of a policy: which policy it belongs to.
pub const POLICY_LABEL: &str = "wharf.dev/retention-policy";
/// Removes the policy's robot account from its Registry before the policy goes.
pub const FINALIZER: &str = "wharf.dev/retention-cleanup";
pub const RUN_COMPONENT: &str = "retention";
pub const GC_COMPONENT: &str = "retention-garbage-collection";

pub fn labels(policy: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "wharf".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            crate::operator::registry::names::MANAGED_BY.to_owned(),
        ),
        (POLICY_LABEL.to_owned(), policy.to_owned()),
    ])
}

/// Short, stable hash of a string for names (the first 8 hex digits of its SHA-256).
pub fn short_hash(value: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(value.as_bytes())[..4])
}

pub struct PolicyNames<'a> {
    pub policy: &'a str,
    pub namespace: &'a str,
}

impl PolicyNames<'_> {
    /// The policy, its in-use list: what every run mounts.
    pub fn config(&self) -> String {
        format!("{}-retention", self.policy)
    }
    /// The candidates of the newest run.
    pub fn report(&self) -> String {
        format!("{}-retention-report", self.policy)
    }
    /// The robot's credential the runs use (wharf Registries).
    pub fn credential(&self) -> String {
        format!("{}-retention-credential", self.policy)
    }
    pub fn cron_job(&self) -> String {
        format!("{}-retention", self.policy)
    }
    /// An on-demand run, one per `requested-at` value.
    pub fn requested_job(&self, requested_at: &str) -> String {
        format!("{}-retention-{}", self.policy, short_hash(requested_at))
    }
    /// The garbage collection after the run `run_job`.
    pub fn gc_job(&self, run_job: &str) -> String {
        format!("{}-gc-{}", self.policy, short_hash(run_job))
    }
    /// `rp-<policy>-<hash of namespace>`: unique per Registry (policies of one Registry share a
    /// namespace), at most 54 characters.
    pub fn robot(&self) -> String {
        format!(
            "rp-{}-{}",
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
        // CronJob names leave 11 characters for the Jobs' suffix.
        assert!(names.cron_job().len() <= 52);
        for name in [
            names.config(),
            names.report(),
            names.credential(),
            names.requested_job("2026-11-23T10:00:00Z"),
            names.gc_job("x-retention-29123456"),
            names.robot(),
        ] {
            assert!(name.len() <= 63, "{name} is too long");
        }
        assert_ne!(names.requested_job("a"), names.requested_job("b"));
        let other = PolicyNames {
            policy: &policy,
            namespace: "other",
        };
        assert_ne!(names.robot(), other.robot());
    }
}
