//! Table tests of each rule, and a randomized property check: nothing kept, protected or in use
//! is ever deleted, whatever the listing and policy.

use super::*;
use std::time::Duration;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn m(digest: &str, tags: &[&str], days_ago: u64, pulled_days_ago: Option<u64>) -> Manifest {
    Manifest {
        digest: format!("sha256:{digest}"),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        pushed_at: NOW - days_ago * DAY,
        last_pulled_at: pulled_days_ago.map(|d| NOW - d * DAY),
        subject: None,
        children: Vec::new(),
    }
}

fn rule(f: impl FnOnce(&mut KeepRule)) -> KeepRule {
    let mut r = KeepRule::default();
    f(&mut r);
    r
}

fn deleted_tags(listing: &[Manifest], d: &Decision) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = d.delete_tags.iter().cloned().collect();
    for m in listing
        .iter()
        .filter(|m| d.delete_manifests.contains(&m.digest))
    {
        out.extend(m.tags.iter().cloned());
    }
    out
}

fn history() -> Vec<Manifest> {
    vec![
        m("r1", &["v1.0.0"], 300, None),
        m("r2", &["v1.1.0"], 200, Some(1)),
        m("r3", &["v1.2.0", "stable"], 100, None),
        m("r4", &["v2.0.0", "latest"], 10, Some(0)),
        m("b1", &["main-1111111"], 20, None),
        m("b2", &["main-2222222"], 5, None),
        m("b3", &["main-3333333"], 1, None),
        m("p1", &["pr-17"], 40, None),
        m("p2", &["pr-18"], 2, Some(3)),
        m("u1", &[], 30, None),
        m("u2", &[], 0, None),
    ]
}

#[test]
fn each_rule_keeps_what_it_says() {
    let listing = history();
    let none = HashSet::new();
    let cases: Vec<(&str, Policy, &[&str])> = vec![
        (
            "tag glob",
            Policy {
                keep: vec![rule(|r| r.tags = vec!["v*.*.*".into()])],
                ..Policy::default()
            },
            &[
                "main-1111111",
                "main-2222222",
                "main-3333333",
                "pr-17",
                "pr-18",
                "stable",
                "latest",
            ],
        ),
        (
            "most recently pushed 2",
            Policy {
                keep: vec![rule(|r| r.most_recently_pushed = Some(2))],
                ..Policy::default()
            },
            &[
                "main-1111111",
                "main-2222222",
                "pr-17",
                "stable",
                "v1.0.0",
                "v1.1.0",
                "v1.2.0",
                "v2.0.0",
                "latest",
            ],
        ),
        (
            "pushed within 7d, main builds only",
            Policy {
                keep: vec![rule(|r| {
                    r.tag_regex = Some("^main-[0-9a-f]{7}$".into());
                    r.pushed_within = Some(Duration::from_secs(7 * DAY))
                })],
                ..Policy::default()
            },
            &[
                "main-1111111",
                "pr-17",
                "pr-18",
                "stable",
                "v1.0.0",
                "v1.1.0",
                "v1.2.0",
                "v2.0.0",
                "latest",
            ],
        ),
        (
            "pulled within 2d",
            Policy {
                keep: vec![rule(|r| {
                    r.pulled_within = Some(Duration::from_secs(2 * DAY))
                })],
                ..Policy::default()
            },
            &[
                "main-1111111",
                "main-2222222",
                "main-3333333",
                "pr-17",
                "pr-18",
                "stable",
                "v1.0.0",
                "v1.2.0",
            ],
        ),
        (
            "semver newest 2 in 1.x",
            Policy {
                keep: vec![rule(|r| {
                    r.semver = Some(">=1.0.0 <2".into());
                    r.newest = Some(2)
                })],
                ..Policy::default()
            },
            // `stable` shares r3 with the kept v1.2.0: the tag goes, the manifest stays.
            &[
                "main-1111111",
                "main-2222222",
                "main-3333333",
                "pr-17",
                "pr-18",
                "v1.0.0",
                "v2.0.0",
                "latest",
                "stable",
            ],
        ),
        (
            "protected tags",
            Policy {
                protected_tags: vec!["latest".into(), "stable".into()],
                ..Policy::default()
            },
            // Protection is per tag: v1.2.0 and v2.0.0 go as tags, their manifests stay.
            &[
                "main-1111111",
                "main-2222222",
                "main-3333333",
                "pr-17",
                "pr-18",
                "v1.0.0",
                "v1.1.0",
                "v1.2.0",
                "v2.0.0",
            ],
        ),
        (
            "minimum tags",
            Policy {
                min_tags_per_repository: 3,
                ..Policy::default()
            },
            // Nothing keeps anything; the 3 most recently pushed stay (main-3333333, pr-18, main-2222222).
            &[
                "latest",
                "main-1111111",
                "pr-17",
                "stable",
                "v1.0.0",
                "v1.1.0",
                "v1.2.0",
                "v2.0.0",
            ],
        ),
    ];
    for (what, policy, want) in cases {
        let d = evaluate(&listing, &policy, &none, NOW).unwrap();
        let got = deleted_tags(&listing, &d);
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{what}");
        assert_eq!(d.tags_evaluated, 11, "{what}");
    }
}

#[test]
fn manifests_go_only_when_all_their_tags_go_and_untagged_after_their_age() {
    let listing = history();
    let policy = Policy {
        keep: vec![rule(|r| r.tags = vec!["stable".into()])],
        untagged_older_than: Some(Duration::from_secs(7 * DAY)),
        ..Policy::default()
    };
    let d = evaluate(&listing, &policy, &HashSet::new(), NOW).unwrap();
    // r3 keeps `stable`, loses `v1.2.0` as a tag only.
    assert!(d.delete_tags.contains(&"v1.2.0".to_string()));
    assert!(!d.delete_manifests.contains(&"sha256:r3".to_string()));
    assert!(
        d.delete_manifests.contains(&"sha256:u1".to_string()),
        "old untagged"
    );
    assert!(
        !d.delete_manifests.contains(&"sha256:u2".to_string()),
        "young untagged"
    );
    assert_eq!(d.kept["stable"], "kept by a rule");
}

#[test]
fn in_use_digests_index_children_and_referrers() {
    let mut listing = vec![
        m("index", &["v1"], 50, None),
        m("amd64", &[], 50, None),
        m("arm64", &[], 50, None),
        m("old", &["v0"], 60, None),
        m("sig-old", &[], 60, None),
        m("sig-index", &[], 50, None),
        m("running", &["v-1"], 70, None),
    ];
    listing[0].children = vec!["sha256:amd64".into(), "sha256:arm64".into()];
    listing[4].subject = Some("sha256:old".into());
    listing[5].subject = Some("sha256:index".into());
    let policy = Policy {
        keep: vec![rule(|r| r.tags = vec!["v1".into()])],
        untagged_older_than: Some(Duration::ZERO),
        ..Policy::default()
    };
    let in_use: HashSet<String> = ["sha256:running".to_string()].into();
    let d = evaluate(&listing, &policy, &in_use, NOW).unwrap();
    assert_eq!(
        d.delete_manifests,
        ["sha256:old", "sha256:sig-old"],
        "children, its referrer and the running digest stay"
    );
    assert_eq!(d.kept["v-1"], "in use in the cluster");
    let keep_referrers = Policy {
        keep_referrers: true,
        ..policy
    };
    let d = evaluate(&listing, &keep_referrers, &in_use, NOW).unwrap();
    assert_eq!(d.delete_manifests, ["sha256:old"]);
}

#[test]
fn bad_patterns_are_errors() {
    let bad_regex = Policy {
        keep: vec![rule(|r| r.tag_regex = Some("(".into()))],
        ..Policy::default()
    };
    assert!(matches!(
        evaluate(&[], &bad_regex, &HashSet::new(), NOW),
        Err(EvalError::Regex(_))
    ));
    let bad_range = Policy {
        keep: vec![rule(|r| r.semver = Some("banana".into()))],
        ..Policy::default()
    };
    assert!(matches!(
        evaluate(&[], &bad_range, &HashSet::new(), NOW),
        Err(EvalError::Semver(_))
    ));
}

/// xorshift: deterministic randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn property_nothing_kept_protected_or_in_use_is_ever_deleted() {
    let tag_pool = [
        "v1.0.0",
        "v1.2.3",
        "v2.0.0",
        "latest",
        "stable",
        "main-abc1234",
        "pr-1",
        "pr-2",
        "nightly",
        "v0.9.0-rc.1",
    ];
    for seed in 1..=500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let count = 1 + rng.below(12) as usize;
        let mut used = HashSet::new();
        let mut listing: Vec<Manifest> = (0..count)
            .map(|i| {
                let tags: Vec<&str> = (0..rng.below(3))
                    .map(|_| tag_pool[rng.below(tag_pool.len() as u64) as usize])
                    .filter(|t| used.insert(*t))
                    .collect();
                let pulled = (rng.below(2) == 0).then(|| rng.below(60));
                m(&format!("d{i}"), &tags, rng.below(90), pulled)
            })
            .collect();
        for manifest in listing.iter_mut() {
            match rng.below(6) {
                0 => manifest.subject = Some(format!("sha256:d{}", rng.below(count as u64))),
                1 => manifest.children = vec![format!("sha256:d{}", rng.below(count as u64))],
                _ => {}
            }
        }
        let keep: Vec<KeepRule> = (0..rng.below(3))
            .map(|_| {
                rule(|r| match rng.below(5) {
                    0 => r.tags = vec!["v*".into()],
                    1 => r.most_recently_pushed = Some(rng.below(4) as usize),
                    2 => r.pushed_within = Some(Duration::from_secs(rng.below(60) * DAY)),
                    3 => {
                        r.semver = Some(">=1.0.0".into());
                        r.newest = Some(1 + rng.below(2) as usize)
                    }
                    _ => r.pulled_within = Some(Duration::from_secs(rng.below(30) * DAY)),
                })
            })
            .collect();
        let policy = Policy {
            keep,
            untagged_older_than: (rng.below(2) == 0)
                .then(|| Duration::from_secs(rng.below(30) * DAY)),
            protected_tags: if rng.below(2) == 0 {
                vec!["latest".into()]
            } else {
                vec![]
            },
            min_tags_per_repository: rng.below(3) as usize,
            keep_referrers: rng.below(2) == 0,
        };
        let in_use: HashSet<String> = listing
            .iter()
            .filter(|_| rng.below(8) == 0)
            .map(|m| m.digest.clone())
            .collect();
        let d = evaluate(&listing, &policy, &in_use, NOW).unwrap();
        let gone = deleted_tags(&listing, &d);
        // The report lists exactly what the run deletes, each tag with its own digest.
        let listed: BTreeSet<String> = d.tags.iter().map(|c| c.tag.clone()).collect();
        assert_eq!(
            listed, gone,
            "seed {seed}: the report differs from the deletions"
        );
        assert_eq!(
            listed.len(),
            d.tags.len(),
            "seed {seed}: a tag listed twice"
        );
        for c in &d.tags {
            let m = listing.iter().find(|m| m.tags.contains(&c.tag)).unwrap();
            assert_eq!(c.digest, m.digest, "seed {seed}");
            assert!(!c.reason.is_empty());
        }
        let manifests: Vec<&String> = d.manifests.iter().map(|c| &c.digest).collect();
        assert_eq!(
            manifests,
            d.delete_manifests.iter().collect::<Vec<_>>(),
            "seed {seed}"
        );
        for tag in &gone {
            assert!(
                !d.kept.contains_key(tag),
                "seed {seed}: kept tag {tag} deleted"
            );
            assert!(
                !policy.protected_tags.iter().any(|p| p == tag),
                "seed {seed}: protected tag {tag} deleted"
            );
        }
        for digest in &d.delete_manifests {
            assert!(
                !in_use.contains(digest),
                "seed {seed}: digest in use deleted"
            );
            let m = listing.iter().find(|m| &m.digest == digest).unwrap();
            assert!(
                m.tags.iter().all(|t| !d.kept.contains_key(t)),
                "seed {seed}: manifest with a kept tag deleted"
            );
            for parent in listing
                .iter()
                .filter(|p| !d.delete_manifests.contains(&p.digest))
            {
                assert!(
                    !parent.children.contains(digest),
                    "seed {seed}: child of a staying index deleted"
                );
            }
        }
        let remaining = listing
            .iter()
            .flat_map(|m| &m.tags)
            .filter(|t| !gone.contains(*t))
            .count();
        let total = listing.iter().map(|m| m.tags.len()).sum::<usize>();
        assert!(
            remaining >= policy.min_tags_per_repository.min(total),
            "seed {seed}: below the minimum"
        );
    }
}

#[test]
fn the_report_names_every_tag_that_goes_with_its_digest_and_the_rule_that_let_it_go() {
    // Twelve tags, five kept: the candidates are the other seven, not zero.
    let listing: Vec<Manifest> = (0..12)
        .map(|n| {
            m(
                &format!("d{n:02}"),
                &[&format!("build-{n:02}")],
                12 - n,
                None,
            )
        })
        .collect();
    let policy = Policy {
        keep: vec![rule(|r| {
            r.tags = vec!["build-*".into()];
            r.most_recently_pushed = Some(5);
        })],
        ..Policy::default()
    };
    let d = evaluate(&listing, &policy, &HashSet::new(), NOW).unwrap();
    assert_eq!(d.tags.len(), 7);
    assert_eq!(d.manifests.len(), 7);
    assert_eq!(
        d.delete_tags,
        Vec::<String>::new(),
        "they go with their manifests"
    );
    assert_eq!(d.tags[0].tag, "build-00");
    assert_eq!(d.tags[0].digest, "sha256:d00");
    assert_eq!(
        d.tags[0].reason,
        "keep[0] selects it, but it is not among the 5 most recently pushed"
    );
    assert_eq!(d.manifests[0].tags, ["build-00"]);
    assert_eq!(d.manifests[0].reason, "none of its tags is kept");

    let reasons = |policy: &Policy| -> BTreeMap<String, String> {
        evaluate(&history(), policy, &HashSet::new(), NOW)
            .unwrap()
            .tags
            .into_iter()
            .map(|c| (c.tag, c.reason))
            .collect()
    };
    let policy = Policy {
        keep: vec![
            rule(|r| r.tags = vec!["v*".into()]),
            rule(|r| {
                r.tag_regex = Some("^main-".into());
                r.pushed_within = Some(Duration::from_secs(7 * DAY));
            }),
            rule(|r| {
                r.tags = vec!["pr-*".into()];
                r.pulled_within = Some(Duration::from_secs(DAY));
            }),
        ],
        untagged_older_than: Some(Duration::from_secs(DAY)),
        ..Policy::default()
    };
    let r = reasons(&policy);
    assert_eq!(
        r["main-1111111"],
        "keep[1] selects it, but it was pushed more than 7d ago"
    );
    assert_eq!(
        r["pr-18"],
        "keep[2] selects it, but it was not pulled in the last 1d"
    );
    assert_eq!(r["stable"], "no keep rule selects it");
    assert!(!r.contains_key("v1.0.0") && !r.contains_key("main-3333333"));
    let d = evaluate(&history(), &policy, &HashSet::new(), NOW).unwrap();
    let u1 = d
        .manifests
        .iter()
        .find(|c| c.digest == "sha256:u1")
        .unwrap();
    assert_eq!(u1.reason, "untagged for more than 1d");
    assert!(r.len() == d.tags.len());
    assert_eq!(
        reasons(&Policy::default())["v1.0.0"],
        "the policy has no keep rules"
    );
}
