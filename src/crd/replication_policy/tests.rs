use super::*;
use crate::crd::common::cel_table::{assert_cases, verdict};
use serde_json::{Value, json};

fn check_named(name: &str, spec: Value) -> Result<(), String> {
    verdict::<ReplicationPolicy>(json!({
        "apiVersion": "wharf.dev/v1alpha1", "kind": "ReplicationPolicy",
        "metadata": {"name": name, "namespace": "registry"}, "spec": spec,
    }))
}

fn check(spec: Value) -> Result<(), String> {
    check_named("mirror-base", spec)
}

/// `base` with the value at `path` (a JSON pointer's parts) set, the last part created if new.
fn with(mut base: Value, path: &[&str], value: Value) -> Value {
    let (last, parents) = path.split_last().expect("a path");
    let parent = format!("/{}", parents.join("/"));
    let at = if parents.is_empty() {
        &mut base
    } else {
        base.pointer_mut(&parent).expect("path exists")
    };
    match at {
        Value::Array(items) => items[last.parse::<usize>().expect("an index")] = value,
        other => other[*last] = value,
    }
    base
}

fn sample() -> Value {
    json!({
        "source": {"endpoint": {"url": "https://registry.example.org", "credentialsSecretRef": {"name": "upstream"}}},
        "destination": {"registryRef": {"name": "main"}, "repositoryPrefix": "mirror/", "stripPrefix": "library/"},
        "rules": [{"repositories": ["library/alpine", "team/**"],
                   "tags": {"include": ["3.*", "latest"], "exclude": ["*-rc*"], "semver": ">=3.18 <4", "newest": 5},
                   "platforms": ["linux/amd64", "linux/arm64", "linux/arm/v7"], "referrers": true}],
        "trigger": {"schedule": "*/30 * * * *", "timeZone": "Europe/Berlin"},
        "options": {"overwrite": false, "replicateDeletion": false, "concurrency": 4, "dryRun": false, "bandwidthLimit": "50Mi"},
    })
}

#[test]
fn cel_rules_accept_good_policies_and_explain_bad_ones() {
    let reg = json!({"registryRef": {"name": "main"}});
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("the design's example", sample(), None),
        (
            "registry to registry on push",
            json!({"source": reg, "destination": reg, "rules": [{"repositories": ["**"]}], "trigger": {"onPush": true}}),
            None,
        ),
        (
            "onPush from an endpoint",
            with(sample(), &["trigger"], json!({"onPush": true})),
            Some("onPush needs source.registryRef"),
        ),
        (
            "no source",
            with(sample(), &["source"], json!({})),
            Some("exactly one of registryRef"),
        ),
        (
            "two destinations",
            with(
                sample(),
                &["destination", "endpoint"],
                json!({"url": "https://b.example.org"}),
            ),
            Some("exactly one of registryRef"),
        ),
        (
            "url with a path",
            with(
                sample(),
                &["source", "endpoint", "url"],
                json!("https://registry.example.org/v2/"),
            ),
            Some("without a path"),
        ),
        (
            "prefix without a slash",
            with(
                sample(),
                &["destination", "repositoryPrefix"],
                json!("mirror"),
            ),
            Some("each followed by '/'"),
        ),
        (
            "rule without repositories",
            with(sample(), &["rules"], json!([{"repositories": []}])),
            Some("at least one repository glob"),
        ),
        (
            "uppercase repository glob",
            with(sample(), &["rules"], json!([{"repositories": ["Team/*"]}])),
            Some("lowercase repository-name characters"),
        ),
        (
            "platform without architecture",
            with(sample(), &["rules", "0", "platforms"], json!(["linux"])),
            Some("os/architecture[/variant]"),
        ),
        (
            "newest 0",
            with(sample(), &["rules", "0", "tags", "newest"], json!(0)),
            Some("newest is at least 1"),
        ),
        (
            "timeZone without schedule",
            with(sample(), &["trigger"], json!({"timeZone": "UTC"})),
            Some("timeZone only applies with a schedule"),
        ),
        (
            "schedule with 4 fields",
            with(sample(), &["trigger", "schedule"], json!("* * * *")),
            Some("cron expression with 5 fields"),
        ),
        (
            "bandwidth in bits",
            with(sample(), &["options", "bandwidthLimit"], json!("100Mbit")),
            Some("bytes per second"),
        ),
    ];
    assert_cases(cases, check);
}

#[test]
fn names_that_cannot_name_jobs_are_refused() {
    assert_cases(
        vec![
            ("ok", "mirror-base", None),
            ("uppercase", "Mirror", Some("starts with a letter")),
            ("too long", &"a".repeat(43), Some("at most 42 characters")),
        ],
        |name| check_named(name, sample()),
    );
}
