"""The operator on a real cluster, installed the way users install it (`kubectl apply -k
config/default`) with the image `make image` builds: the sample Registry becomes Ready, serves
pushes and pulls through its Service, rolls out spec and secret changes, repairs drift, writes
nothing when nothing changed, cleans up after itself, and survives losing its leader."""

import json
import os
import subprocess
import tarfile
import time

import pytest

from support.operator import (OPERATOR_NS, admin_credentials, condition, holder, install, kill_hard, leader, metrics,
                              registry_ready as ready,
                              operator_pods, uninstall, writes)
from support.kube import PortForward
from support.oci import Client
from support.procs import REPO, run

SAMPLE = os.path.join(REPO, "config", "samples", "registry.yaml")
LEASE_SECONDS = 15


@pytest.fixture(scope="module")
def crds_absent(cluster):
    cluster.kubectl("delete", "-k", os.path.join(REPO, "config", "crd"), "--ignore-not-found", "--wait=true", "--timeout=60s",
                    check=False, timeout=120)
    cluster.wait_until("the CRD to be gone", lambda: cluster.get("crd", "registries.wharf.dev") is None, timeout=60)


def test_the_operator_refuses_to_start_without_its_crds(cluster, crds_absent, wharf_bin):
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    p = subprocess.run([wharf_bin, "operator", "--no-leader-election", "--registry-image", "x", "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode != 0
    assert "the Registry CRD (registries.wharf.dev) is not installed" in p.stderr, p.stderr


@pytest.fixture(scope="module")
def operator(cluster, wharf_image, crds_absent):
    """Installs the operator with `kubectl apply -k config/default`; removes it afterwards."""
    assert wharf_image == "wharf.local/wharf:dev", "config/default names the image `make image` builds"
    install(cluster)
    yield
    uninstall(cluster, "retentionpolicies", "imagepullcredentials")


def settled_metrics(cluster, pod, quiet=12.0, timeout=90):
    """Metrics once the operator has made no writes for `quiet` seconds: a rollout's last status
    updates land a moment after Ready, and a failed pass is retried 10 s later, so the quiet
    period is longer than that. An operator that keeps failing never settles, and fails here."""
    deadline = time.monotonic() + timeout
    previous = metrics(cluster, pod)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        current = metrics(cluster, pod)
        if writes(current) == writes(previous):
            return current
        previous = current
    raise AssertionError("the operator kept writing with nothing to do")


def reconciles(values):
    return values.get('wharf_operator_reconciles_total{controller="registry",result="success"}', 0)


def apply_sample(cluster, namespace, **spec_changes):
    text = open(SAMPLE).read()
    if not spec_changes:
        return cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=text)
    doc = json.loads(cluster.kubectl("create", "--dry-run=client", "-o", "json", "-f", "-", input=text).stdout)
    doc["metadata"].pop("namespace", None)
    doc["spec"].update(spec_changes)
    return cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(doc))


def skopeo(*args):
    return run(["skopeo", "--insecure-policy", *args], timeout=300)


def children(cluster, name, namespace):
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=wharf-operator"
    out = cluster.kubectl("get", "deploy,statefulset,service,serviceaccount,configmap,secret,ingress,pdb",
                          "-n", namespace, "-l", selector, "-o", "json").stdout
    return json.loads(out)["items"]


def registry_pods(cluster, name, namespace):
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}", "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def test_sample_registry_becomes_ready_and_serves_pushes_and_pulls(cluster, operator, namespace, busybox_image, tmp_path):
    started = time.monotonic()
    apply_sample(cluster, namespace)
    r = cluster.wait_until("the sample Registry to be Ready", lambda: ready(cluster, "main", namespace), timeout=180)
    print(f"\nkubectl apply -> Ready: {time.monotonic() - started:.1f}s")
    assert r["status"]["endpoint"] == f"main.{namespace}.svc:5000"
    assert r["status"]["readyReplicas"] == 1
    assert r["status"]["adminCredentialsSecretRef"] == {"name": "main-admin"}
    assert condition(r, "Reconciling")["status"] == "False" and condition(r, "Stalled")["status"] == "False"

    # Every child is controlled by the Registry; the pod runs wharf's image, hardened.
    uid = r["metadata"]["uid"]
    kinds = sorted(c["kind"] for c in children(cluster, "main", namespace))
    assert kinds == ["ConfigMap", "Secret", "Secret", "Service", "ServiceAccount", "StatefulSet"], kinds
    for child in children(cluster, "main", namespace):
        owners = child["metadata"]["ownerReferences"]
        assert [(o["uid"], o.get("controller")) for o in owners] == [(uid, True)], child["metadata"]["name"]
    [pod] = registry_pods(cluster, "main", namespace)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "wharf.local/wharf:dev"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    claim = cluster.get("pvc", "data-main-0", namespace)
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["resources"]["requests"]["storage"] == "5Gi"

    # Push through the Service with the generated admin credential, and pull back the same bytes.
    _, archive = busybox_image
    user, password = admin_credentials(cluster, "main", namespace)
    forward = PortForward(cluster, namespace, "main")
    try:
        dest = f"docker://{forward.address}/e2e/busybox:1"
        anonymous = subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                                    f"oci-archive:{archive}", dest], capture_output=True, text=True, timeout=120)
        output = (anonymous.stderr + anonymous.stdout).lower()
        assert anonymous.returncode != 0 and ("401" in output or "unauthorized" in output), "push without credentials must fail"
        skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", f"{user}:{password}",
               f"oci-archive:{archive}", dest)
        layout = tmp_path / "pulled"
        skopeo("copy", "--src-tls-verify=false", "--src-creds", f"{user}:{password}", dest, f"oci:{layout}")
    finally:
        forward.close()
    with tarfile.open(archive) as src:
        source_blobs = {m.name.split("/")[-1]: src.extractfile(m).read()
                        for m in src.getmembers() if m.name.startswith("blobs/sha256/") and m.isfile()}
    pulled_blobs = {f: (layout / "blobs" / "sha256" / f).read_bytes() for f in os.listdir(layout / "blobs" / "sha256")}
    assert pulled_blobs and set(pulled_blobs) <= set(source_blobs)
    for digest, data in pulled_blobs.items():
        assert data == source_blobs[digest], f"blob {digest} differs"


def test_spec_and_secret_changes_roll_out_and_drift_is_repaired(cluster, operator, namespace):
    apply_sample(cluster, namespace, storage={"emptyDir": {}})
    cluster.wait_until("Ready", lambda: ready(cluster, "main", namespace), timeout=180)
    [before] = registry_pods(cluster, "main", namespace)

    # A resources change rolls out a new pod and the Registry is Ready at the new generation.
    apply_sample(cluster, namespace, storage={"emptyDir": {}},
                 resources={"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "384Mi"}})
    r = cluster.wait_until("the rollout", lambda: ready(cluster, "main", namespace), timeout=180)
    assert r["metadata"]["generation"] == 2
    def rolled():
        pods = registry_pods(cluster, "main", namespace)
        return pods if len(pods) == 1 and pods[0]["metadata"]["uid"] != before["metadata"]["uid"] else None
    [after] = cluster.wait_until("the new pod", rolled, timeout=120)
    assert after["spec"]["containers"][0]["resources"]["requests"]["memory"] == "96Mi"

    # Deleting the admin Secret rotates the credential; the config hash rolls the pods to it.
    old_user, old_password = admin_credentials(cluster, "main", namespace)
    old_hash = after["metadata"]["annotations"]["wharf.dev/config-hash"]
    cluster.kubectl("delete", "secret", "main-admin", "-n", namespace)
    cluster.wait_until("a new admin Secret", lambda: cluster.get("secret", "main-admin", namespace), timeout=60)
    user, password = admin_credentials(cluster, "main", namespace)
    assert password != old_password
    def rotated():
        pods = registry_pods(cluster, "main", namespace)
        ok = len(pods) == 1 and pods[0]["metadata"]["annotations"]["wharf.dev/config-hash"] != old_hash
        return ok and ready(cluster, "main", namespace) and all(
            c.get("ready") for c in pods[0].get("status", {}).get("containerStatuses", []))
    cluster.wait_until("pods with the new credential", rotated, timeout=180)
    forward = PortForward(cluster, namespace, "main")
    try:
        def status(creds):
            p = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", creds, f"http://{forward.address}/v2/"])
            return p.stdout
        assert status(f"{user}:{password}") == "200"
        assert status(f"{old_user}:{old_password}") == "401"
    finally:
        forward.close()

    # Drift: a deleted Service comes back, an edited image is restored.
    service_uid = cluster.get("service", "main", namespace)["metadata"]["uid"]
    cluster.kubectl("delete", "service", "main", "-n", namespace)
    cluster.wait_until("the Service to be recreated", lambda: (cluster.get("service", "main", namespace) or {})
                       .get("metadata", {}).get("uid") not in (None, service_uid), timeout=60)
    cluster.kubectl("set", "image", "deployment/main", "registry=wharf.local/wharf:tampered", "-n", namespace)
    cluster.wait_until("the image to be restored", lambda: cluster.get("deployment", "main", namespace)["spec"]["template"]
                       ["spec"]["containers"][0]["image"] == "wharf.local/wharf:dev", timeout=60)
    cluster.wait_until("Ready after the repair", lambda: ready(cluster, "main", namespace), timeout=180)


def test_a_reconcile_with_nothing_to_do_writes_nothing(cluster, operator, namespace):
    apply_sample(cluster, namespace, storage={"emptyDir": {}}, tls={"selfSigned": {}})
    cluster.wait_until("Ready", lambda: ready(cluster, "main", namespace), timeout=180)
    pod = leader(cluster)
    before = settled_metrics(cluster, pod)
    for i in range(3):
        # An annotation changes the object (a watch event, so a full reconcile) but not the spec.
        cluster.kubectl("annotate", "registry", "main", "-n", namespace, f"e2e/poke={i}", "--overwrite")
        cluster.wait_until("the reconcile", lambda: reconciles(metrics(cluster, pod)) > reconciles(before) + i, timeout=30)
    after = metrics(cluster, pod)
    assert reconciles(after) >= reconciles(before) + 3
    if writes(after) != writes(before):
        # pytest shortens long assertion messages: the logs go to the output in full.
        print("\n".join(line for line in operator_logs(cluster).splitlines() if '"level":"INFO"' not in line))
    assert writes(after) == writes(before), {
        k: (before.get(k), v) for k, v in after.items() if "api_requests" in k or "errors" in k}
    print(f"\nAPI requests for {reconciles(after) - reconciles(before):.0f} no-op reconciles: "
          f"{sum(v for k, v in after.items() if 'api_requests' in k) - sum(v for k, v in before.items() if 'api_requests' in k):.0f}")


def test_self_signed_tls_serves_https_with_the_published_ca(cluster, operator, namespace, tmp_path):
    apply_sample(cluster, namespace, storage={"emptyDir": {}}, tls={"selfSigned": {}})
    cluster.wait_until("Ready", lambda: ready(cluster, "main", namespace), timeout=180)
    ca = cluster.get("configmap", "main-ca", namespace)["data"]["ca.crt"]
    (tmp_path / "ca.crt").write_text(ca)
    user, password = admin_credentials(cluster, "main", namespace)
    forward = PortForward(cluster, namespace, "main")
    try:
        port = forward.address.split(":")[1]
        p = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(tmp_path / "ca.crt"),
                 "-u", f"{user}:{password}", f"https://localhost:{port}/v2/"])
        assert p.stdout == "200"
        untrusted = subprocess.run(["curl", "-s", f"https://localhost:{port}/v2/"], capture_output=True, timeout=30)
        assert untrusted.returncode != 0, "the CA is our own: the system trust store must not accept it"
    finally:
        forward.close()


def test_server_side_apply_of_the_samples_is_stable_for_gitops(cluster, operator, namespace):
    samples = os.path.join(REPO, "config", "samples")
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-k", samples)
    cluster.wait_until("Ready", lambda: ready(cluster, "main", namespace), timeout=180)
    version = cluster.get("registry", "main", namespace)["metadata"]
    out = cluster.kubectl("apply", "--server-side", "-n", namespace, "-k", samples).stdout
    assert "serverside-applied" in out
    again = cluster.get("registry", "main", namespace)["metadata"]
    assert again["generation"] == version["generation"], "a second apply must not change the spec"
    diff = cluster.kubectl("diff", "--server-side", "-n", namespace, "-k", samples, check=False)
    assert diff.returncode == 0 and diff.stdout == "", diff.stdout + diff.stderr
    for kind, name in [("retentionpolicy", "ci-cleanup"), ("replicationpolicy", "promote-releases")]:
        policy = cluster.get(kind, name, namespace)
        assert policy["metadata"]["generation"] == 1, f"a second apply must not change the {kind}"
    cluster.wait_until("the sample ReplicationPolicy Ready", lambda: any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (cluster.get("replicationpolicy", "promote-releases", namespace).get("status") or {}).get("conditions", [])), timeout=120)
    # The sample ImagePullCredential is cluster-scoped: it does not go with the namespace. The
    # sample policy goes now, while the operator is there to revoke its robot.
    cluster.kubectl("delete", "imagepullcredential", "team-a", "--wait=true", "--timeout=60s", check=False)
    cluster.kubectl("delete", "retentionpolicy", "ci-cleanup", "-n", namespace, "--wait=true", "--timeout=60s")
    cluster.kubectl("delete", "replicationpolicy", "promote-releases", "-n", namespace, "--wait=true", "--timeout=60s")


def test_deleting_a_registry_removes_what_it_created_and_honours_the_volume_policy(cluster, operator, namespace):
    for name, policy in [("keep", "Retain"), ("drop", "Delete")]:
        cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": name},
                       "spec": {"storage": {"persistentVolume": {"size": "1Gi", "deletionPolicy": policy}},
                                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}}, namespace)
    for name in ("keep", "drop"):
        cluster.wait_until(f"{name} Ready", lambda: ready(cluster, name, namespace), timeout=180)
        assert cluster.get("pvc", f"data-{name}-0", namespace)
    for name in ("keep", "drop"):
        cluster.kubectl("delete", "registry", name, "-n", namespace, "--wait=true", "--timeout=60s", timeout=90)
    for name in ("keep", "drop"):
        cluster.wait_until(f"{name}'s children to be gone", lambda: not children(cluster, name, namespace)
                           and not registry_pods(cluster, name, namespace), timeout=120)
    cluster.wait_until("the Delete policy's claim to go", lambda: cluster.get("pvc", "data-drop-0", namespace) is None, timeout=120)
    assert cluster.get("pvc", "data-keep-0", namespace), "deletionPolicy Retain keeps the data"


def test_missing_secrets_and_unavailable_storage_stall_with_a_reason(cluster, operator, namespace):
    cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": "users"},
                   "spec": {"storage": {"emptyDir": {}}, "auth": {"htpasswdSecretRef": {"name": "team-users"}}}}, namespace)
    def stalled(name):
        c = condition(cluster.get("registry", name, namespace), "Stalled")
        return c if c and c["status"] == "True" else None
    c = cluster.wait_until("Stalled", lambda: stalled("users"), timeout=60)
    assert c["reason"] == "SecretNotFound" and "team-users" in c["message"]
    assert not children(cluster, "users", namespace), "nothing is deployed that could not start"
    # Creating the Secret un-stalls it (the operator looks again on its own).
    line = run(["htpasswd", "-nbB", "ci", "ci-password"]).stdout.strip()
    cluster.kubectl("create", "secret", "generic", "team-users", "-n", namespace, f"--from-literal=htpasswd={line}")
    cluster.wait_until("Ready once the Secret exists", lambda: ready(cluster, "users", namespace), timeout=180)
    forward = PortForward(cluster, namespace, "users")
    try:
        p = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "ci:ci-password", f"http://{forward.address}/v2/"])
        assert p.stdout == "200", "users from the referenced htpasswd Secret can log in"
    finally:
        forward.close()

    cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": "objects"},
                   "spec": {"storage": {"s3": {"bucket": "oci", "credentialsSecretRef": {"name": "s3"}}}}}, namespace)
    c = cluster.wait_until("Stalled", lambda: stalled("objects"), timeout=60)
    assert c["reason"] == "SecretNotFound" and "storage.s3.credentialsSecretRef" in c["message"], c
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=objects", "-o", "json").stdout
    assert any(e["reason"] == "SecretNotFound" for e in json.loads(events)["items"])


def operator_logs(cluster, tail=30):
    return "\n".join(cluster.kubectl("logs", "-n", OPERATOR_NS, p["metadata"]["name"], f"--tail={tail}", check=False).stdout
                     for p in operator_pods(cluster))


def test_a_standby_takes_over_when_the_leader_dies(cluster, operator, namespace):
    apply_sample(cluster, namespace, storage={"emptyDir": {}})
    cluster.wait_until("Ready", lambda: ready(cluster, "main", namespace), timeout=180)
    old = leader(cluster)
    old_identity = holder(cluster)
    killed = time.monotonic()
    kill_hard(cluster, old)
    # The standby, or the killed container restarted by the kubelet in the same pod (a new
    # process, so a new identity), whichever first sees the lease expire.
    cluster.wait_until("a new leader", lambda: holder(cluster) not in (None, old_identity) and leader(cluster),
                       timeout=LEASE_SECONDS * 3)
    took = time.monotonic() - killed
    new = leader(cluster)
    print(f"\nleader failover after a kill: {took:.1f}s (lease {LEASE_SECONDS}s), new leader {holder(cluster)}")
    assert took <= LEASE_SECONDS + 10
    if cluster.local:
        # SIGKILL gives no chance to release the lease: whoever takes over waited it out.
        assert took >= LEASE_SECONDS - 3, took
    # The new leader reconciles: a deleted Service comes back.
    cluster.kubectl("delete", "service", "main", "-n", namespace)
    try:
        cluster.wait_until("the new leader to repair drift", lambda: cluster.get("service", "main", namespace), timeout=60)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{operator_logs(cluster)}") from None
    assert metrics(cluster, new)["wharf_operator_leader"] == 1

    # A clean shutdown hands the lease over at once.
    cluster.kubectl("-n", OPERATOR_NS, "rollout", "status", "deploy/wharf-operator", "--timeout=120s", timeout=180)
    stopped = time.monotonic()
    cluster.kubectl("delete", "pod", new, "-n", OPERATOR_NS, "--wait=false")
    cluster.wait_until("the hand-over", lambda: (leader(cluster) or new) != new and leader(cluster), timeout=LEASE_SECONDS * 3)
    print(f"leader hand-over on SIGTERM: {time.monotonic() - stopped:.1f}s")
    assert time.monotonic() - stopped < LEASE_SECONDS


def test_scheduled_garbage_collection_runs_wharf_gc_and_reports_in_status(cluster, operator, namespace):
    apply_sample(cluster, namespace, storage={"emptyDir": {}},
                 garbageCollection={"schedule": "0 3 * * *", "minBlobAge": "0s"})
    cluster.wait_until("Ready", lambda: ready(cluster, "main", namespace), timeout=180)
    cron = cluster.get("cronjob", "main-gc", namespace)
    assert cron and cron["spec"]["concurrencyPolicy"] == "Forbid"
    user, password = admin_credentials(cluster, "main", namespace)
    forward = PortForward(cluster, namespace, "main")
    try:
        c = Client(forward.address, user, password)
        for _ in range(3):
            status, _, body = c.push_blob("scratch/orphans", os.urandom(1000))
            assert status == 201, body
        c.close()
        # Run the schedule now, as `kubectl create job --from` does for any CronJob.
        cluster.kubectl("create", "job", "--from=cronjob/main-gc", "gc-now", "-n", namespace)

        def reported():
            run = (cluster.get("registry", "main", namespace) or {}).get("status", {}).get("lastGarbageCollection") or {}
            return run if run.get("jobName") == "gc-now" else None

        run = cluster.wait_until("the run in status", reported, timeout=180)
        assert run["succeeded"] is True and run["blobsDeleted"] == 3 and run["bytesFreed"] == 3000, run
        c = Client(forward.address, user, password)
        status, _, body = c.request("GET", "/admin/v1/gc")
        assert status == 200 and json.loads(body)["last"]["blobsDeleted"] == 3
        c.close()
    finally:
        forward.close()
