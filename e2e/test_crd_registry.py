"""The Registry and RetentionPolicy CRDs on a real API server: they install, `kubectl explain` reads
their descriptions, valid specs (and the samples) are accepted, invalid ones are rejected with the
CEL rule's message, and the printer columns show. The unit tables check the same rules with kube's
CEL evaluator; this checks that the API server agrees."""

import json
import os

import pytest

from support.procs import REPO

CRDS = os.path.join(REPO, "crds")
SAMPLES = os.path.join(REPO, "config", "samples")

INVALID = [
    ({"storage": {}}, "storage needs exactly one of persistentVolume, emptyDir or s3"),
    ({"storage": {"emptyDir": {}, "persistentVolume": {"size": "1Gi"}}}, "storage needs exactly one of persistentVolume, emptyDir or s3"),
    ({"replicas": 2, "storage": {"persistentVolume": {"size": "1Gi"}}}, "replicas above 1 need storage.s3"),
    ({"storage": {"s3": {"bucket": "oci", "prefix": "a/../../b"}}}, "prefix is a relative key path without '..'"),
    ({"storage": {"s3": {"bucket": "oci", "endpoint": "s3.local:9000"}}}, "endpoint must be an http:// or https:// URL"),
    ({"storage": {"emptyDir": {}}, "tls": {"secretRef": {"name": "t"}, "selfSigned": {}}}, "tls needs exactly one of secretRef or selfSigned"),
    ({"storage": {"emptyDir": {}}, "service": {"type": "ClusterIP", "nodePort": 30500}}, "nodePort needs service type NodePort or LoadBalancer"),
    ({"storage": {"emptyDir": {}}, "garbageCollection": {"schedule": "every day"}}, "schedule must be a cron expression with 5 fields"),
    ({"storage": {"emptyDir": {}}, "garbageCollection": {"schedule": "@daily", "minBlobAge": "2 hours"}}, "minBlobAge must be a duration"),
    ({"storage": {"emptyDir": {}}, "ingress": {"host": "Not_A_Host"}}, "host must be a DNS name"),
    ({"storage": {"emptyDir": {}}, "nodeAccess": {"certsDir": "certs.d"}}, "certsDir must be an absolute path on the node"),
]


@pytest.fixture(scope="module")
def registry_crd(cluster):
    # Every wharf CRD, so that the `wharf` category resolves to kinds that exist.
    cluster.kubectl("apply", "--server-side", "--field-manager=wharf-e2e", "-k", CRDS)
    cluster.kubectl("wait", "--for=condition=Established", "crd/registries.wharf.dev",
                    "crd/imagepullcredentials.wharf.dev", "crd/retentionpolicies.wharf.dev",
                    "crd/replicationpolicies.wharf.dev", "--timeout=60s")
    yield
    # No controller runs here: leave the cluster as it was.
    cluster.kubectl("delete", "-k", CRDS, "--ignore-not-found", "--wait=false", check=False)


def registry(spec, name="r"):
    return json.dumps({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": name}, "spec": spec})


def accepted(cluster, namespace, document):
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=document)


def assert_rejected(cluster, namespace, document, message):
    p = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=document, check=False)
    assert p.returncode != 0, f"accepted: {document}"
    assert message in p.stderr, p.stderr


def test_valid_specs_are_accepted(cluster, namespace, registry_crd):
    for spec in [{"storage": {"emptyDir": {}}},
                 {"replicas": 3, "storage": {"s3": {"bucket": "oci", "credentialsSecretRef": {"name": "s3"}}},
                  "tls": {"selfSigned": {}}, "service": {"type": "NodePort", "nodePort": 30555},
                  "garbageCollection": {"schedule": "0 3 * * *", "minBlobAge": "2h"},
                  "nodeAccess": {"certsDir": "/var/lib/containerd/certs.d"}}]:
        accepted(cluster, namespace, registry(spec))
    for sample in ("registry.yaml", "registry-s3.yaml"):
        cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", os.path.join(SAMPLES, sample))


@pytest.mark.parametrize("spec,message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_specs_are_rejected_with_the_rule_message(cluster, namespace, registry_crd, spec, message):
    assert_rejected(cluster, namespace, registry(spec), message)


def test_kubectl_explain_and_short_name(cluster, namespace, registry_crd):
    explained = cluster.kubectl("explain", "registry.spec.storage").stdout
    assert "exactly one of" in explained and "persistentVolume" in explained, explained
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=registry({"storage": {"emptyDir": {}}}, "shown"))
    listed = cluster.kubectl("get", "reg", "-n", namespace).stdout
    assert "READY" in listed and "ENDPOINT" in listed and "shown" in listed, listed
    assert "shown" in cluster.kubectl("get", "wharf", "-n", namespace).stdout, "category wharf"


def test_storage_cannot_change_after_creation(cluster, namespace, registry_crd):
    cluster.apply(registry({"storage": {"persistentVolume": {"size": "1Gi"}}}, name="fixed"), namespace)
    for spec, message in [
        ({"storage": {"persistentVolume": {"size": "2Gi"}}}, "persistentVolume size and storageClassName cannot change after creation"),
        ({"storage": {"emptyDir": {}}}, "the storage backend cannot change after creation"),
    ]:
        p = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=registry(spec, name="fixed"), check=False)
        assert p.returncode != 0 and message in p.stderr, p.stderr
    # The volume's deletion policy is not part of the claim, so it may change.
    cluster.apply(registry({"storage": {"persistentVolume": {"size": "1Gi", "deletionPolicy": "Delete"}}}, name="fixed"), namespace)


REGISTRY_REF = {"name": "main"}
ENDPOINT = {"url": "https://registry.example.org", "credentialsSecretRef": {"name": "upstream"}}
INVALID_POLICIES = [
    ({"keep": [{"tags": ["v*"]}]}, "choose exactly one of registryRef"),
    ({"registryRef": REGISTRY_REF, "endpoint": ENDPOINT}, "choose exactly one of registryRef"),
    ({"endpoint": ENDPOINT, "keep": [{"tags": ["**"], "pulledWithin": "30d"}]}, "does not say when tags were pushed or pulled"),
    ({"endpoint": ENDPOINT, "untagged": {"delete": True}}, "untagged manifests can only be found in a wharf Registry"),
    ({"endpoint": ENDPOINT, "runGarbageCollection": True}, "runGarbageCollection needs registryRef"),
    ({"endpoint": {"url": "https://r.example.org/v2/"}}, "without a path"),
    ({"registryRef": REGISTRY_REF, "schedule": "every night"}, "schedule must be a cron expression"),
    ({"registryRef": REGISTRY_REF, "timeZone": "UTC"}, "timeZone only applies with a schedule"),
    ({"registryRef": REGISTRY_REF, "keep": [{"pushedWithin": "a week"}]}, "pushedWithin must be a duration"),
    ({"registryRef": REGISTRY_REF, "keep": [{"tags": ["**"], "newest": 1, "mostRecentlyPushed": 2}]}, "newest or mostRecentlyPushed, not both"),
    ({"registryRef": REGISTRY_REF, "safety": {"maxDeletionsPerRun": 0}}, "maxDeletionsPerRun is at least 1"),
    ({"registryRef": REGISTRY_REF, "repositories": ["CI Builds"]}, "repositories are globs"),
]


def retention_policy(spec, name="p"):
    return json.dumps({"apiVersion": "wharf.dev/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": name}, "spec": spec})


def test_retention_policy_sample_and_full_spec_are_accepted(cluster, namespace, registry_crd):
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", os.path.join(SAMPLES, "retentionpolicy.yaml"))
    full = {"registryRef": REGISTRY_REF, "repositories": ["ci/**"], "excludeRepositories": ["ci/golden-*"],
            "keep": [{"tags": ["v*.*.*"]}, {"tags": ["**"], "mostRecentlyPushed": 10}, {"tags": ["**"], "pulledWithin": "720h"},
                     {"tagRegex": "^main-[0-9a-f]{7}$", "pushedWithin": "168h"}, {"semver": ">=1.0.0 <2", "newest": 3}],
            "untagged": {"delete": True, "olderThan": "24h"}, "protect": {"tags": ["latest"], "inUseByCluster": True},
            "safety": {"dryRun": False, "maxDeletionsPerRun": 500, "minTagsPerRepository": 1}, "referrers": "Keep",
            "schedule": "0 2 * * *", "timeZone": "Europe/Berlin", "suspend": True,
            "history": {"successful": 1, "failed": 2}, "runGarbageCollection": True}
    endpoint = {"endpoint": ENDPOINT, "keep": [{"tags": ["v*"]}, {"semver": ">=1", "newest": 2}, {"tagRegex": "^rel-"}]}
    for spec in [full, endpoint]:
        accepted(cluster, namespace, retention_policy(spec))


@pytest.mark.parametrize("spec,message", INVALID_POLICIES, ids=[m for _, m in INVALID_POLICIES])
def test_invalid_retention_policies_are_rejected_with_the_rule_message(cluster, namespace, registry_crd, spec, message):
    assert_rejected(cluster, namespace, retention_policy(spec), message)


def test_retention_policy_name_must_fit_the_jobs_it_names(cluster, namespace, registry_crd):
    assert_rejected(cluster, namespace, retention_policy({"registryRef": REGISTRY_REF}, name="a" + "x" * 42),
                    "at most 42 characters")


def test_retention_policy_explain_short_name_and_columns(cluster, namespace, registry_crd):
    explained = cluster.kubectl("explain", "retentionpolicy.spec.keep").stdout
    assert "mostRecentlyPushed" in explained and "pulledWithin" in explained, explained
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=retention_policy({"registryRef": REGISTRY_REF, "schedule": "0 4 * * *"}, "shown"))
    listed = cluster.kubectl("get", "rp", "-n", namespace).stdout
    header = listed.splitlines()[0].split()
    assert header[:5] == ["NAME", "READY", "SCHEDULE", "DRY", "RUN"], listed
    assert "CANDIDATES" in header and "DELETED" in header, listed
    assert "shown" in listed and "0 4 * * *" in listed, listed


def replication_policy(spec, name="p"):
    return json.dumps({"apiVersion": "wharf.dev/v1alpha1", "kind": "ReplicationPolicy", "metadata": {"name": name}, "spec": spec})


REPLICATION = {"source": {"endpoint": ENDPOINT}, "destination": {"registryRef": REGISTRY_REF, "repositoryPrefix": "mirror/"},
               "rules": [{"repositories": ["library/alpine", "team/**"], "excludeRepositories": ["team/tmp-*"],
                          "tags": {"include": ["3.*"], "exclude": ["*-rc*"], "regex": "^3[.]", "semver": ">=3.18 <4", "newest": 5},
                          "platforms": ["linux/amd64", "linux/arm/v7"], "referrers": True}],
               "trigger": {"schedule": "*/30 * * * *", "timeZone": "Europe/Berlin", "suspend": False},
               "options": {"overwrite": False, "replicateDeletion": True, "concurrency": 8, "dryRun": False, "bandwidthLimit": "50Mi"},
               "history": {"successful": 2, "failed": 2}}
INVALID_REPLICATIONS = [
    ({**REPLICATION, "source": {}}, "choose exactly one of registryRef"),
    ({**REPLICATION, "destination": {"registryRef": REGISTRY_REF, "endpoint": ENDPOINT}}, "choose exactly one of registryRef"),
    ({**REPLICATION, "trigger": {"onPush": True}}, "trigger.onPush needs source.registryRef"),
    ({**REPLICATION, "source": {"endpoint": {"url": "https://r.example.org/v2/"}}}, "without a path"),
    ({**REPLICATION, "destination": {"registryRef": REGISTRY_REF, "repositoryPrefix": "mirror"}}, "each followed by '/'"),
    ({**REPLICATION, "rules": [{"repositories": []}]}, "at least one repository glob"),
    ({**REPLICATION, "rules": [{"repositories": ["Team/*"]}]}, "lowercase repository-name characters"),
    ({**REPLICATION, "rules": [{"repositories": ["**"], "platforms": ["linux"]}]}, "os/architecture[/variant]"),
    ({**REPLICATION, "rules": [{"repositories": ["**"], "tags": {"newest": 0}}]}, "newest is at least 1"),
    ({**REPLICATION, "trigger": {"timeZone": "UTC"}}, "timeZone only applies with a schedule"),
    ({**REPLICATION, "trigger": {"schedule": "every night"}}, "cron expression with 5 fields"),
    ({**REPLICATION, "options": {"bandwidthLimit": "100Mbit"}}, "bytes per second"),
]


def test_replication_policy_sample_and_full_spec_are_accepted(cluster, namespace, registry_crd):
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", os.path.join(SAMPLES, "replicationpolicy.yaml"))
    on_push = {"source": {"registryRef": {"name": "ci"}}, "destination": {"endpoint": {**ENDPOINT, "insecure": True}},
               "rules": [{"repositories": ["**"]}], "trigger": {"onPush": True}}
    for spec in [REPLICATION, on_push]:
        accepted(cluster, namespace, replication_policy(spec))


@pytest.mark.parametrize("spec,message", INVALID_REPLICATIONS, ids=[m for _, m in INVALID_REPLICATIONS])
def test_invalid_replication_policies_are_rejected_with_the_rule_message(cluster, namespace, registry_crd, spec, message):
    assert_rejected(cluster, namespace, replication_policy(spec), message)


def test_replication_policy_name_short_name_and_columns(cluster, namespace, registry_crd):
    assert_rejected(cluster, namespace, replication_policy(REPLICATION, name="a" + "x" * 42), "at most 42 characters")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=replication_policy(REPLICATION, "shown"))
    listed = cluster.kubectl("get", "repl", "-n", namespace).stdout
    header = listed.splitlines()[0].split()
    assert header[:3] == ["NAME", "READY", "SCHEDULE"] and "COPIED" in header and "FAILED" in header, listed
    assert "shown" in listed and "*/30 * * * *" in listed, listed
    assert "shown" in cluster.kubectl("get", "wharf", "-n", namespace).stdout, "category wharf"
