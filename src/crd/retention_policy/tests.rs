use super::*;
use crate::crd::common::cel_table::{assert_cases, verdict};
use serde_json::{Value, json};

fn check_named(name: &str, spec: Value) -> Result<(), String> {
    verdict::<RetentionPolicy>(json!({
        "apiVersion": "wharf.dev/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": name, "namespace": "registry"}, "spec": spec,
    }))
}

fn check(spec: Value) -> Result<(), String> {
    check_named("ci-cleanup", spec)
}

#[test]
fn cel_rules_accept_good_policies_and_explain_bad_ones() {
    let reg = json!({"name": "main"});
    let endpoint = json!({"url": "https://registry.example.org", "credentialsSecretRef": {"name": "upstream"}, "caSecretRef": {"name": "ca"}});
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            "the design's example",
            json!({"registryRef": reg, "repositories": ["ci/**"], "excludeRepositories": ["ci/golden-*"],
                "keep": [{"tags": ["v*.*.*"]}, {"tags": ["**"], "mostRecentlyPushed": 10},
                         {"tags": ["**"], "pulledWithin": "720h"}, {"tagRegex": "^main-[0-9a-f]{7}$", "pushedWithin": "168h"},
                         {"semver": ">=1.0.0 <2", "newest": 3}],
                "untagged": {"delete": true, "olderThan": "24h"},
                "protect": {"tags": ["latest", "stable"], "inUseByCluster": true},
                "safety": {"dryRun": true, "maxDeletionsPerRun": 500, "minTagsPerRepository": 1},
                "schedule": "0 2 * * *", "timeZone": "Europe/Berlin", "runGarbageCollection": true}),
            None,
        ),
        ("on demand only", json!({"registryRef": reg}), None),
        (
            "no registry",
            json!({"keep": [{"tags": ["v*"]}]}),
            Some("exactly one of registryRef"),
        ),
        (
            "two registries",
            json!({"registryRef": reg, "endpoint": endpoint}),
            Some("exactly one of registryRef"),
        ),
        (
            "endpoint with tag rules",
            json!({"endpoint": endpoint, "keep": [{"tags": ["v*"]}, {"semver": ">=1", "newest": 2}, {"tagRegex": "^rel-"}]}),
            None,
        ),
        (
            "endpoint with pushedWithin",
            json!({"endpoint": endpoint, "keep": [{"tags": ["**"], "pushedWithin": "7d"}]}),
            Some("does not say when tags were pushed or pulled"),
        ),
        (
            "endpoint with newest and no semver",
            json!({"endpoint": endpoint, "keep": [{"tags": ["**"], "newest": 3}]}),
            Some("newest only with semver"),
        ),
        (
            "endpoint with untagged deletion",
            json!({"endpoint": endpoint, "untagged": {"delete": true}}),
            Some("untagged manifests can only be found"),
        ),
        (
            "endpoint with garbage collection",
            json!({"endpoint": endpoint, "runGarbageCollection": true}),
            Some("runGarbageCollection needs registryRef"),
        ),
        (
            "endpoint url with path",
            json!({"endpoint": {"url": "https://r.example.org/v2/"}}),
            Some("without a path"),
        ),
        (
            "endpoint url without scheme",
            json!({"endpoint": {"url": "r.example.org"}}),
            Some("url must be http(s)://host"),
        ),
        (
            "bad schedule",
            json!({"registryRef": reg, "schedule": "every night"}),
            Some("schedule must be a cron expression"),
        ),
        (
            "macro schedule",
            json!({"registryRef": reg, "schedule": "@daily"}),
            None,
        ),
        (
            "time zone without schedule",
            json!({"registryRef": reg, "timeZone": "UTC"}),
            Some("timeZone only applies with a schedule"),
        ),
        (
            "bad duration",
            json!({"registryRef": reg, "keep": [{"pushedWithin": "a week"}]}),
            Some("pushedWithin must be a duration"),
        ),
        (
            "bad untagged age",
            json!({"registryRef": reg, "untagged": {"delete": true, "olderThan": "1 day"}}),
            Some("olderThan must be a duration"),
        ),
        (
            "newest and mostRecentlyPushed",
            json!({"registryRef": reg, "keep": [{"tags": ["**"], "newest": 1, "mostRecentlyPushed": 2}]}),
            Some("newest or mostRecentlyPushed, not both"),
        ),
        (
            "zero newest",
            json!({"registryRef": reg, "keep": [{"semver": ">=1", "newest": 0}]}),
            Some("newest is at least 1"),
        ),
        (
            "zero max deletions",
            json!({"registryRef": reg, "safety": {"maxDeletionsPerRun": 0}}),
            Some("maxDeletionsPerRun is at least 1"),
        ),
        (
            "bad repository glob",
            json!({"registryRef": reg, "repositories": ["CI Builds"]}),
            Some("repositories are globs"),
        ),
    ];
    assert_cases(cases, check);
    let long = format!("a{}", "x".repeat(42));
    assert!(
        check_named(&long, json!({"registryRef": reg}))
            .unwrap_err()
            .contains("at most 42")
    );
    assert!(check_named("9lives", json!({"registryRef": reg})).is_err());
}

#[test]
fn defaults_are_the_safe_ones() {
    let spec: RetentionPolicySpec =
        serde_json::from_value(json!({"registryRef": {"name": "main"}})).unwrap();
    assert!(spec.dry_run(), "dry run unless the policy says otherwise");
    assert!(
        spec.in_use_protection(),
        "what the cluster runs is protected by default"
    );
    assert!(!spec.garbage_collection());
    let endpoint: RetentionPolicySpec = serde_json::from_value(
        json!({"endpoint": {"url": "http://r:5000"}, "runGarbageCollection": true}),
    )
    .unwrap();
    assert!(
        !endpoint.garbage_collection(),
        "no garbage collection for endpoints"
    );
}
