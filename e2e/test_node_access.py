"""A Registry's `nodeAccess` on the real cluster: the kubelet pulls images named by the Registry's
Service address (`<name>.<namespace>.svc:<port>/...`), which containerd on a node can neither
resolve nor, with `tls.selfSigned`, trust by itself, because a DaemonSet writes containerd's
hosts.toml (and the CA) for it. The configuration goes when the Registry, or its nodeAccess,
goes. Nothing is written by the test itself into the node's containerd configuration."""

import json
import os
import uuid


from support.kube import CLUSTER_DIR, PortForward, dockerconfigjson
from support.operator import admin_credentials, condition, module_namespace, operator_fixture, registry_ready as ready
from support.procs import run

operator = operator_fixture()


def certs_dir(cluster):
    """containerd's config_path on the nodes: the local cluster's own, or the usual one (kind
    with `config_path = "/etc/containerd/certs.d"`, as kind's local-registry guide sets it)."""
    return os.path.join(CLUSTER_DIR, "certs.d") if cluster.local else "/etc/containerd/certs.d"


namespace = module_namespace("e2e-node")


def deploy(cluster, namespace, name, **spec):
    spec = {"storage": {"emptyDir": {}}, "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            "nodeAccess": {"certsDir": certs_dir(cluster)}, **spec}
    cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": name}, "spec": spec},
                  namespace)
    return cluster.wait_until(f"{name} to be Ready", lambda: ready(cluster, name, namespace), timeout=180)


def push(cluster, namespace, name, archive, user, password, repo="team/app:1"):
    forward = PortForward(cluster, namespace, name)
    try:
        run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", f"{user}:{password}",
             f"oci-archive:{archive}", f"docker://{forward.address}/{repo}"], timeout=300)
    finally:
        forward.close()


def run_pod(cluster, namespace, pod, image, pull_secret=None):
    spec = {"containers": [{"name": "app", "image": image, "command": ["sleep", "3600"], "imagePullPolicy": "Always"}],
            "terminationGracePeriodSeconds": 0}
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": pull_secret}]
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod}, "spec": spec}, namespace)

    def running():
        p = cluster.get("pod", pod, namespace) or {}
        return p.get("status", {}).get("phase") == "Running"
    try:
        cluster.wait_until(f"pod {pod} to pull {image} and run", running, timeout=120)
    except AssertionError:
        events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={pod}",
                                 "-o", "custom-columns=R:.reason,M:.message", check=False).stdout
        raise AssertionError(f"pod {pod} did not run:\n{events}")


def host_dirs(cluster, registry_name, namespace):
    d = certs_dir(cluster)
    return [n for n in os.listdir(d) if os.path.exists(os.path.join(d, n, ".wharf-owner"))
            and open(os.path.join(d, n, ".wharf-owner")).read().strip() == f"{namespace}/{registry_name}"]


def test_the_kubelet_pulls_by_service_name_over_plain_http(cluster, namespace, busybox_image):
    r = deploy(cluster, namespace, "plain", auth={"anonymousPull": True})
    endpoint = f"plain.{namespace}.svc:5000"
    ip = cluster.get("service", "plain", namespace)["spec"]["clusterIP"]
    access = r["status"]["nodeAccess"]
    assert access["hosts"] == [endpoint, f"plain.{namespace}.svc.cluster.local:5000", f"{ip}:5000"], access
    assert access["configured"] == access["nodes"] >= 1, access
    daemon_set = cluster.get("daemonset", "plain-node-access", namespace)
    assert daemon_set["metadata"]["ownerReferences"][0]["name"] == "plain"
    push(cluster, namespace, "plain", busybox_image[1], *admin_credentials(cluster, "plain", namespace))
    run_pod(cluster, namespace, "by-name", f"{endpoint}/team/app:1")
    run_pod(cluster, namespace, "by-long-name", f"plain.{namespace}.svc.cluster.local:5000/team/app:1")
    if cluster.local:
        toml = open(os.path.join(certs_dir(cluster), endpoint, "hosts.toml")).read()
        assert f'[host."http://{ip}:5000"]' in toml, toml

    # The Registry goes: so does the nodes' configuration for it.
    cluster.kubectl("delete", "registry", "plain", "-n", namespace, "--wait=true", "--timeout=60s")
    cluster.wait_until("the DaemonSet to go", lambda: cluster.get("daemonset", "plain-node-access", namespace) is None,
                       timeout=60)
    if cluster.local:
        cluster.wait_until("the hosts.toml files to be removed", lambda: not host_dirs(cluster, "plain", namespace),
                           timeout=60)


def test_the_kubelet_pulls_from_a_self_signed_registry_with_credentials(cluster, namespace, busybox_image):
    r = deploy(cluster, namespace, "secure", tls={"selfSigned": {}})
    endpoint = r["status"]["endpoint"]
    assert endpoint == f"secure.{namespace}.svc:5000"
    user, password = admin_credentials(cluster, "secure", namespace)
    push(cluster, namespace, "secure", busybox_image[1], user, password)
    # The certificate names the cluster IP, which is where containerd connects.
    ip = cluster.get("service", "secure", namespace)["spec"]["clusterIP"]
    tls = cluster.get("secret", "secure-tls", namespace)
    assert ip in tls["metadata"]["annotations"]["wharf.dev/dns-names"].split(","), tls["metadata"]["annotations"]
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull"},
                   "type": "kubernetes.io/dockerconfigjson",
                   "data": {".dockerconfigjson": dockerconfigjson(endpoint, user, password)}}, namespace)
    run_pod(cluster, namespace, "tls", f"{endpoint}/team/app:1", pull_secret="pull")
    if cluster.local:
        [ca_file] = [f for f in os.listdir(os.path.join(certs_dir(cluster), endpoint)) if f.endswith(".crt")]
        ca = open(os.path.join(certs_dir(cluster), endpoint, ca_file)).read()
        assert ca == cluster.get("configmap", "secure-ca", namespace)["data"]["ca.crt"]

    # Without credentials the pull is refused: node access opens no door the Registry keeps shut.
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "no-credentials"},
                   "spec": {"containers": [{"name": "app", "image": f"{endpoint}/team/app:1", "command": ["sleep", "1"],
                                            "imagePullPolicy": "Always"}], "terminationGracePeriodSeconds": 0}},
                  namespace)
    def refused():
        p = cluster.get("pod", "no-credentials", namespace) or {}
        waiting = (p.get("status", {}).get("containerStatuses") or [{}])[0].get("state", {}).get("waiting", {})
        return waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") and waiting
    waiting = cluster.wait_until("the anonymous pull to be refused", refused, timeout=90)
    assert "401" in waiting.get("message", "") or "unauthorized" in waiting.get("message", "").lower(), waiting

    # Turning nodeAccess off removes the DaemonSet and the files, and the Registry stays Ready.
    patch = json.dumps([{"op": "remove", "path": "/spec/nodeAccess"}])
    cluster.kubectl("patch", "registry", "secure", "-n", namespace, "--type=json", "-p", patch)
    cluster.wait_until("the DaemonSet to go", lambda: cluster.get("daemonset", "secure-node-access", namespace) is None,
                       timeout=60)
    r = cluster.wait_until("Ready without nodeAccess", lambda: ready(cluster, "secure", namespace), timeout=120)
    assert "nodeAccess" not in r["status"]
    if cluster.local:
        cluster.wait_until("the hosts.toml files to be removed", lambda: not host_dirs(cluster, "secure", namespace),
                           timeout=60)


def test_a_namespace_that_forbids_host_paths_stalls_with_the_admission_message(cluster, operator):
    name = f"e2e-node-psa-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}})
    try:
        cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": "guarded"},
                       "spec": {"storage": {"emptyDir": {}}, "nodeAccess": {"certsDir": certs_dir(cluster)},
                                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}}, name)

        def stalled():
            r = cluster.get("registry", "guarded", name)
            c = condition(r, "Stalled")
            return c if c and c["status"] == "True" else None
        c = cluster.wait_until("the Registry to stall on its node access", stalled, timeout=120)
        assert c["reason"] == "NodeAccessFailed", c
        assert "PodSecurity" in c["message"] and "hostPath" in c["message"], c["message"]
        # The registry itself runs: only the node access is refused.
        r = cluster.get("registry", "guarded", name)
        assert r["status"]["readyReplicas"] == 1, r["status"]
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
