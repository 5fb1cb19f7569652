"""The installed operator, shared by the operator and pull-credential tests: who leads, its
metrics, its pods, and a hard kill that gives it no chance to clean up."""

import base64
import json
import os
import uuid

import pytest

from .procs import REPO, parse_prometheus, run

OPERATOR_NS = "wharf-system"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def holder(cluster):
    """The lease holder's identity, `<pod>_<random per process>`."""
    lease = cluster.get("lease", "wharf-operator", OPERATOR_NS) or {}
    return lease.get("spec", {}).get("holderIdentity") or None


def leader(cluster):
    """The pod whose process holds the lease."""
    pod = (holder(cluster) or "").split("_")[0]
    return pod if pod and cluster.get("pod", pod, OPERATOR_NS) else None


def metrics(cluster, pod):
    return parse_prometheus(
        cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{OPERATOR_NS}/pods/{pod}:8080/proxy/metrics").stdout)


def writes(values):
    return sum(values.get(f'wharf_operator_api_requests_total{{verb="{v}"}}', 0) for v in WRITE_VERBS)


def condition(obj, type_):
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return None


def registry_ready(cluster, name, namespace):
    """The Registry when it is Ready at its current generation, else None."""
    r = cluster.get("registry", name, namespace)
    c = condition(r, "Ready")
    if c and c["status"] == "True" and r["status"].get("observedGeneration") == r["metadata"]["generation"]:
        return r
    return None


def module_namespace(prefix):
    """A module fixture: a namespace of its own (after the operator is installed), deleted
    afterwards without waiting."""

    @pytest.fixture(scope="module")
    def namespace(cluster, operator):
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        cluster.kubectl("create", "namespace", name)
        yield name
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)

    return namespace


def admin_credentials(cluster, name, namespace):
    data = cluster.get("secret", f"{name}-admin", namespace)["data"]
    return base64.b64decode(data["username"]).decode(), base64.b64decode(data["password"]).decode()


def operator_pods(cluster):
    out = cluster.kubectl("get", "pods", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/component=operator", "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def kill_hard(cluster, pod):
    """SIGKILL the operator process, giving it no chance to hand the lease over. On the local
    cluster that goes through containerd; elsewhere the closest portable thing is a forced delete."""
    if cluster.local:
        status = cluster.get("pod", pod, OPERATOR_NS)["status"]["containerStatuses"][0]
        container = status["containerID"].split("://", 1)[1]
        sock = os.path.join(os.environ.get("WHARF_CLUSTER_DIR", os.path.join(REPO, ".local", "cluster")),
                            "containerd", "containerd.sock")
        run(["ctr", "--address", sock, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", container])
    else:
        cluster.kubectl("delete", "pod", pod, "-n", OPERATOR_NS, "--grace-period=0", "--force", "--wait=false")


def install(cluster):
    """`kubectl apply -k config/default`, then wait for the rollout and a leader."""
    cluster.kubectl("apply", "-k", os.path.join(REPO, "config", "default"))
    cluster.kubectl("-n", OPERATOR_NS, "rollout", "status", "deploy/wharf-operator", "--timeout=180s", timeout=240)
    cluster.wait_until("a leader", lambda: leader(cluster), timeout=60)


def uninstall(cluster, *kinds):
    """Deletes every object of `kinds` first, while the operator still runs to take their
    finalizers off, then the operator."""
    for kind in kinds:
        cluster.kubectl("delete", kind, "--all", "--all-namespaces", "--wait=true", "--timeout=120s", check=False,
                        timeout=180)
    cluster.kubectl("delete", "-k", os.path.join(REPO, "config", "default"), "--ignore-not-found", "--wait=true",
                    "--timeout=120s", check=False, timeout=180)


def operator_fixture(*kinds):
    """A module fixture: the operator installed from config/default for the module's tests, then
    removed together with the objects of `kinds` (plural resource names) the tests left."""

    @pytest.fixture(scope="module")
    def operator(cluster, wharf_image):
        assert wharf_image == "wharf.local/wharf:dev", "config/default names the image `make image` builds"
        install(cluster)
        yield
        uninstall(cluster, *kinds)

    return operator
