"""Drift repair on the real cluster: every field the operator sets on a Registry's Service and
workload comes back within seconds after a hand edit, however it was made (merge patch, JSON
patch, `kubectl edit`, another server-side apply manager), and the operator settles without an
error loop. The list entries an edit adds beside ours (a second port, an extra volume) go too."""

import json
import os
import subprocess
import time
import uuid

import pytest

from support.operator import leader, metrics, operator_fixture, registry_ready as ready

operator = operator_fixture()

REPAIR_SECONDS = 30


@pytest.fixture(scope="module")
def namespace(cluster, operator):
    name = f"e2e-drift-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": "main"},
                   "spec": {"storage": {"emptyDir": {}}, "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}},
                  name)
    cluster.wait_until("the Registry to be Ready", lambda: ready(cluster, "main", name), timeout=180)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply_errors(cluster):
    values = metrics(cluster, leader(cluster))
    return sum(v for k, v in values.items()
               if k.startswith("wharf_operator_reconcile_errors_total") and 'controller="registry"' in k)


def settles_without_errors(cluster, namespace):
    """No failed reconcile over a period longer than the 10 s error retry, and Ready again."""
    before = apply_errors(cluster)
    time.sleep(12)
    assert apply_errors(cluster) == before, "the operator keeps failing after the repair"
    cluster.wait_until("Ready after the repair", lambda: ready(cluster, "main", namespace), timeout=120)


def service(cluster, namespace):
    return cluster.get("service", "main", namespace)["spec"]


def service_repaired(cluster, namespace):
    spec = service(cluster, namespace)
    ports = [(p["name"], p["port"], p.get("targetPort")) for p in spec["ports"]]
    return spec["type"] == "ClusterIP" and ports == [("registry", 5000, "registry")] and \
        spec["selector"] == {"app.kubernetes.io/name": "wharf", "app.kubernetes.io/instance": "main",
                             "app.kubernetes.io/component": "registry"}


def edit_with(cluster, namespace, kind, sed_expression, tmp_path):
    """`kubectl edit` with an editor that applies a sed expression, as a person would by hand."""
    editor = tmp_path / "editor.sh"
    editor.write_text(f"#!/bin/sh\nsed -i -e '{sed_expression}' \"$1\"\n")
    editor.chmod(0o755)
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "KUBE_EDITOR": str(editor), "EDITOR": str(editor)}
    p = subprocess.run([cluster.kubectl_bin, "edit", kind, "main", "-n", namespace], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 0 and "edited" in p.stdout, p.stdout + p.stderr


def another_manager(cluster, namespace, obj):
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e-intruder", "--force-conflicts", "-n", namespace,
                    "-f", "-", input=json.dumps(obj))


SERVICE_EDITS = {
    "merge patch": lambda c, ns, tmp: c.kubectl(
        "patch", "svc", "main", "-n", ns, "--type=merge",
        "-p", '{"spec":{"ports":[{"name":"registry","port":5999,"targetPort":5000}]}}'),
    "JSON patch": lambda c, ns, tmp: c.kubectl(
        "patch", "svc", "main", "-n", ns, "--type=json", "-p", '[{"op":"replace","path":"/spec/ports/0/port","value":5999}]'),
    "kubectl edit": lambda c, ns, tmp: edit_with(c, ns, "service", "s/^    port: 5000$/    port: 5999/", tmp),
    "another apply manager": lambda c, ns, tmp: another_manager(c, ns, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "main"},
        "spec": {"type": "NodePort", "ports": [{"name": "extra", "port": 5999, "targetPort": 5000, "protocol": "TCP"}]}}),
    "selector merge patch": lambda c, ns, tmp: c.kubectl(
        "patch", "svc", "main", "-n", ns, "--type=merge", "-p", '{"spec":{"selector":{"app":"tampered"}}}'),
    "type": lambda c, ns, tmp: c.kubectl(
        "patch", "svc", "main", "-n", ns, "--type=merge", "-p", '{"spec":{"type":"NodePort"}}'),
}


def edited_then_repaired(cluster, namespace, kind, edit, repaired, how, tmp_path):
    """Makes the edit, checks it landed, and waits for the repair and a quiet operator."""
    before = cluster.get(kind, "main", namespace)["metadata"]["resourceVersion"]
    edit(cluster, namespace, tmp_path)
    assert cluster.get(kind, "main", namespace)["metadata"]["resourceVersion"] != before, "the edit landed"
    cluster.wait_until(f"the {kind} to be repaired after {how}", lambda: repaired(cluster, namespace),
                       timeout=REPAIR_SECONDS, interval=0.5)
    settles_without_errors(cluster, namespace)
    assert repaired(cluster, namespace), cluster.get(kind, "main", namespace)["spec"]


@pytest.mark.parametrize("how", list(SERVICE_EDITS))
def test_a_hand_edited_service_comes_back(cluster, namespace, how, tmp_path):
    edited_then_repaired(cluster, namespace, "service", SERVICE_EDITS[how], service_repaired, how, tmp_path)


def pod_spec(cluster, namespace):
    return cluster.get("deployment", "main", namespace)["spec"]


def workload_repaired(cluster, namespace):
    spec = pod_spec(cluster, namespace)
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    security = container.get("securityContext", {})
    return (spec["replicas"] == 1
            and container["image"] == "wharf.local/wharf:dev"
            and container["args"] == ["registry", "--config", "/etc/wharf/config/config.yaml"]
            and sorted(v["name"] for v in pod["volumes"]) == ["admin-htpasswd", "config", "data"]
            and sorted(m["name"] for m in container["volumeMounts"]) == ["admin-htpasswd", "config", "data"]
            and security.get("privileged") is False and security.get("allowPrivilegeEscalation") is False
            and security.get("readOnlyRootFilesystem") is True)


WORKLOAD_EDITS = {
    "replicas (kubectl scale)": lambda c, ns, tmp: c.kubectl("scale", "deployment/main", "-n", ns, "--replicas=3"),
    "image (merge patch)": lambda c, ns, tmp: c.kubectl(
        "patch", "deployment", "main", "-n", ns, "--type=strategic",
        "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"registry","image":"wharf.local/wharf:tampered"}]}}}}'),
    "args (JSON patch)": lambda c, ns, tmp: c.kubectl(
        "patch", "deployment", "main", "-n", ns, "--type=json",
        "-p", '[{"op":"replace","path":"/spec/template/spec/containers/0/args","value":["registry","--storage","/tmp"]}]'),
    "an extra volume (JSON patch)": lambda c, ns, tmp: c.kubectl(
        "patch", "deployment", "main", "-n", ns, "--type=json", "-p", json.dumps([
            {"op": "add", "path": "/spec/template/spec/volumes/-", "value": {"name": "extra", "emptyDir": {}}},
            {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-",
             "value": {"name": "extra", "mountPath": "/extra"}}])),
    "security context (kubectl edit)": lambda c, ns, tmp: edit_with(
        c, ns, "deployment", "s/allowPrivilegeEscalation: false/allowPrivilegeEscalation: true/;"
                             "s/privileged: false/privileged: true/", tmp),
    "a renamed volume (another apply manager)": lambda c, ns, tmp: another_manager(c, ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "main"},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "wharf", "app.kubernetes.io/instance": "main",
                                              "app.kubernetes.io/component": "registry"}},
                 "template": {"metadata": {"labels": {"app.kubernetes.io/name": "wharf", "app.kubernetes.io/instance": "main",
                                                      "app.kubernetes.io/component": "registry"}},
                              "spec": {"containers": [{"name": "registry", "volumeMounts": [
                                  {"name": "scratch", "mountPath": "/scratch"}]}],
                                       "volumes": [{"name": "scratch", "emptyDir": {}}]}}}}),
}


@pytest.mark.parametrize("how", list(WORKLOAD_EDITS))
def test_a_hand_edited_workload_comes_back(cluster, namespace, how, tmp_path):
    edited_then_repaired(cluster, namespace, "deployment", WORKLOAD_EDITS[how], workload_repaired, how, tmp_path)
