"""The cluster behaves like a real one: workloads run from locally built images, Services
resolve by DNS name and route by ClusterIP, logs and exec work, namespaces finalize, the kubelet
pulls from a registry with an imagePullSecret, and teardown leaves nothing behind."""

import json
import os
import subprocess

import pytest

from support.kube import CLUSTER_DIR, dockerconfigjson
from support.procs import REPO, free_port, run
from support.registry import Registry

RESTRICTED = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def registry_deployment(image):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "smoke-registry"},
        "spec": {
            "selector": {"matchLabels": {"app": "smoke-registry"}},
            "template": {
                "metadata": {"labels": {"app": "smoke-registry"}},
                "spec": {
                    "securityContext": RESTRICTED,
                    "containers": [{
                        "name": "registry",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["registry", "--storage", "/data", "--listen", ":5000"],
                        "ports": [{"containerPort": 5000}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 5000}, "periodSeconds": 1},
                        "securityContext": CONTAINER_RESTRICTED,
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def client_pod(image, name="client", extra=None):
    spec = {
        "securityContext": {**RESTRICTED, "runAsUser": 65532},
        "containers": [{
            "name": "client", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"], "securityContext": CONTAINER_RESTRICTED,
        }],
        "terminationGracePeriodSeconds": 1,
    }
    spec.update(extra or {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_workload_service_dns_logs_exec_and_namespace_finalization(cluster, namespace, wharf_image, busybox_image):
    busybox, _ = busybox_image
    cluster.apply(registry_deployment(wharf_image), namespace)
    cluster.apply({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "smoke-registry"},
        "spec": {"selector": {"app": "smoke-registry"}, "ports": [{"port": 5000, "targetPort": 5000}]},
    }, namespace)
    cluster.apply(client_pod(busybox), namespace)
    cluster.wait("condition=Available", "deployment/smoke-registry", namespace)
    cluster.wait("condition=Ready", "pod/client", namespace)

    by_dns = cluster.kubectl("exec", "-n", namespace, "client", "--", "wget", "-qO-",
                             f"http://smoke-registry.{namespace}.svc.cluster.local:5000/v2/")
    assert by_dns.stdout.strip() == "{}", by_dns
    cluster_ip = cluster.get("service", "smoke-registry", namespace)["spec"]["clusterIP"]
    by_ip = cluster.kubectl("exec", "-n", namespace, "client", "--", "wget", "-qO-",
                            f"http://{cluster_ip}:5000/v2/_catalog")
    assert json.loads(by_ip.stdout) == {"repositories": []}

    logs = cluster.kubectl("logs", "-n", namespace, "deployment/smoke-registry").stdout
    serving = [json.loads(line) for line in logs.splitlines() if '"registry serving"' in line]
    assert serving and serving[0]["listen"] == "0.0.0.0:5000", logs

    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    cluster.wait_until(
        f"namespace {namespace} to finalize",
        lambda: cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0,
        timeout=180,
    )


def test_kubelet_pulls_from_a_registry_on_the_node_with_an_image_pull_secret(cluster, namespace, wharf_bin, busybox_image):
    if not cluster.local:
        pytest.skip("needs a registry on the node: only the local cluster's node is this machine")
    _, archive = busybox_image
    registry = Registry(wharf_bin, host=cluster.node_ip, port=free_port(), users={"puller": "pull-secret-pw"}).start()
    try:
        cluster.trust_http_registry(registry.address)
        image = f"{registry.address}/e2e/private-busybox:1"
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "puller:pull-secret-pw",
             f"oci-archive:{archive}", f"docker://{image}"])
        cluster.apply({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": dockerconfigjson(registry.address, "puller", "pull-secret-pw")},
        }, namespace)
        with_secret = client_pod(image, "with-secret", {"imagePullSecrets": [{"name": "pull"}]})
        with_secret["spec"]["containers"][0]["imagePullPolicy"] = "Always"
        without = client_pod(image, "without-secret")
        without["spec"]["containers"][0]["imagePullPolicy"] = "Always"
        cluster.apply(with_secret, namespace)
        cluster.apply(without, namespace)
        cluster.wait("condition=Ready", "pod/with-secret", namespace)

        def pull_failure():
            pod = cluster.get("pod", "without-secret", namespace)
            for status in pod.get("status", {}).get("containerStatuses", []):
                waiting = status.get("state", {}).get("waiting", {})
                if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                    return waiting
            return None

        waiting = cluster.wait_until("the pod without a pull secret to fail pulling", pull_failure, timeout=90)
        events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                 "involvedObject.name=without-secret", "-o", "json").stdout
        assert "401" in events or "nauthorized" in events, (waiting, events)
    finally:
        registry.cleanup()


@pytest.mark.last
def test_cluster_down_leaves_nothing_behind(cluster):
    if not cluster.local:
        pytest.skip("only the local cluster is torn down by this test run")
    pid_dir = os.path.join(CLUSTER_DIR, "pids")
    pids = [int(open(os.path.join(pid_dir, f)).read()) for f in os.listdir(pid_dir)]
    assert len(pids) == 8, f"expected the 8 processes up.sh starts, found {os.listdir(pid_dir)}"
    netns_before = open(os.path.join(CLUSTER_DIR, "netns.before")).read().split()

    run([os.path.join(REPO, "e2e", "cluster", "down.sh")], timeout=600)

    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert not alive, f"processes still running after cluster-down: {alive}"
    shims = subprocess.run(["pgrep", "-f", f"containerd-shim.*{CLUSTER_DIR}"], capture_output=True, text=True).stdout
    assert not shims.strip(), f"containerd shims left: {shims}"
    assert subprocess.run(["ip", "link", "show", "wharf0"], capture_output=True).returncode != 0, "bridge wharf0 left"
    rules = run(["iptables-save"]).stdout
    leftovers = [line for line in rules.splitlines() if "KUBE-" in line or "CNI-" in line]
    assert not leftovers, f"iptables rules left: {leftovers[:5]}"
    netns = os.listdir("/var/run/netns") if os.path.isdir("/var/run/netns") else []
    assert sorted(set(netns) - set(netns_before)) == [], f"network namespaces left: {netns}"
    mounts = [line.split()[1] for line in open("/proc/self/mounts") if CLUSTER_DIR in line]
    assert not mounts, f"mounts left: {mounts}"
    assert not os.path.exists(CLUSTER_DIR), "state directory left"
