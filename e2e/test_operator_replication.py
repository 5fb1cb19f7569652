"""ReplicationPolicy on the real cluster: the operator runs `wharf replicate` Jobs with robots it
mints on wharf Registries, on push, on request and (by CronJob) on schedule, and reports each
run in status, events and metrics.

Two Registries, `ci` and `prod`. A push to `ci` reaches `prod` within seconds through the
push event path (registry → operator endpoint → scoped Job); the latency is measured and
printed. A requested run copies from `ci` as a plain OCI endpoint with a dockerconfigjson
Secret. Bad input (a Secret that does not exist, wrong credentials) shows in status with a
reason, nothing half-written arrives, and deleting a policy revokes its robots."""

import json
import os
import time
import uuid

import pytest

from support.kube import PortForward, dockerconfigjson
from support.oci import OCI_MANIFEST, Client
from support.operator import admin_credentials, condition, leader, metrics, operator_fixture, operator_pods, registry_ready

operator = operator_fixture("replicationpolicies", "registries")


def policy(name, spec):
    return {"apiVersion": "wharf.dev/v1alpha1", "kind": "ReplicationPolicy", "metadata": {"name": name}, "spec": spec}


def status_of(cluster, name, namespace):
    return (cluster.get("replicationpolicy", name, namespace) or {}).get("status") or {}


def finished_run(cluster, namespace, name, after=None, timeout=180):
    """Waits for status.lastRun to name a run other than `after`; returns it."""
    def done():
        run = status_of(cluster, name, namespace).get("lastRun")
        return run if run and run["jobName"] != after else None
    try:
        return cluster.wait_until(f"a finished run of {name}", done, timeout=timeout)
    except AssertionError:
        jobs = cluster.kubectl("get", "jobs,pods,events", "-n", namespace, check=False).stdout
        raise AssertionError(f"no finished run: {cluster.get('replicationpolicy', name, namespace)}\n{jobs}")


def manifest_digest(client, repo, tag):
    status, headers, _ = client.request("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    return headers.get("docker-content-digest") if status == 200 else None


def robots(client):
    return {r["name"] for r in json.loads(client.request("GET", "/admin/v1/robots")[2])["robots"]}


@pytest.fixture(scope="module")
def setup(cluster, operator):
    namespace = f"e2e-repl-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    for name in ("ci", "prod"):
        cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": name},
                       "spec": {"storage": {"emptyDir": {}},
                                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}}, namespace)
    for name in ("ci", "prod"):
        cluster.wait_until(f"{name} Ready", lambda: registry_ready(cluster, name, namespace), timeout=180)
    forwards = {name: PortForward(cluster, namespace, name) for name in ("ci", "prod")}
    clients = {name: Client(forwards[name].address, *admin_credentials(cluster, name, namespace)) for name in forwards}
    yield namespace, clients
    for c in clients.values():
        c.close()
    for f in forwards.values():
        f.close()
    cluster.kubectl("delete", "replicationpolicy", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_push_reaches_the_destination_within_seconds_and_is_reported(cluster, setup):
    namespace, clients = setup
    ci, prod = clients["ci"], clients["prod"]
    cluster.apply(policy("promote", {
        "source": {"registryRef": {"name": "ci"}}, "destination": {"registryRef": {"name": "prod"}},
        "rules": [{"repositories": ["team/**"], "tags": {"include": ["v*"]}}],
        "trigger": {"onPush": True}}), namespace)
    cluster.wait_until("the policy Ready", lambda: (condition(cluster.get("replicationpolicy", "promote", namespace), "Ready")
                                                     or {}).get("status") == "True", timeout=120)
    # The robots it minted, scoped to each side.
    for side in ("source", "destination"):
        secret = cluster.get("secret", f"promote-repl-{side}", namespace)
        assert secret["type"] == "kubernetes.io/basic-auth"
        owner = secret["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("ReplicationPolicy", "promote")
    assert any(n.startswith("rs-promote-") for n in robots(ci))
    assert any(n.startswith("rd-promote-") for n in robots(prod))

    # Let the registry pods pick the events endpoint up: the first push after Ready is the test.
    _, digest = ci.push_image("team/app", "v1.0.0", [os.urandom(1024)])
    pushed = time.monotonic()
    cluster.wait_until("team/app:v1.0.0 at prod", lambda: manifest_digest(prod, "team/app", "v1.0.0") == digest, timeout=90)
    latency = time.monotonic() - pushed
    print(f"\npush-to-destination latency: {latency:.1f} s")
    assert latency < 60, f"a push took {latency:.1f} s to reach the destination"
    run = finished_run(cluster, namespace, "promote")
    assert run["jobName"].startswith("promote-push-") and run["succeeded"], run
    assert (run["tagsSelected"], run["copied"]) == (1, 1), run
    last = condition(cluster.get("replicationpolicy", "promote", namespace), "LastRunSucceeded")
    assert last["status"] == "True" and "1 of 1 tags copied" in last["message"], last
    job = cluster.get("job", run["jobName"], namespace)
    assert job["metadata"]["annotations"]["wharf.dev/pushed"] == f"team/app:v1.0.0@{digest}"
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             "involvedObject.kind=ReplicationPolicy,involvedObject.name=promote", "-o", "json").stdout
    assert any(e["reason"] == "RunFinished" for e in json.loads(events)["items"])

    # A tag no rule selects starts nothing; the operator counts the event as ignored.
    ci.push_image("team/app", "latest", [os.urandom(512)])
    time.sleep(5)
    jobs = json.loads(cluster.kubectl("get", "jobs", "-n", namespace, "-l", "wharf.dev/replication-policy=promote",
                                      "-o", "json").stdout)["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert manifest_digest(prod, "team/app", "latest") is None
    counted = lambda: sum(  # noqa: E731
        metrics(cluster, pod["metadata"]["name"]).get('wharf_operator_push_events_total{result="ignored"}', 0)
        for pod in operator_pods(cluster))
    cluster.wait_until("the ignored push counted", lambda: counted() >= 1, timeout=30)
    assert leader(cluster)


def test_a_requested_run_from_an_endpoint_with_a_dockerconfigjson_secret(cluster, setup):
    namespace, clients = setup
    ci, prod = clients["ci"], clients["prod"]
    _, digest = ci.push_image("team/api", "v2.0.0", [os.urandom(2048)])
    ci.push_image("scratch/x", "v1", [os.urandom(64)])
    user, password = admin_credentials(cluster, "ci", namespace)
    host = f"ci.{namespace}.svc:5000"
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ci-pull"},
                   "type": "kubernetes.io/dockerconfigjson",
                   "data": {".dockerconfigjson": dockerconfigjson(host, user, password)}},
                  namespace)
    cluster.apply(policy("backup", {
        "source": {"endpoint": {"url": f"http://{host}", "credentialsSecretRef": {"name": "ci-pull"}}},
        "destination": {"registryRef": {"name": "prod"}, "repositoryPrefix": "backup/"},
        "rules": [{"repositories": ["team/api"]}]}), namespace)
    cluster.wait_until("backup Ready", lambda: (condition(cluster.get("replicationpolicy", "backup", namespace), "Ready")
                                                 or {}).get("status") == "True", timeout=120)
    assert cluster.get("cronjob", "backup-replicate", namespace) is None, "no schedule, no CronJob"
    cluster.kubectl("annotate", "replicationpolicy", "backup", "-n", namespace, "--overwrite",
                    f"wharf.dev/requested-at={time.time():.6f}")
    run = finished_run(cluster, namespace, "backup")
    assert run["succeeded"] and run["copied"] == 1 and run["failed"] == 0, run
    assert manifest_digest(prod, "backup/team/api", "v2.0.0") == digest
    assert manifest_digest(prod, "backup/scratch/x", "v1") is None
    # The second request copies nothing: every blob is there.
    cluster.kubectl("annotate", "replicationpolicy", "backup", "-n", namespace, "--overwrite",
                    f"wharf.dev/requested-at={time.time():.6f}")
    again = finished_run(cluster, namespace, "backup", after=run["jobName"])
    assert (again["copied"], again["skipped"], again.get("blobsCopied", 0)) == (0, 1, 0), again
    # A schedule appears as a CronJob running the same pod.
    spec = cluster.get("replicationpolicy", "backup", namespace)["spec"]
    spec["trigger"] = {"schedule": "0 3 * * *", "suspend": True}
    cluster.apply(policy("backup", spec), namespace)
    cron = cluster.wait_until("the CronJob", lambda: cluster.get("cronjob", "backup-replicate", namespace), timeout=60)
    assert cron["spec"]["suspend"] is True and cron["spec"]["schedule"] == "0 3 * * *"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "replicate" and "--source-credentials" in container["args"]
    assert password not in json.dumps(cron), "a credential is in the CronJob"


def test_bad_input_shows_in_status_and_deleting_revokes_the_robots(cluster, setup):
    namespace, clients = setup
    ci, prod = clients["ci"], clients["prod"]
    cluster.apply(policy("no-secret", {
        "source": {"endpoint": {"url": f"http://ci.{namespace}.svc:5000", "credentialsSecretRef": {"name": "absent"}}},
        "destination": {"registryRef": {"name": "prod"}}, "rules": [{"repositories": ["**"]}]}), namespace)
    stalled = cluster.wait_until("no-secret Stalled", lambda: (lambda c: c if c and c["status"] == "True" else None)(
        condition(cluster.get("replicationpolicy", "no-secret", namespace), "Stalled")), timeout=60)
    assert stalled["reason"] == "SecretNotFound" and "absent" in stalled["message"], stalled

    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong"}, "type": "kubernetes.io/basic-auth",
                   "stringData": {"username": "admin", "password": "not-the-password"}}, namespace)
    cluster.apply(policy("wrong-keys", {
        "source": {"endpoint": {"url": f"http://ci.{namespace}.svc:5000", "credentialsSecretRef": {"name": "wrong"}}},
        "destination": {"registryRef": {"name": "prod"}, "repositoryPrefix": "wrong/"},
        "rules": [{"repositories": ["team/app"]}]}), namespace)
    cluster.wait_until("wrong-keys Ready", lambda: (condition(cluster.get("replicationpolicy", "wrong-keys", namespace), "Ready")
                                                     or {}).get("status") == "True", timeout=120)
    cluster.kubectl("annotate", "replicationpolicy", "wrong-keys", "-n", namespace, "--overwrite",
                    f"wharf.dev/requested-at={time.time():.6f}")
    run = finished_run(cluster, namespace, "wrong-keys")
    assert not run["succeeded"] and run["failed"] >= 1 and run.get("copied", 0) == 0, run
    text = json.dumps(run)
    assert "refused the credentials" in text and "not-the-password" not in text, run
    obj = cluster.get("replicationpolicy", "wrong-keys", namespace)
    assert condition(obj, "LastRunSucceeded")["status"] == "False"
    assert condition(obj, "Ready")["reason"] == "LastRunFailed"
    status, _, body = prod.request("GET", "/v2/_catalog")
    assert not any(r.startswith("wrong/") for r in json.loads(body)["repositories"]), body

    # Deleting a policy revokes the robots it minted, on both Registries.
    assert any(n.startswith("rs-promote-") for n in robots(ci))
    cluster.kubectl("delete", "replicationpolicy", "promote", "-n", namespace, "--wait=true", "--timeout=60s")
    assert not any(n.startswith("rs-promote-") for n in robots(ci))
    assert not any(n.startswith("rd-promote-") for n in robots(prod))
