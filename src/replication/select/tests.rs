use super::*;
use crate::crd::replication_policy::TagFilter;

fn rule(repositories: &[&str], tags: TagFilter) -> ReplicationRule {
    ReplicationRule {
        repositories: repositories.iter().map(|s| s.to_string()).collect(),
        tags: Some(tags),
        ..ReplicationRule::default()
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn selected_tags(rules: &Rules, repo: &str, tags: &[&str]) -> Vec<String> {
    rules
        .select(repo, &strings(tags))
        .into_iter()
        .map(|s| s.tag)
        .collect()
}

#[test]
fn the_design_example_selects_versions_in_range_newest_first() {
    let rules = Rules::compile(&[rule(
        &["library/alpine", "team/**"],
        TagFilter {
            include: Some(strings(&["3.*", "latest"])),
            exclude: Some(strings(&["*-rc*"])),
            semver: Some(">=3.18 <4".into()),
            newest: Some(2),
            ..TagFilter::default()
        },
    )])
    .unwrap();
    let tags = [
        "3.17", "3.18", "3.19", "3.20", "3.21-rc1", "latest", "edge", "4.0",
    ];
    // latest is no version, so semver drops it; 3.21-rc1 is excluded; 3.20 and 3.19 are the
    // two highest left.
    assert_eq!(
        selected_tags(&rules, "library/alpine", &tags),
        ["3.19", "3.20"]
    );
    assert_eq!(selected_tags(&rules, "team/a/b", &tags), ["3.19", "3.20"]);
    assert!(selected_tags(&rules, "library/busybox", &tags).is_empty());
    assert!(rules.covers("team/x") && !rules.covers("team") && !rules.covers("other/x"));
}

#[test]
fn rules_are_ored_and_their_platforms_join() {
    let mut amd = rule(
        &["app"],
        TagFilter {
            include: Some(strings(&["v1*"])),
            ..TagFilter::default()
        },
    );
    amd.platforms = Some(strings(&["linux/amd64"]));
    let mut arm = rule(
        &["app"],
        TagFilter {
            include: Some(strings(&["v1.0"])),
            ..TagFilter::default()
        },
    );
    arm.platforms = Some(strings(&["linux/arm64/v8"]));
    arm.referrers = Some(false);
    let mut whole = rule(
        &["app"],
        TagFilter {
            regex: Some("^v2".into()),
            ..TagFilter::default()
        },
    );
    whole.referrers = Some(false);
    let rules = Rules::compile(&[amd, arm, whole.clone()]).unwrap();
    let got = rules.select("app", &strings(&["v1.0", "v1.1", "v2.0", "v3.0"]));
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let arm64 = Platform::parse("linux/arm64/v8").unwrap();
    assert_eq!(
        got,
        vec![
            Selected {
                tag: "v1.0".into(),
                platforms: Some(vec![amd64.clone(), arm64]),
                referrers: true
            },
            Selected {
                tag: "v1.1".into(),
                platforms: Some(vec![amd64.clone()]),
                referrers: true
            },
            Selected {
                tag: "v2.0".into(),
                platforms: None,
                referrers: false
            },
        ]
    );
    // A rule without platforms selecting the same tag wants the whole index.
    let mut all = whole;
    all.tags = None;
    let mut amd_only = rule(&["app"], TagFilter::default());
    amd_only.platforms = Some(strings(&["linux/amd64"]));
    let rules = Rules::compile(&[amd_only, all]).unwrap();
    assert_eq!(rules.select("app", &strings(&["v1.0"]))[0].platforms, None);
}

#[test]
fn referrers_tags_travel_with_their_subjects_not_as_tags() {
    let hex = "ab".repeat(32);
    let rules = Rules::compile(&[rule(&["**"], TagFilter::default())]).unwrap();
    let tags = [
        format!("sha256-{hex}"),
        format!("sha256-{hex}.sig"),
        format!("sha256-{hex}.att"),
        "v1".into(),
        "sha256-short".into(),
    ];
    let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    assert_eq!(
        selected_tags(&rules, "a", &tag_refs),
        ["sha256-short", "v1"]
    );
    assert_eq!(
        subject_of_tag(&format!("sha256-{hex}.sig")),
        Some(format!("sha256:{hex}"))
    );
    assert_eq!(subject_of_tag(&format!("sha256-{hex}.other")), None);
}

#[test]
fn bad_filters_are_reported_with_the_rule_they_are_in() {
    let bad_regex = rule(
        &["a"],
        TagFilter {
            regex: Some("(".into()),
            ..TagFilter::default()
        },
    );
    let err = Rules::compile(&[rule(&["a"], TagFilter::default()), bad_regex])
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .starts_with("rules[1].tags.regex \"(\" is not a regular expression"),
        "{err}"
    );
    let bad_range = rule(
        &["a"],
        TagFilter {
            semver: Some("banana".into()),
            ..TagFilter::default()
        },
    );
    assert!(matches!(
        Rules::compile(&[bad_range]),
        Err(SelectError::Semver { rule: 0, .. })
    ));
    let mut bad_platform = rule(&["a"], TagFilter::default());
    bad_platform.platforms = Some(strings(&["linux"]));
    assert!(matches!(
        Rules::compile(&[bad_platform]),
        Err(SelectError::Platform { .. })
    ));
}

#[test]
fn platforms_without_a_variant_cover_every_variant() {
    let arm = Platform::parse("linux/arm").unwrap();
    assert!(
        arm.covers(&serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v7"}))
    );
    let v6 = Platform::parse("linux/arm/v6").unwrap();
    assert!(
        !v6.covers(&serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v7"}))
    );
    assert!(!arm.covers(&serde_json::json!({"os": "windows", "architecture": "arm"})));
    assert_eq!(v6.to_string(), "linux/arm/v6");
    assert!(Platform::parse("linux/arm/").is_none() && Platform::parse("a/b/c/d").is_none());
}

#[test]
fn literal_repositories_let_a_closed_catalog_be_skipped() {
    let rules = Rules::compile(&[rule(&["b", "a", "team/*"], TagFilter::default())]).unwrap();
    assert_eq!(rules.literal_repositories(), ["a", "b"]);
    assert!(!rules.all_literal());
    assert!(
        Rules::compile(&[rule(&["a"], TagFilter::default())])
            .unwrap()
            .all_literal()
    );
}
