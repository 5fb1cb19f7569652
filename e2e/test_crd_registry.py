"""The Registry CRD on a real API server: it installs, `kubectl explain` reads its descriptions,
valid specs are accepted, and invalid ones are rejected with the CEL rule's message."""

import json
import os

import pytest

from support.procs import REPO

CRDS = os.path.join(REPO, "crds")

INVALID = [
    ({"storage": {}}, "storage needs exactly one of persistentVolume, emptyDir or s3"),
    ({"storage": {"emptyDir": {}, "persistentVolume": {"size": "1Gi"}}}, "storage needs exactly one of persistentVolume, emptyDir or s3"),
    ({"replicas": 2, "storage": {"persistentVolume": {"size": "1Gi"}}}, "replicas above 1 need storage.s3"),
    ({"storage": {"emptyDir": {}}, "tls": {"secretRef": {"name": "t"}, "selfSigned": {}}}, "tls needs exactly one of secretRef or selfSigned"),
    ({"storage": {"emptyDir": {}}, "service": {"type": "ClusterIP", "nodePort": 30500}}, "nodePort needs service type NodePort or LoadBalancer"),
    ({"storage": {"emptyDir": {}}, "garbageCollection": {"schedule": "every day"}}, "schedule must be a cron expression with 5 fields"),
    ({"storage": {"emptyDir": {}}, "garbageCollection": {"schedule": "@daily", "minBlobAge": "2 hours"}}, "minBlobAge must be a duration"),
    ({"storage": {"emptyDir": {}}, "ingress": {"host": "Not_A_Host"}}, "host must be a DNS name"),
]


@pytest.fixture(scope="module")
def registry_crd(cluster):
    # Every wharf CRD, so that the `wharf` category resolves to kinds that exist.
    cluster.kubectl("apply", "--server-side", "--field-manager=wharf-e2e", "-k", CRDS)
    cluster.kubectl("wait", "--for=condition=Established", "crd/registries.wharf.dev",
                    "crd/imagepullcredentials.wharf.dev", "--timeout=60s")
    yield
    # No controller runs here: leave the cluster as it was.
    cluster.kubectl("delete", "-k", CRDS, "--ignore-not-found", "--wait=false", check=False)


def registry(spec, name="r"):
    return json.dumps({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": name}, "spec": spec})


def test_valid_specs_are_accepted(cluster, namespace, registry_crd):
    for spec in [{"storage": {"emptyDir": {}}},
                 {"replicas": 3, "storage": {"s3": {"bucket": "oci", "credentialsSecretRef": {"name": "s3"}}},
                  "tls": {"selfSigned": {}}, "service": {"type": "NodePort", "nodePort": 30555},
                  "garbageCollection": {"schedule": "0 3 * * *", "minBlobAge": "2h"}}]:
        cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=registry(spec))


@pytest.mark.parametrize("spec,message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_specs_are_rejected_with_the_rule_message(cluster, namespace, registry_crd, spec, message):
    p = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=registry(spec), check=False)
    assert p.returncode != 0, f"accepted: {spec}"
    assert message in p.stderr, p.stderr


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
