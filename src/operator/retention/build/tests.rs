use super::*;
use crate::jobs::retention::{Api, parse_policy};
use serde_json::json;

fn policy(spec: serde_json::Value) -> RetentionPolicy {
    serde_json::from_value(json!({
        "apiVersion": "wharf.dev/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": "ci-cleanup", "namespace": "registry", "uid": "p-uid"},
        "spec": spec,
    }))
    .unwrap()
}

fn registry(tls: serde_json::Value) -> Registry {
    serde_json::from_value(json!({
        "apiVersion": "wharf.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": "main", "namespace": "registry", "uid": "r-uid"},
        "spec": {"storage": {"emptyDir": {}}, "tls": tls,
                 "garbageCollection": {"schedule": "@daily", "minBlobAge": "10m"}},
    }))
    .unwrap()
}

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "wharf.dev/v1alpha1".into(),
        kind: "RetentionPolicy".into(),
        name: "ci-cleanup".into(),
        uid: "p-uid".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn args(pod: &PodSpec) -> Vec<String> {
    pod.containers[0].args.clone().unwrap()
}

fn env_value(pod: &PodSpec, name: &str) -> Option<String> {
    pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| {
            e.value.clone().or_else(|| {
                e.value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .map(|s| format!("secret:{}/{}", s.name, s.key))
            })
        })
}

#[test]
fn the_policy_file_is_what_the_job_understands_with_safe_defaults() {
    let p = policy(
        json!({"registryRef": {"name": "main"}, "repositories": ["ci/**"],
        "keep": [{"tags": ["v*"]}, {"tagRegex": "^main-", "pushedWithin": "7d"}],
        "untagged": {"delete": true, "olderThan": "1h"}, "protect": {"tags": ["latest"]},
        "safety": {"maxDeletionsPerRun": 50}}),
    );
    let text = policy_json(&p);
    let (file, parsed) =
        parse_policy(&text, Api::Wharf).expect("the job accepts what the operator writes");
    assert_eq!(parsed.keep.len(), 2);
    assert_eq!(parsed.protected_tags, ["latest"]);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value["safety"]["dryRun"], true,
        "dry run unless the policy says otherwise"
    );
    assert_eq!(value["protect"]["inUseByCluster"], true);
    assert_eq!(value["safety"]["maxDeletionsPerRun"], 50);
    drop(file);
}

#[test]
fn runs_against_a_wharf_registry_use_the_robot_and_trust_its_ca() {
    let p = policy(
        json!({"registryRef": {"name": "main"}, "schedule": "0 2 * * *", "timeZone": "Europe/Berlin", "suspend": true}),
    );
    let r = registry(json!({"selfSigned": {}}));
    let pod = run_pod(&p, Some(&r), "wharf.local/wharf:dev", None).unwrap();
    let a = args(&pod);
    assert!(a.windows(2).any(|w| w == ["--api", "wharf"]));
    assert!(
        a.windows(2)
            .any(|w| w == ["--in-use", "/etc/wharf/retention/in-use.txt"])
    );
    assert!(a.contains(&"--report-to-log".to_owned()));
    assert!(
        !a.iter().any(|x| x.starts_with("--dry-run")),
        "the policy decides"
    );
    assert_eq!(
        env_value(&pod, "WHARF_REGISTRY_URL").unwrap(),
        "https://main.registry.svc:5000"
    );
    assert_eq!(
        env_value(&pod, "WHARF_USERNAME").unwrap(),
        "secret:ci-cleanup-retention-credential/username"
    );
    assert_eq!(
        env_value(&pod, "WHARF_CA_FILE").unwrap(),
        "/etc/wharf/ca/ca.crt"
    );
    assert_eq!(pod.automount_service_account_token, Some(false));

    let cron = cron_job(&p, &owner(), pod).unwrap();
    let spec = cron.spec.unwrap();
    assert_eq!(cron.metadata.name.as_deref(), Some("ci-cleanup-retention"));
    assert_eq!(spec.schedule, "0 2 * * *");
    assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(spec.suspend, Some(true));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(spec.successful_jobs_history_limit, Some(3));
    let job_labels = spec.job_template.metadata.unwrap().labels.unwrap();
    assert_eq!(
        job_labels.get(POLICY_LABEL).map(String::as_str),
        Some("ci-cleanup")
    );
}

#[test]
fn on_demand_runs_can_override_the_dry_run_and_are_named_by_the_request() {
    let p = policy(json!({"registryRef": {"name": "main"}}));
    let r = registry(json!(null));
    let pod = run_pod(&p, Some(&r), "img", Some(false)).unwrap();
    assert!(args(&pod).contains(&"--dry-run=false".to_owned()));
    assert!(
        cron_job(&p, &owner(), pod.clone()).is_none(),
        "no schedule, no CronJob"
    );
    let a = requested_job(&p, &owner(), pod.clone(), "2026-11-23T10:00:00Z");
    let b = requested_job(&p, &owner(), pod, "2026-11-23T11:00:00Z");
    assert_ne!(a.metadata.name, b.metadata.name);
    assert_eq!(a.metadata.owner_references.unwrap()[0].uid, "p-uid");
    assert_eq!(a.spec.unwrap().ttl_seconds_after_finished, Some(86_400));
}

#[test]
fn endpoint_runs_speak_plain_oci_with_the_users_secrets() {
    let p = policy(
        json!({"endpoint": {"url": "https://r.example.org/", "credentialsSecretRef": {"name": "upstream"}, "caSecretRef": {"name": "upstream-ca"}},
        "protect": {"inUseByCluster": false}}),
    );
    let pod = run_pod(&p, None, "img", None).unwrap();
    let a = args(&pod);
    assert!(a.windows(2).any(|w| w == ["--api", "oci"]));
    assert!(!a.contains(&"--in-use".to_owned()));
    assert_eq!(
        env_value(&pod, "WHARF_REGISTRY_URL").unwrap(),
        "https://r.example.org"
    );
    assert_eq!(
        env_value(&pod, "WHARF_PASSWORD").unwrap(),
        "secret:upstream/password"
    );
    assert_eq!(
        env_value(&pod, "WHARF_CA_FILE").unwrap(),
        "/etc/wharf/endpoint-ca/ca.crt"
    );
    let anonymous = policy(json!({"endpoint": {"url": "http://r:5000"}}));
    let pod = run_pod(&anonymous, None, "img", None).unwrap();
    assert_eq!(env_value(&pod, "WHARF_USERNAME").unwrap(), "");
}

#[test]
fn garbage_collection_follows_a_run_with_the_registrys_settings() {
    let p = policy(json!({"registryRef": {"name": "main"}, "runGarbageCollection": true}));
    let r = registry(json!(null));
    let job = gc_job(&p, &owner(), &r, "img", "ci-cleanup-retention-29000000").unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert!(
        args(&pod)
            .windows(2)
            .any(|w| w == ["--grace-period", "10m"])
    );
    assert_eq!(
        env_value(&pod, "WHARF_USERNAME").unwrap(),
        "secret:main-admin/username"
    );
    assert_eq!(
        job.metadata
            .labels
            .unwrap()
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some(GC_COMPONENT)
    );
}

#[test]
fn the_config_map_carries_the_policy_and_the_in_use_list() {
    let p = policy(json!({"registryRef": {"name": "main"}}));
    let cm = config_map(&p, &owner(), "reg/app:v1\n");
    let data = cm.data.unwrap();
    assert_eq!(data["in-use.txt"], "reg/app:v1\n");
    assert!(data["policy.json"].contains("\"dryRun\": true"));
    assert_eq!(cm.metadata.name.as_deref(), Some("ci-cleanup-retention"));
}
