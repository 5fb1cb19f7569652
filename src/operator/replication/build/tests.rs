use super::*;
use serde_json::{Value, json};

fn policy(spec: Value) -> ReplicationPolicy {
    serde_json::from_value(json!({
        "apiVersion": "wharf.dev/v1alpha1", "kind": "ReplicationPolicy",
        "metadata": {"name": "mirror", "namespace": "team", "uid": "u-1"},
        "spec": spec,
    }))
    .unwrap()
}

fn registry(name: &str, spec: Value) -> Registry {
    serde_json::from_value(json!({
        "apiVersion": "wharf.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}")},
        "spec": spec,
    }))
    .unwrap()
}

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "wharf.dev/v1alpha1".into(),
        kind: "ReplicationPolicy".into(),
        name: "mirror".into(),
        uid: "u-1".into(),
        controller: Some(true),
        ..OwnerReference::default()
    }
}

fn container(pod: &PodSpec) -> &k8s_openapi::api::core::v1::Container {
    &pod.containers[0]
}

fn arg_after<'a>(pod: &'a PodSpec, flag: &str) -> Option<&'a str> {
    let args = container(pod).args.as_ref().unwrap();
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].as_str())
}

#[test]
fn a_wharf_to_endpoint_run_mounts_the_robot_the_user_secret_and_both_cas() {
    let p = policy(json!({
        "source": {"registryRef": {"name": "ci"}},
        "destination": {"endpoint": {"url": "https://dr.example.org/", "credentialsSecretRef": {"name": "dr-push"},
                                     "caSecretRef": {"name": "dr-ca"}}},
        "rules": [{"repositories": ["team/**"]}],
        "trigger": {"schedule": "*/30 * * * *", "timeZone": "Europe/Berlin"},
    }));
    let ci = registry(
        "ci",
        json!({"storage": {"emptyDir": {}}, "tls": {"selfSigned": {}}}),
    );
    let endpoint = p.spec.destination.endpoint.clone().unwrap();
    let pod = run_pod(
        &p,
        Target::Wharf(&ci),
        Target::Endpoint(&endpoint),
        "wharf.local/wharf:dev",
        &RunKind::Scheduled,
    )
    .unwrap();
    assert_eq!(
        arg_after(&pod, "--source"),
        Some("https://ci.team.svc:5000")
    );
    assert_eq!(
        arg_after(&pod, "--destination"),
        Some("https://dr.example.org")
    );
    assert_eq!(
        arg_after(&pod, "--source-credentials"),
        Some("/etc/wharf/source-credentials")
    );
    assert_eq!(
        arg_after(&pod, "--destination-credentials"),
        Some("/etc/wharf/destination-credentials")
    );
    let volumes = pod.volumes.as_ref().unwrap();
    let secret_of = |volume: &str| {
        volumes
            .iter()
            .find(|v| v.name == volume)
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.clone())
    };
    assert_eq!(
        secret_of("source-credentials").as_deref(),
        Some("mirror-repl-source")
    );
    assert_eq!(
        secret_of("destination-credentials").as_deref(),
        Some("dr-push")
    );
    assert_eq!(secret_of("destination-ca").as_deref(), Some("dr-ca"));
    // The self-signed Registry's CA is the operator's ConfigMap.
    assert!(
        volumes
            .iter()
            .any(|v| v.name == "source-ca" && v.config_map.is_some())
    );
    let env: Vec<_> = container(&pod)
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env, ["WHARF_SOURCE_CA_FILE", "WHARF_DESTINATION_CA_FILE"]);
    // Nothing secret in the arguments or the environment: only paths.
    let text = serde_json::to_string(&pod).unwrap();
    assert!(!text.contains("password"));
    // No Kubernetes token, and a memory limit.
    assert_eq!(pod.automount_service_account_token, Some(false));
    let limits = container(&pod)
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["memory"].0, RUN_MEMORY_LIMIT);

    let cron = cron_job(&p, &owner(), pod.clone()).unwrap();
    let spec = cron.spec.unwrap();
    assert_eq!(spec.schedule, "*/30 * * * *");
    assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(cron.metadata.name.as_deref(), Some("mirror-replicate"));
}

#[test]
fn pushed_and_requested_runs_are_scoped_and_named_once_per_trigger() {
    let p = policy(json!({
        "source": {"registryRef": {"name": "ci"}},
        "destination": {"registryRef": {"name": "prod"}},
        "rules": [{"repositories": ["team/**"]}],
        "trigger": {"onPush": true},
    }));
    let (ci, prod) = (
        registry("ci", json!({"storage": {"emptyDir": {}}})),
        registry("prod", json!({"storage": {"emptyDir": {}}})),
    );
    let pushed = RunKind::Pushed {
        repository: "team/app".into(),
        tag: "v1".into(),
        digest: "sha256:aa".into(),
    };
    let pod = run_pod(&p, Target::Wharf(&ci), Target::Wharf(&prod), "img", &pushed).unwrap();
    assert_eq!(arg_after(&pod, "--repository"), Some("team/app"));
    assert_eq!(arg_after(&pod, "--tag"), Some("v1"));
    assert_eq!(
        arg_after(&pod, "--destination"),
        Some("http://prod.team.svc:5000")
    );
    let job = job(&p, &owner(), pod.clone(), &pushed);
    let again = super::job(&p, &owner(), pod.clone(), &pushed);
    assert_eq!(job.metadata.name, again.metadata.name);
    assert!(
        job.metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("mirror-push-")
    );
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()[PUSHED_ANNOTATION],
        "team/app:v1@sha256:aa"
    );
    assert_eq!(
        job.spec.as_ref().unwrap().ttl_seconds_after_finished,
        Some(PUSH_JOB_TTL)
    );
    assert_eq!(job.metadata.owner_references.unwrap()[0].uid, "u-1");

    let requested = RunKind::Requested {
        requested_at: "2026-12-08T00:00:00Z".into(),
        dry_run: Some(true),
    };
    let pod = run_pod(
        &p,
        Target::Wharf(&ci),
        Target::Wharf(&prod),
        "img",
        &requested,
    )
    .unwrap();
    assert!(
        container(&pod)
            .args
            .as_ref()
            .unwrap()
            .contains(&"--dry-run=true".to_owned())
    );
    assert!(arg_after(&pod, "--repository").is_none());
    // No schedule, no CronJob.
    assert!(cron_job(&p, &owner(), pod).is_none());
}

#[test]
fn the_policy_file_is_the_spec_the_job_accepts() {
    let p = policy(json!({
        "source": {"endpoint": {"url": "https://registry-1.docker.io", "insecure": false}},
        "destination": {"registryRef": {"name": "prod"}, "repositoryPrefix": "mirror/"},
        "rules": [{"repositories": ["library/alpine"], "tags": {"semver": ">=3.19"}, "platforms": ["linux/amd64"]}],
        "options": {"overwrite": true, "bandwidthLimit": "50Mi"},
        "history": {"successful": 1},
    }));
    let map = config_map(&p, &owner());
    let text = &map.data.as_ref().unwrap()["policy.json"];
    let back: crate::crd::replication_policy::ReplicationPolicySpec =
        serde_json::from_str(text).unwrap();
    assert_eq!(back, p.spec);
    assert_eq!(map.metadata.labels.unwrap()[POLICY_LABEL], "mirror");
}

#[test]
fn a_tls_registry_without_a_ca_cannot_be_run_against() {
    let p = policy(json!({
        "source": {"registryRef": {"name": "ci"}},
        "destination": {"registryRef": {"name": "prod"}},
        "rules": [{"repositories": ["**"]}],
    }));
    let ci = registry("ci", json!({"storage": {"emptyDir": {}}}));
    let mut prod = registry("prod", json!({"storage": {"emptyDir": {}}}));
    prod.spec.tls = Some(crate::crd::registry::TlsSpec::default());
    assert_eq!(
        run_pod(
            &p,
            Target::Wharf(&ci),
            Target::Wharf(&prod),
            "img",
            &RunKind::Scheduled
        )
        .unwrap_err(),
        BuildError::NoCa("destination")
    );
}
