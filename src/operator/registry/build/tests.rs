use super::*;
use crate::operator::registry::credentials::admin_credentials;
use crate::operator::registry::tls::self_signed;
use serde_json::{Value, json};

fn registry(spec: Value) -> Registry {
    serde_json::from_value(json!({
        "apiVersion": "wharf.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": "main", "namespace": "team", "uid": "0b5c0e4e-4c1f-4bd0-9f43-5d1b9f7b1a11"},
        "spec": spec,
    }))
    .unwrap()
}

fn build_for(registry: &Registry) -> Children {
    let admin = admin_credentials(None, None).unwrap();
    let tls = registry
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.self_signed.as_ref())
        .map(|_| {
            self_signed(
                "team",
                "main",
                &dns_names(registry, None),
                None,
                None,
                1_800_000_000,
            )
            .unwrap()
        });
    build(&BuildInputs {
        registry,
        default_image: "wharf.local/wharf:dev",
        events_url: None,
        admin: &admin,
        self_signed: tls.as_ref(),
        cluster_ip: None,
    })
    .unwrap()
}

fn pod_spec(children: &Children) -> &PodSpec {
    match &children.workload {
        Workload::Deployment(d) => d.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
        Workload::StatefulSet(s) => s.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
    }
}

fn template_annotations(children: &Children) -> BTreeMap<String, String> {
    let template = match &children.workload {
        Workload::Deployment(d) => &d.spec.as_ref().unwrap().template,
        Workload::StatefulSet(s) => &s.spec.as_ref().unwrap().template,
    };
    template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap()
}

fn all_metadata(c: &Children) -> Vec<&ObjectMeta> {
    let mut all = vec![
        &c.service_account.metadata,
        &c.config.metadata,
        &c.admin_secret.metadata,
        &c.htpasswd_secret.metadata,
        &c.service.metadata,
        match &c.workload {
            Workload::Deployment(d) => &d.metadata,
            Workload::StatefulSet(s) => &s.metadata,
        },
    ];
    all.extend(c.ca_secret.as_ref().map(|s| &s.metadata));
    all.extend(c.ca_config_map.as_ref().map(|s| &s.metadata));
    all.extend(c.tls_secret.as_ref().map(|s| &s.metadata));
    all.extend(c.ingress.as_ref().map(|s| &s.metadata));
    all.extend(c.pod_disruption_budget.as_ref().map(|s| &s.metadata));
    all
}

#[test]
fn an_empty_dir_registry_is_a_hardened_deployment_behind_a_service() {
    let r = registry(json!({"storage": {"emptyDir": {"sizeLimit": "2Gi"}}}));
    let c = build_for(&r);
    let Workload::Deployment(d) = &c.workload else {
        panic!("emptyDir runs as a Deployment")
    };
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    let strategy = spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));

    let pod = pod_spec(&c);
    let sc = pod.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(RUN_AS));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.automount_service_account_token, Some(false));
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("wharf.local/wharf:dev"));
    let csc = container.security_context.as_ref().unwrap();
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(
        csc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".into()])
    );
    let readiness = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    assert_eq!(readiness.scheme.as_deref(), Some("HTTP"));
    let liveness = container
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    let data = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "data")
        .unwrap();
    assert_eq!(
        data.empty_dir.as_ref().unwrap().size_limit,
        Some(Quantity("2Gi".into()))
    );

    let svc = c.service.spec.as_ref().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(svc.ports.as_ref().unwrap()[0].port, 5000);
    assert_eq!(svc.selector, Some(selector_labels("main")));
    assert!(c.ingress.is_none() && c.pod_disruption_budget.is_none() && c.tls_secret.is_none());
    assert_eq!(endpoint(&r), "main.team.svc:5000");
}

#[test]
fn every_child_is_labelled_namespaced_and_controlled_by_the_registry() {
    let r = registry(json!({
        "storage": {"persistentVolume": {"size": "1Gi"}},
        "tls": {"selfSigned": {}},
        "ingress": {"host": "registry.example.com"},
    }));
    let c = build_for(&r);
    let all = all_metadata(&c);
    assert_eq!(all.len(), 10);
    for m in all {
        assert_eq!(m.namespace.as_deref(), Some("team"), "{:?}", m.name);
        let owners = m.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Registry");
        assert_eq!(owners[0].controller, Some(true));
        let labels = m.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGED_BY);
        assert_eq!(labels["app.kubernetes.io/instance"], "main");
    }
}

#[test]
fn a_persistent_volume_registry_is_a_stateful_set_with_a_claim_and_the_chosen_deletion_policy() {
    for (policy, want) in [
        (None, "Retain"),
        (Some("Retain"), "Retain"),
        (Some("Delete"), "Delete"),
    ] {
        let mut pv = json!({"size": "10Gi", "storageClassName": "fast"});
        if let Some(p) = policy {
            pv["deletionPolicy"] = json!(p);
        }
        let c = build_for(&registry(json!({"storage": {"persistentVolume": pv}})));
        let Workload::StatefulSet(s) = &c.workload else {
            panic!("persistentVolume runs as a StatefulSet")
        };
        let spec = s.spec.as_ref().unwrap();
        let retention = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some(want));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("10Gi".into())
        );
        assert_eq!(spec.service_name.as_deref(), Some("main"));
        // The claim provides `data`; the pod must not also declare it.
        assert!(
            !pod_spec(&c)
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "data")
        );
        assert_eq!(
            pod_spec(&c).security_context.as_ref().unwrap().fs_group,
            Some(RUN_AS)
        );
    }
}

#[test]
fn the_generated_config_is_one_the_registry_accepts() {
    let r = registry(json!({
        "storage": {"emptyDir": {}},
        "auth": {"anonymousPull": true, "htpasswdSecretRef": {"name": "team-users"}},
        "tls": {"secretRef": {"name": "team-cert"}},
    }));
    let text = registry_config(&r, None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &text).unwrap();
    let config = crate::registry::config::Config::resolve(&crate::registry::config::RegistryArgs {
        config: Some(path),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.listen.port(), 5000);
    assert!(config.anonymous_pull);
    let token = config
        .token
        .expect("operator-managed registries serve token auth");
    assert_eq!(
        token.service,
        format!("{}.{}", r.name_any(), r.namespace().unwrap())
    );
    assert_eq!(
        config.htpasswd,
        vec![
            std::path::PathBuf::from("/etc/wharf/auth/admin/htpasswd"),
            std::path::PathBuf::from("/etc/wharf/auth/users/htpasswd"),
        ]
    );
    assert_eq!(
        config.tls,
        Some((
            "/etc/wharf/tls/tls.crt".into(),
            "/etc/wharf/tls/tls.key".into()
        ))
    );
    assert_eq!(
        config.storage_root,
        std::path::PathBuf::from("/var/lib/wharf")
    );

    let c = build_for(&r);
    let pod = pod_spec(&c);
    let secret_of = |volume: &str| {
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == volume)
            .unwrap()
            .secret
            .as_ref()
            .unwrap()
            .secret_name
            .clone()
            .unwrap()
    };
    assert_eq!(secret_of("users-htpasswd"), "team-users");
    assert_eq!(secret_of("tls"), "team-cert");
    assert_eq!(secret_of("admin-htpasswd"), "main-htpasswd");
    let probe = pod.containers[0]
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.scheme.as_deref(), Some("HTTPS"));
    assert!(
        c.ca_secret.is_none(),
        "a user's certificate needs no operator CA"
    );
}

#[test]
fn self_signed_tls_publishes_the_ca_and_mounts_the_operators_certificate() {
    let r = registry(json!({"storage": {"emptyDir": {}}, "tls": {"selfSigned": {}}}));
    let c = build_for(&r);
    let tls = c.tls_secret.as_ref().unwrap();
    assert_eq!(tls.metadata.name.as_deref(), Some("main-tls"));
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca_pem = &c.ca_config_map.as_ref().unwrap().data.as_ref().unwrap()["ca.crt"];
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(&tls.data.as_ref().unwrap()["ca.crt"].0, ca_pem.as_bytes());
    assert!(
        !c.ca_config_map
            .as_ref()
            .unwrap()
            .data
            .as_ref()
            .unwrap()
            .values()
            .any(|v| v.contains("PRIVATE KEY")),
        "the CA's key stays in the Secret"
    );
    let names = tls.metadata.annotations.as_ref().unwrap()[DNS_NAMES_ANNOTATION].clone();
    assert!(names.contains("main.team.svc") && names.contains("localhost"));
}

#[test]
fn ingress_node_port_and_service_annotations_follow_the_spec() {
    let r = registry(json!({
        "storage": {"emptyDir": {}},
        "service": {"type": "NodePort", "port": 443, "nodePort": 30443, "annotations": {"a": "b"}},
        "ingress": {"className": "nginx", "host": "registry.example.com", "tlsSecretRef": {"name": "web"},
                    "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"}},
    }));
    let c = build_for(&r);
    let svc = &c.service;
    let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!((port.port, port.node_port), (443, Some(30443)));
    assert_eq!(
        svc.spec.as_ref().unwrap().type_.as_deref(),
        Some("NodePort")
    );
    assert_eq!(svc.metadata.annotations.as_ref().unwrap()["a"], "b");
    let ingress = c.ingress.as_ref().unwrap();
    let spec = ingress.spec.as_ref().unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(
        spec.rules.as_ref().unwrap()[0].host.as_deref(),
        Some("registry.example.com")
    );
    assert_eq!(
        spec.tls.as_ref().unwrap()[0].secret_name.as_deref(),
        Some("web")
    );
    let backend = &spec.rules.as_ref().unwrap()[0].http.as_ref().unwrap().paths[0].backend;
    assert_eq!(backend.service.as_ref().unwrap().name, "main");
    assert_eq!(endpoint(&r), "main.team.svc:443");
}

#[test]
fn a_pod_disruption_budget_only_for_several_replicas() {
    let mut r = registry(json!({"storage": {"emptyDir": {}}}));
    let owner = r.controller_owner_ref(&()).unwrap();
    assert!(pod_disruption_budget(&r, &owner).is_none());
    r.spec.replicas = Some(3);
    let pdb = pod_disruption_budget(&r, &owner).unwrap();
    assert_eq!(
        pdb.spec.as_ref().unwrap().max_unavailable,
        Some(IntOrString::Int(1))
    );
}

#[test]
fn s3_storage_runs_stateless_replicas_with_credentials_from_the_secret() {
    let r = registry(json!({"replicas": 3, "storage": {"s3": {
        "bucket": "oci", "prefix": "team", "endpoint": "http://s3.storage:9000", "forcePathStyle": true,
        "credentialsSecretRef": {"name": "s3-keys"}, "caSecretRef": {"name": "s3-ca"}}}}));
    let admin = admin_credentials(None, None).unwrap();
    let built = build(&BuildInputs {
        registry: &r,
        default_image: "x",
        events_url: None,
        admin: &admin,
        self_signed: None,
        cluster_ip: None,
    })
    .unwrap();
    let config = &built.config.data.as_ref().unwrap()["config.yaml"];
    for part in [
        "bucket: oci",
        "prefix: team",
        "endpoint: http://s3.storage:9000",
        "pathStyle: true",
        "caBundle: /etc/wharf/s3-ca/ca.crt",
    ] {
        assert!(config.contains(part), "{part} missing from\n{config}");
    }
    assert!(
        !config.contains("s3-keys") && !config.contains("filesystem"),
        "{config}"
    );
    let Workload::Deployment(deployment) = &built.workload else {
        panic!("S3 storage runs as a Deployment");
    };
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let env = container.env.as_ref().unwrap();
    let from_secret: Vec<(&str, &str, &str)> = env
        .iter()
        .map(|e| {
            let key = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            (e.name.as_str(), key.name.as_str(), key.key.as_str())
        })
        .collect();
    assert_eq!(
        from_secret,
        [
            ("AWS_ACCESS_KEY_ID", "s3-keys", "accessKeyId"),
            ("AWS_SECRET_ACCESS_KEY", "s3-keys", "secretAccessKey")
        ]
    );
    assert!(
        env.iter().all(|e| e.value.is_none()),
        "no credential in the pod spec itself"
    );
    let volumes: Vec<&str> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        volumes.contains(&"s3-ca") && !volumes.contains(&"data"),
        "{volumes:?}"
    );
    let spread = pod.topology_spread_constraints.as_ref().unwrap();
    assert_eq!(spread.len(), 2);
    assert!(
        spread
            .iter()
            .all(|c| c.when_unsatisfiable == "ScheduleAnyway" && c.max_skew == 1)
    );
    let pdb = built
        .pod_disruption_budget
        .expect("several replicas get a PodDisruptionBudget");
    assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
}

#[test]
fn same_inputs_same_objects_and_only_mounted_config_changes_roll_pods() {
    let r = registry(json!({"storage": {"emptyDir": {}}}));
    let admin = admin_credentials(None, None).unwrap();
    let inputs = |r| BuildInputs {
        registry: r,
        default_image: "wharf.local/wharf:dev",
        events_url: None,
        admin: &admin,
        self_signed: None,
        cluster_ip: Some("10.96.0.10"),
    };
    let first = build(&inputs(&r)).unwrap();
    assert_eq!(build(&inputs(&r)).unwrap(), first);
    let hash = |c: &Children| template_annotations(c)[CONFIG_HASH_ANNOTATION].clone();

    let mut more_memory = r.clone();
    more_memory.spec.resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("128Mi".into()),
        )])),
        ..Default::default()
    });
    assert_eq!(hash(&build(&inputs(&more_memory)).unwrap()), hash(&first));

    let mut anonymous = r.clone();
    anonymous.spec.auth = Some(crate::crd::registry::AuthSpec {
        anonymous_pull: Some(true),
        htpasswd_secret_ref: None,
    });
    assert_ne!(hash(&build(&inputs(&anonymous)).unwrap()), hash(&first));

    let rotated = admin_credentials(None, None).unwrap();
    let after_rotation = build(&BuildInputs {
        admin: &rotated,
        ..inputs(&r)
    })
    .unwrap();
    assert_ne!(hash(&after_rotation), hash(&first));
}

#[test]
fn image_overrides_keep_whatever_part_is_not_overridden() {
    let cases = [
        (json!(null), "wharf.local/wharf:dev"),
        (json!({"tag": "v2"}), "wharf.local/wharf:v2"),
        (
            json!({"repository": "ghcr.io/acme/wharf"}),
            "ghcr.io/acme/wharf:dev",
        ),
        (
            json!({"repository": "r.example:5000/wharf", "tag": "sha256:abc"}),
            "r.example:5000/wharf@sha256:abc",
        ),
    ];
    for (image, want) in cases {
        let mut spec = json!({"storage": {"emptyDir": {}}});
        if !image.is_null() {
            spec["image"] = image;
        }
        let c = build_for(&registry(spec));
        assert_eq!(pod_spec(&c).containers[0].image.as_deref(), Some(want));
    }
    assert_eq!(
        split_image("host:5000/wharf"),
        ("host:5000/wharf".into(), None)
    );
}

#[test]
fn garbage_collection_runs_wharf_gc_on_schedule_against_the_service() {
    assert!(
        build_for(&registry(json!({"storage": {"emptyDir": {}}})))
            .gc_cron_job
            .is_none()
    );
    let r = registry(json!({
        "storage": {"emptyDir": {}},
        "tls": {"selfSigned": {}},
        "garbageCollection": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin", "minBlobAge": "3h", "deleteUntagged": true},
    }));
    let cron = build_for(&r).gc_cron_job.expect("a CronJob");
    assert_eq!(cron.metadata.name.as_deref(), Some("main-gc"));
    let spec = cron.spec.unwrap();
    assert_eq!(spec.schedule, "0 3 * * *");
    assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let job_labels = spec.job_template.metadata.unwrap().labels.unwrap();
    assert_eq!(
        job_labels["app.kubernetes.io/component"], "garbage-collection",
        "the Service must never select GC pods"
    );
    assert_eq!(job_labels["app.kubernetes.io/managed-by"], "wharf-operator");
    let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(
        c.args.as_ref().unwrap(),
        &["gc", "--grace-period", "3h", "--delete-untagged"]
    );
    let env: BTreeMap<_, _> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.clone(), e.clone()))
        .collect();
    assert_eq!(
        env["WHARF_REGISTRY_URL"].value.as_deref(),
        Some("https://main.team.svc:5000")
    );
    assert_eq!(
        env["WHARF_CA_FILE"].value.as_deref(),
        Some("/etc/wharf/ca/ca.crt")
    );
    let from = env["WHARF_PASSWORD"]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("main-admin", "password")
    );
    let ca = &pod.volumes.as_ref().unwrap()[0];
    assert_eq!(ca.config_map.as_ref().unwrap().name, "main-ca");
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );
}

#[test]
fn node_access_points_every_service_name_at_the_cluster_ip_on_every_node() {
    let r = registry(
        json!({"storage": {"emptyDir": {}}, "nodeAccess": {"certsDir": "/var/lib/certs.d"},
                            "service": {"port": 5443}, "tls": {"selfSigned": {}}}),
    );
    let admin = admin_credentials(None, None).unwrap();
    let tls = self_signed(
        "team",
        "main",
        &dns_names(&r, Some("10.96.0.10")),
        None,
        None,
        1_800_000_000,
    )
    .unwrap();
    let inputs = |ip| BuildInputs {
        registry: &r,
        default_image: "wharf.local/wharf:dev",
        events_url: None,
        admin: &admin,
        self_signed: Some(&tls),
        cluster_ip: ip,
    };
    assert_eq!(
        build(&inputs(None)).unwrap().node_access,
        None,
        "nothing to point at yet"
    );
    let access = build(&inputs(Some("10.96.0.10")))
        .unwrap()
        .node_access
        .unwrap();
    assert_eq!(
        access.hosts,
        [
            "main.team.svc:5443",
            "main.team.svc.cluster.local:5443",
            "10.96.0.10:5443"
        ]
    );
    let config: crate::node::hosts::NodeHosts =
        serde_json::from_str(&access.config.data.as_ref().unwrap()["hosts.json"]).unwrap();
    assert_eq!(config.owner, "team/main");
    for namespace in &config.namespaces {
        assert_eq!(namespace.server, "https://10.96.0.10:5443");
        assert_eq!(
            namespace.hosts[0].ca_pem.as_deref(),
            Some(tls.ca_cert_pem.as_str())
        );
    }
    let ds = access.daemon_set.spec.as_ref().unwrap();
    let labels = ds
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(
        labels["app.kubernetes.io/component"], "node-access",
        "the Service never selects it"
    );
    let pod = ds.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].operator.as_deref(),
        Some("Exists")
    );
    let host_path = pod.volumes.as_ref().unwrap()[1].host_path.as_ref().unwrap();
    assert_eq!(host_path.path, "/var/lib/certs.d");
    let c = &pod.containers[0];
    let args = c.args.as_ref().unwrap();
    assert_eq!(
        args[..2],
        ["node-config".to_string(), "--config".to_string()]
    );
    assert!(args.ends_with(&[
        "--host-certs-dir".to_string(),
        "/var/lib/certs.d".to_string()
    ]));
    let security = c.security_context.as_ref().unwrap();
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert_eq!(pod.automount_service_account_token, Some(false));

    // A plain HTTP Registry trusts no CA; IPv6 cluster IPs are bracketed.
    let plain = registry(json!({"storage": {"emptyDir": {}}, "nodeAccess": {}}));
    let hosts = node_hosts(&plain, "fd00::a", None);
    assert_eq!(hosts.namespaces[2].name, "[fd00::a]:5000");
    assert_eq!(hosts.namespaces[0].server, "http://[fd00::a]:5000");
    assert_eq!(hosts.namespaces[0].hosts[0].ca_pem, None);
    // Without nodeAccess, nothing.
    let none = registry(json!({"storage": {"emptyDir": {}}}));
    let built = build(&BuildInputs {
        registry: &none,
        ..inputs(Some("10.96.0.10"))
    })
    .unwrap();
    assert_eq!(built.node_access, None);
    assert!(dns_names(&r, Some("10.96.0.10")).contains(&"10.96.0.10".to_string()));
}

#[test]
fn pushes_are_reported_to_the_operator_with_a_token_derived_from_the_admin_password() {
    let r = registry(json!({"storage": {"emptyDir": {}}}));
    let text = registry_config(&r, Some("http://wharf-events.wharf-system.svc:8081/"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &text).unwrap();
    let config = crate::registry::config::Config::resolve(&crate::registry::config::RegistryArgs {
        config: Some(path),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let [endpoint] = config.notifications.as_slice() else {
        panic!("one endpoint expected: {text}");
    };
    assert_eq!(
        endpoint.url,
        "http://wharf-events.wharf-system.svc:8081/events/team/main"
    );
    let token_file = endpoint.token_file.clone().unwrap();
    assert!(token_file.ends_with("events-token"), "{token_file:?}");

    let built = build_for(&r);
    let data = built.htpasswd_secret.data.as_ref().unwrap();
    let admin_password = String::from_utf8(
        built.admin_secret.data.as_ref().unwrap()["password"]
            .0
            .clone(),
    )
    .unwrap();
    assert_eq!(
        data["events-token"].0,
        crate::operator::registry::credentials::events_token(&admin_password).into_bytes()
    );
    assert!(!registry_config(&r, None).contains("notifications"));
}
