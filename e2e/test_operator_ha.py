"""A Registry with `replicas: 2` on S3, on the real cluster: the S3 server runs as a Pod (versitygw,
from an image built locally like wharf's), the Registry's credentials come from a Secret, the
Deployment has a PodDisruptionBudget and spreads its pods, the kubelet keeps pulling through the
Service while a registry pod is deleted, and wrong credentials or a missing bucket stall the
Registry with a reason a user can act on."""

import base64
import json
import os

import pytest

from support.kube import PortForward, build_image
from support.operator import admin_credentials, condition, module_namespace, operator_fixture, registry_ready as ready
from support.procs import run
from test_node_access import certs_dir, run_pod

operator = operator_fixture()
namespace = module_namespace("e2e-ha")
BUCKET = "images"


@pytest.fixture(scope="module")
def s3_in_cluster(cluster, namespace, busybox_image):
    """The S3 server as a Pod and Service `s3` in the test namespace; returns its keys."""
    name, archive = build_image("s3")
    cluster.load_image(archive)
    access, secret = "WHARFE2E" + os.urandom(6).hex().upper(), os.urandom(20).hex()
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-root"},
                   "stringData": {"ROOT_ACCESS_KEY_ID": access, "ROOT_SECRET_ACCESS_KEY": secret}}, namespace)
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "s3", "labels": {"app": "s3"}}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [{"name": "bucket", "image": busybox_image[0], "command": ["sh", "-c", f"mkdir -p /data/{BUCKET}"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        "containers": [{"name": "s3", "image": name, "imagePullPolicy": "Never",
                        "args": ["--port", ":9000", "--quiet", "posix", "--sidecar", "/meta", "/data"],
                        "envFrom": [{"secretRef": {"name": "s3-root"}}],
                        "ports": [{"containerPort": 9000, "name": "s3"}],
                        "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 2},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "meta", "mountPath": "/meta"}],
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "meta", "emptyDir": {}}]}}, namespace)
    cluster.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s3"},
                   "spec": {"selector": {"app": "s3"}, "ports": [{"port": 9000, "targetPort": "s3", "name": "s3"}]}},
                  namespace)
    cluster.wait("condition=Ready", "pod/s3", namespace, timeout=120)
    return access, secret


def keys_secret(cluster, namespace, name, access, secret):
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                   "stringData": {"accessKeyId": access, "secretAccessKey": secret}}, namespace)


def s3_registry(cluster, namespace, name, keys, bucket=BUCKET, **spec):
    spec = {"replicas": 2, "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            "storage": {"s3": {"bucket": bucket, "prefix": name, "endpoint": f"http://s3.{namespace}.svc:9000",
                               "forcePathStyle": True, "region": "us-east-1", "credentialsSecretRef": {"name": keys}}},
            **spec}
    cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": name}, "spec": spec},
                  namespace)


def registry_pods(cluster, name, namespace):
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=registry"
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]
    return [p for p in pods if "deletionTimestamp" not in p["metadata"]]


def test_two_replicas_on_s3_serve_the_kubelet_through_a_pod_deletion(cluster, operator, namespace, s3_in_cluster,
                                                                      busybox_image):
    keys_secret(cluster, namespace, "s3-keys", *s3_in_cluster)
    s3_registry(cluster, namespace, "shared", "s3-keys", auth={"anonymousPull": True},
                nodeAccess={"certsDir": certs_dir(cluster)})
    r = cluster.wait_until("shared to be Ready", lambda: ready(cluster, "shared", namespace), timeout=240)
    assert r["status"]["readyReplicas"] == 2, r["status"]
    deployment = cluster.get("deployment", "shared", namespace)
    pod_spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert {c["topologyKey"] for c in pod_spec["topologySpreadConstraints"]} == \
        {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    env = pod_spec["containers"][0]["env"]
    assert all("value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "s3-keys" for e in env), env
    config = cluster.get("configmap", "shared-config", namespace)["data"]["config.yaml"]
    assert s3_in_cluster[1] not in config and "bucket: images" in config, config
    pdb = cluster.get("poddisruptionbudget", "shared", namespace)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["metadata"]["ownerReferences"][0]["name"] == "shared"

    user, password = admin_credentials(cluster, "shared", namespace)
    forward = PortForward(cluster, namespace, "shared")
    try:
        for tag in ("1", "2", "3"):
            run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", f"{user}:{password}",
                 f"oci-archive:{busybox_image[1]}", f"docker://{forward.address}/team/app:{tag}"], timeout=300)
    finally:
        forward.close()
    endpoint = r["status"]["endpoint"]
    run_pod(cluster, namespace, "before", f"{endpoint}/team/app:1")
    # One registry pod goes; the kubelet pulls through the Service all the same.
    victim = registry_pods(cluster, "shared", namespace)[0]["metadata"]["name"]
    cluster.kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
    run_pod(cluster, namespace, "during", f"{endpoint}/team/app:2")
    run_pod(cluster, namespace, "after", f"{endpoint}/team/app:3")
    cluster.wait_until("two ready replicas again", lambda: (ready(cluster, "shared", namespace) or {})
                       .get("status", {}).get("readyReplicas") == 2, timeout=180)
    for pod in ("before", "during", "after"):
        cluster.kubectl("delete", "pod", pod, "-n", namespace, "--wait=false")


def stalled(cluster, name, namespace):
    obj = cluster.get("registry", name, namespace) or {}
    c = condition(obj, "Stalled")
    return c if c and c["status"] == "True" else None


def test_wrong_keys_and_a_missing_bucket_stall_with_the_reason(cluster, operator, namespace, s3_in_cluster):
    access, _ = s3_in_cluster
    keys_secret(cluster, namespace, "wrong-keys", access, "not-the-secret")
    s3_registry(cluster, namespace, "wrong-keys", "wrong-keys", replicas=1)
    c = cluster.wait_until("wrong-keys to stall", lambda: stalled(cluster, "wrong-keys", namespace), timeout=180)
    assert c["reason"] == "StorageUnavailable" and "secret access key is wrong" in c["message"], c
    assert "not-the-secret" not in json.dumps(cluster.get("registry", "wrong-keys", namespace))

    keys_secret(cluster, namespace, "good-keys", *s3_in_cluster)
    s3_registry(cluster, namespace, "no-bucket", "good-keys", bucket="no-such-bucket", replicas=1)
    c = cluster.wait_until("no-bucket to stall", lambda: stalled(cluster, "no-bucket", namespace), timeout=180)
    assert c["reason"] == "StorageUnavailable" and "the bucket does not exist" in c["message"], c
    assert "no-such-bucket" in c["message"]

    # Fixing the Secret is enough (a restarted container reads it again); deleting the crashing
    # pod only skips the kubelet's back-off.
    keys_secret(cluster, namespace, "wrong-keys", *s3_in_cluster)
    for pod in registry_pods(cluster, "wrong-keys", namespace):
        cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=false")
    cluster.wait_until("wrong-keys to recover", lambda: ready(cluster, "wrong-keys", namespace), timeout=240)
    secret = cluster.get("secret", "wrong-keys", namespace)
    assert base64.b64decode(secret["data"]["secretAccessKey"]).decode() == s3_in_cluster[1]
