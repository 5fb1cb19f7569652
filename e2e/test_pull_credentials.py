"""ImagePullCredential on the real cluster: the kubelet pulls `team-a/app:1` from a Registry that
requires auth, with a robot credential the operator minted, copied into labelled namespaces and
injected by the Pod webhook or through the `default` ServiceAccount. Copies follow namespaces,
are restored when deleted or edited, rotate in place, and disappear with the credential, also
when the operator is killed in the middle of a sync."""

import base64
import json
import os
import time
import urllib.parse
import uuid

import pytest

from support.oci import Client, answers
from support.operator import (OPERATOR_NS, admin_credentials, condition, kill_hard, leader, operator_fixture,
                              operator_pods)
from support.procs import REPO, run

WEBHOOK_CONFIGURATION = "wharf-pull-credentials"
LABEL = "wharf.dev/pull-credential"


def suffix():
    return uuid.uuid4().hex[:6]


operator = operator_fixture("imagepullcredentials")


class Setup:
    """A Registry requiring auth, holding `team-a/app:1` and `team-b/app:1`, reachable by the
    node's containerd on its cluster IP (plain HTTP, trusted through hosts.toml)."""

    def __init__(self, cluster, namespace, address, admin):
        self.cluster, self.namespace, self.address, self.admin = cluster, namespace, address, admin

    def image(self, repo="team-a/app"):
        return f"{self.address}/{repo}:1"


@pytest.fixture(scope="module")
def registry(cluster, operator, busybox_image):
    if not cluster.local:
        pytest.skip("the kubelet must pull from the Registry's cluster IP over plain HTTP: local cluster only")
    namespace = f"e2e-reg-{suffix()}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": "main"},
                   "spec": {"storage": {"emptyDir": {}}}}, namespace)
    cluster.wait_until("the Registry to be Ready", lambda: (condition(cluster.get("registry", "main", namespace), "Ready")
                                                              or {}).get("status") == "True", timeout=180)
    ip = cluster.get("service", "main", namespace)["spec"]["clusterIP"]
    address = f"{ip}:5000"
    cluster.trust_http_registry(address)
    # Ready means the pod is; the Service's cluster IP answers once kube-proxy has caught up.
    cluster.wait_until("the Service to answer", lambda: answers(address, 401), timeout=60)
    user, password = admin_credentials(cluster, "main", namespace)
    for repo in ("team-a/app", "team-b/app"):
        run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", f"{user}:{password}",
             f"oci-archive:{busybox_image[1]}", f"docker://{address}/{repo}:1"], timeout=300)
    yield Setup(cluster, namespace, address, (user, password))
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def credential(name, spec):
    return {"apiVersion": "wharf.dev/v1alpha1", "kind": "ImagePullCredential", "metadata": {"name": name}, "spec": spec}


def ipc_status(cluster, name):
    return (cluster.get("imagepullcredential", name) or {}).get("status", {})


def ready_ipc(cluster, name, matched=None):
    obj = cluster.get("imagepullcredential", name)
    c = condition(obj, "Ready")
    if not c or c["status"] != "True" or obj["status"].get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    if matched is not None and obj["status"].get("namespaces", {}).get("synced") != matched:
        return None
    return obj


def make_namespace(cluster, labels=None):
    name = f"e2e-ns-{suffix()}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})
    return name


def pod(cluster, namespace, image, name="app", pull_secrets=None):
    spec = {"containers": [{"name": "app", "image": image, "command": ["sleep", "3600"], "imagePullPolicy": "Always"}],
            "terminationGracePeriodSeconds": 0}
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}, namespace)


def pod_state(cluster, namespace, name="app"):
    p = cluster.get("pod", name, namespace) or {}
    statuses = p.get("status", {}).get("containerStatuses") or []
    if not statuses:
        return None, ""
    state = statuses[0].get("state", {})
    if "running" in state:
        return "Running", ""
    waiting = state.get("waiting", {})
    return waiting.get("reason"), waiting.get("message", "")


def wait_running(cluster, namespace, name="app", timeout=120):
    try:
        cluster.wait_until(f"pod {namespace}/{name} to run", lambda: pod_state(cluster, namespace, name)[0] == "Running",
                           timeout=timeout)
    except AssertionError:
        events = cluster.kubectl("get", "events", "-n", namespace, "-o", "custom-columns=R:.reason,M:.message", check=False)
        raise AssertionError(f"pod {namespace}/{name} did not run: {pod_state(cluster, namespace, name)}\n{events.stdout}")


def copy(cluster, namespace, name):
    return cluster.get("secret", name, namespace)


def copied_credential(cluster, namespace, name):
    data = json.loads(base64.b64decode(copy(cluster, namespace, name)["data"][".dockerconfigjson"]))
    entry = next(iter(data["auths"].values()))
    return entry["username"], entry["password"]


def token_status(setup, user, password, repo="team-a/app"):
    query = urllib.parse.urlencode({"scope": f"repository:{repo}:pull"})
    c = Client(setup.address, user, password)
    try:
        return c.request("GET", f"/auth/token?{query}")[0]
    finally:
        c.close()


def copies_of(cluster, ipc):
    out = cluster.kubectl("get", "secrets", "-A", "-l", f"{LABEL}={ipc}", "-o", "json").stdout
    return [s for s in json.loads(out)["items"] if s["metadata"]["namespace"] != OPERATOR_NS]


def test_pod_webhook_injects_the_minted_credential_into_labelled_namespaces(cluster, registry):
    access = f"team-a-{suffix()}"
    name = f"webhook-{suffix()}"
    cluster.apply(credential(name, {
        "source": {"registryRef": {"namespace": registry.namespace, "name": "main", "repositories": ["team-a/**"]}},
        "secretName": "wharf-pull",
        "namespaceSelector": {"matchLabels": {"registry-access": access}},
        "inject": {"mode": "PodWebhook"},
    }))
    cluster.wait_until("the credential to be Ready", lambda: ready_ipc(cluster, name), timeout=60)
    assert cluster.get("mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION)
    status = ipc_status(cluster, name)
    assert status["sourceHash"].startswith("sha256:") and status["credentialExpiresAt"]

    # A new namespace gets its copy within seconds, and its pods pull with it.
    created = time.monotonic()
    team_ns = make_namespace(cluster, {"registry-access": access})
    cluster.wait_until("the copy", lambda: copy(cluster, team_ns, "wharf-pull"), timeout=30)
    print(f"\ncopy in a new namespace after {time.monotonic() - created:.1f}s")
    copied = copy(cluster, team_ns, "wharf-pull")
    assert copied["type"] == "kubernetes.io/dockerconfigjson"
    assert copied["metadata"]["ownerReferences"][0]["kind"] == "ImagePullCredential"
    user, password = copied_credential(cluster, team_ns, "wharf-pull")
    assert user == f"robot$ipc-{name}"
    assert token_status(registry, user, password) == 200
    pod(cluster, team_ns, registry.image())
    assert {"name": "wharf-pull"} in cluster.get("pod", "app", team_ns)["spec"]["imagePullSecrets"]
    wait_running(cluster, team_ns)

    # The minted secret is in the copies only: not in the operator's logs, events or status.
    logs = "".join(cluster.kubectl("logs", "-n", OPERATOR_NS, p["metadata"]["name"], check=False).stdout
                   for p in operator_pods(cluster))
    assert "robot credential renewed" in logs, "the operator logs nothing about minting: nothing to check"
    events = cluster.kubectl("get", "events", "-A", "-o", "json").stdout
    for where, text in [("logs", logs), ("events", events), ("status", json.dumps(cluster.get("imagepullcredential", name)))]:
        assert password not in text, f"the robot's secret appears in the operator's {where}"

    # The robot is pull-only and limited to team-a/**.
    c = Client(registry.address, user, password)
    assert c.request("GET", "/v2/team-b/app/tags/list")[0] == 403
    assert c.request("POST", "/v2/team-a/app/blobs/uploads/")[0] == 403
    c.close()

    # A namespace without the label: no copy, no injection, and the kubelet is refused.
    other = make_namespace(cluster)
    pod(cluster, other, registry.image())
    cluster.wait_until("the pull to fail", lambda: pod_state(cluster, other)[0] in ("ErrImagePull", "ImagePullBackOff"),
                       timeout=90)
    assert "imagePullSecrets" not in cluster.get("pod", "app", other)["spec"]
    events = cluster.kubectl("get", "events", "-n", other, "-o", "json").stdout
    messages = " ".join(e.get("message", "") for e in json.loads(events)["items"])
    assert "401" in messages or "nauthorized" in messages, messages
    assert copy(cluster, other, "wharf-pull") is None

    # A deleted or edited copy is restored; a namespace that stops matching loses its copy.
    cluster.kubectl("delete", "secret", "wharf-pull", "-n", team_ns)
    cluster.wait_until("the deleted copy to be restored", lambda: copy(cluster, team_ns, "wharf-pull"), timeout=30)
    cluster.kubectl("patch", "secret", "wharf-pull", "-n", team_ns, "--type=merge",
                    "-p", json.dumps({"data": {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()}}))
    cluster.wait_until("the edited copy to be restored",
                       lambda: copied_credential(cluster, team_ns, "wharf-pull") == (user, password), timeout=30)
    assert ipc_status(cluster, name)["namespaces"] == {"matched": 1, "synced": 1, "failed": 0}
    cluster.kubectl("label", "namespace", team_ns, "registry-access-")
    cluster.wait_until("the copy to go", lambda: copy(cluster, team_ns, "wharf-pull") is None, timeout=30)

    # A Secret of the same name that someone else owns is reported, never taken over.
    clash = make_namespace(cluster)
    cluster.kubectl("create", "secret", "generic", "wharf-pull", "-n", clash, "--from-literal=mine=yes")
    cluster.kubectl("label", "namespace", clash, f"registry-access={access}")
    cluster.wait_until("the conflict in status", lambda: (ipc_status(cluster, name).get("failures") or [{}])[0].get("reason") == "Conflict",
                       timeout=30)
    assert condition(cluster.get("imagepullcredential", name), "Ready")["reason"] == "PartiallySynced"
    assert cluster.get("secret", "wharf-pull", clash)["data"] == {"mine": base64.b64encode(b"yes").decode()}

    cluster.kubectl("delete", "imagepullcredential", name, "--wait=true", "--timeout=60s")
    assert not copies_of(cluster, name)
    assert cluster.get("secret", "wharf-pull", clash), "the user's Secret must survive the cleanup"
    cluster.wait_until("the robot to be revoked", lambda: token_status(registry, user, password) == 401, timeout=30)
    for ns in (team_ns, other, clash):
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_service_account_mode_patches_default_and_survives_its_recreation(cluster, registry):
    name = f"sa-{suffix()}"
    ns = make_namespace(cluster)
    cluster.wait_until("the default ServiceAccount", lambda: cluster.get("serviceaccount", "default", ns), timeout=30)
    cluster.kubectl("patch", "serviceaccount", "default", "-n", ns, "--type=merge",
                    "-p", json.dumps({"imagePullSecrets": [{"name": "users-own"}]}))
    cluster.apply(credential(name, {
        "source": {"registryRef": {"namespace": registry.namespace, "name": "main", "repositories": ["team-a/**"]}},
        "secretName": "wharf-pull-sa",
        "namespaces": [ns],
        "inject": {"mode": "ServiceAccount", "serviceAccounts": ["default"]},
    }))

    def entries():
        sa = cluster.get("serviceaccount", "default", ns) or {}
        return [e["name"] for e in sa.get("imagePullSecrets", [])]

    cluster.wait_until("the ServiceAccount entry", lambda: "wharf-pull-sa" in entries(), timeout=30)
    assert "users-own" in entries(), "other entries stay"
    pod(cluster, ns, registry.image())
    wait_running(cluster, ns)

    cluster.kubectl("delete", "serviceaccount", "default", "-n", ns)
    cluster.wait_until("the recreated ServiceAccount to get the entry again", lambda: entries() == ["wharf-pull-sa"], timeout=60)
    pod(cluster, ns, registry.image(), name="after")
    wait_running(cluster, ns, name="after")

    cluster.kubectl("patch", "serviceaccount", "default", "-n", ns, "--type=json",
                    "-p", json.dumps([{"op": "add", "path": "/imagePullSecrets/-", "value": {"name": "added-later"}}]))
    cluster.kubectl("delete", "imagepullcredential", name, "--wait=true", "--timeout=60s")
    assert entries() == ["added-later"], "only the entry wharf added is removed"
    assert copy(cluster, ns, "wharf-pull-sa") is None
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_rotation_patches_copies_in_place_and_retires_old_credentials(cluster, registry):
    name = f"rotate-{suffix()}"
    ns = make_namespace(cluster)
    cluster.apply(credential(name, {
        "source": {"registryRef": {"namespace": registry.namespace, "name": "main", "repositories": ["team-a/**"]}},
        "secretName": "wharf-pull-rot", "namespaces": [ns], "inject": {"mode": "None"}, "refreshInterval": "1h",
    }))
    cluster.wait_until("the copy", lambda: copy(cluster, ns, "wharf-pull-rot"), timeout=30)
    uid = copy(cluster, ns, "wharf-pull-rot")["metadata"]["uid"]
    seen = [copied_credential(cluster, ns, "wharf-pull-rot")]
    # Shorten the lifetime: the credential now renews every 30s.
    cluster.kubectl("patch", "imagepullcredential", name, "--type=merge", "-p", json.dumps({"spec": {"refreshInterval": "30s"}}))
    for round_ in range(3):
        cluster.wait_until(f"rotation {round_ + 1}", lambda: copied_credential(cluster, ns, "wharf-pull-rot") != seen[-1],
                           timeout=60)
        seen.append(copied_credential(cluster, ns, "wharf-pull-rot"))
        assert copy(cluster, ns, "wharf-pull-rot")["metadata"]["uid"] == uid, "rotation must patch, not recreate"
        # The previous credential still works during its grace period (half the interval) ...
        assert token_status(registry, *seen[-2]) == 200
        # ... and new pods keep pulling with the new one.
        pod(cluster, ns, registry.image(), name=f"p{round_}", pull_secrets=["wharf-pull-rot"])
        wait_running(cluster, ns, name=f"p{round_}")
    # After the grace period, the retired credentials are refused.
    cluster.wait_until("the oldest credential to be refused", lambda: token_status(registry, *seen[0]) == 401, timeout=30)
    time.sleep(16)
    assert token_status(registry, *seen[-2]) == 401, "a rotated-out credential outlived its grace period"
    assert token_status(registry, *copied_credential(cluster, ns, "wharf-pull-rot")) == 200
    cluster.kubectl("delete", "imagepullcredential", name, "--wait=true", "--timeout=60s")
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_a_copied_secret_source_is_resynced_and_invalid_sources_are_reported(cluster, registry):
    src_ns = make_namespace(cluster)
    user, password = registry.admin
    auth = lambda u, p: base64.b64encode(json.dumps({"auths": {registry.address: {
        "username": u, "password": p, "auth": base64.b64encode(f"{u}:{p}".encode()).decode()}}}).encode()).decode()
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "corp-pull", "labels": {"argocd.argoproj.io/instance": "ops"},
        "annotations": {"kustomize.toolkit.fluxcd.io/name": "ops"}},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": auth(user, password)}}, src_ns)
    target = make_namespace(cluster)
    name = f"copied-{suffix()}"
    cluster.apply(credential(name, {"source": {"secretRef": {"namespace": src_ns, "name": "corp-pull"}},
                                    "namespaces": [target], "inject": {"mode": "None"}}))
    cluster.wait_until("the copy", lambda: copy(cluster, target, name), timeout=30)
    copied = copy(cluster, target, name)
    assert not any(k.startswith(("argocd.", "kustomize.toolkit")) for k in {**copied["metadata"].get("labels", {}),
                                                                            **copied["metadata"].get("annotations", {})})
    cluster.kubectl("patch", "secret", "corp-pull", "-n", src_ns, "--type=merge",
                    "-p", json.dumps({"data": {".dockerconfigjson": auth(user, "changed")}}))
    cluster.wait_until("the copy to follow its source", lambda: copied_credential(cluster, target, name)[1] == "changed",
                       timeout=30)
    cluster.kubectl("delete", "secret", "corp-pull", "-n", src_ns)
    cluster.wait_until("SourceNotFound", lambda: (condition(cluster.get("imagepullcredential", name), "Stalled") or {})
                       .get("reason") == "SourceNotFound", timeout=30)
    assert copy(cluster, target, name), "copies are kept while the source is missing"
    cluster.kubectl("delete", "imagepullcredential", name, "--wait=true", "--timeout=60s")
    for ns in (src_ns, target):
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_bad_specs_are_rejected_with_a_clear_message(cluster, operator):
    bad = credential("bad", {"source": {"secretRef": {"namespace": "ops", "name": "x"}}})
    p = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode != 0 and "choose target namespaces" in p.stderr, p.stderr
    bad["spec"]["namespaces"] = ["a"]
    bad["spec"]["refreshInterval"] = "5s"
    p = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode != 0 and "at least 30s" in p.stderr, p.stderr


def test_killing_the_operator_mid_sync_converges_with_nothing_orphaned(cluster, registry):
    access = f"bulk-{suffix()}"
    namespaces = [make_namespace(cluster, {"registry-access": access}) for _ in range(30)]
    name = f"bulk-{suffix()}"
    cluster.apply(credential(name, {
        "source": {"registryRef": {"namespace": registry.namespace, "name": "main", "repositories": ["team-a/**"]}},
        "namespaceSelector": {"matchLabels": {"registry-access": access}}, "inject": {"mode": "ServiceAccount"},
    }))
    cluster.wait_until("the sync to start", lambda: copies_of(cluster, name), timeout=30, interval=0.1)
    kill_hard(cluster, leader(cluster))
    cluster.wait_until("all 30 synced after the restart", lambda: ready_ipc(cluster, name, matched=30), timeout=120)
    assert sorted(s["metadata"]["namespace"] for s in copies_of(cluster, name)) == sorted(namespaces)
    for ns in namespaces[:3]:
        sa = cluster.get("serviceaccount", "default", ns)
        assert [e["name"] for e in sa.get("imagePullSecrets", [])].count(name) == 1

    # The operator is down while the credential is deleted with its finalizer forced off: the
    # sweep at the next start removes the ServiceAccount entries it would have removed.
    cluster.kubectl("-n", OPERATOR_NS, "scale", "deploy/wharf-operator", "--replicas=0")
    cluster.wait_until("the operator to stop", lambda: not operator_pods(cluster), timeout=60)
    cluster.kubectl("patch", "imagepullcredential", name, "--type=json",
                    "-p", json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]))
    cluster.kubectl("delete", "imagepullcredential", name, "--wait=true", "--timeout=60s")
    cluster.kubectl("-n", OPERATOR_NS, "scale", "deploy/wharf-operator", "--replicas=2")
    cluster.kubectl("-n", OPERATOR_NS, "rollout", "status", "deploy/wharf-operator", "--timeout=180s", timeout=240)

    def clean():
        return not copies_of(cluster, name) and all(
            name not in [e["name"] for e in (cluster.get("serviceaccount", "default", ns) or {}).get("imagePullSecrets", [])]
            for ns in namespaces)

    cluster.wait_until("copies and ServiceAccount entries to be gone", clean, timeout=90)
    for ns in namespaces:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
