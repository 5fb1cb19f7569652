"""RetentionPolicy on the real cluster. A Registry holds a realistic history: 3 repositories ×
60 tags (releases, main-branch builds, PR builds), plus `latest`, untagged manifests and
signature referrers. A Pod runs one PR build and a scaled-down Deployment names another.

A dry run started through `wharf.dev/requested-at` lists exactly the expected candidates in
status and in the report ConfigMap and deletes nothing; a real run requested the same way
deletes exactly those, while releases, protected tags and what the cluster uses still pull;
garbage collection follows and frees the bytes, reported in status. A policy with more
candidates than `maxDeletionsPerRun` deletes nothing and reports Stalled. Deleting a policy
revokes its robot account."""

import json
import os
import secrets
import time
import uuid

import pytest

from support.oci import OCI_MANIFEST, Client, answers, push_signature
from support.operator import admin_credentials, condition, operator_fixture
from support.procs import run

REPOS = ["ci/api", "ci/web", "ci/worker"]
RELEASES = [f"v1.{n}.0" for n in range(10)]
MAIN_BUILDS = 30
PR_BUILDS = 20
KEPT_MAIN = 5
IN_USE_BY_POD = ("ci/web", "pr-7")
IN_USE_BY_TEMPLATE = ("ci/api", "pr-3")


operator = operator_fixture("retentionpolicies")


class History:
    """What was pushed: digests and manifest bytes by (repository, tag), and the rest."""

    def __init__(self):
        self.digest, self.manifest = {}, {}
        self.untagged = {r: [] for r in REPOS}
        self.signatures = {}


def push_history(client, busybox_archive, address, admin):
    h = History()
    for repo in REPOS:
        tags = RELEASES + [f"main-{secrets.token_hex(4)[:7]}" for _ in range(MAIN_BUILDS)] + \
            [f"pr-{n}" for n in range(1, PR_BUILDS + 1)]
        for tag in tags:
            if (repo, tag) == IN_USE_BY_POD:
                # A real image, so the kubelet can run it.
                run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds",
                     f"{admin[0]}:{admin[1]}", f"oci-archive:{busybox_archive}", f"docker://{address}/{repo}:{tag}"],
                    timeout=300)
                status, headers, body = client.request("GET", f"/v2/{repo}/manifests/{tag}",
                                                       headers={"Accept": OCI_MANIFEST})
                assert status == 200, body
                h.manifest[repo, tag], h.digest[repo, tag] = body, headers["docker-content-digest"]
            else:
                h.manifest[repo, tag], h.digest[repo, tag] = client.push_image(repo, tag, [os.urandom(256)])
        latest = h.manifest[repo, RELEASES[-1]]
        assert client.request("PUT", f"/v2/{repo}/manifests/latest", latest, {"Content-Type": OCI_MANIFEST})[0] == 201
        h.digest[repo, "latest"] = h.digest[repo, RELEASES[-1]]
        for n in range(2):
            _, digest = client.push_image(repo, f"scratch-{n}", [os.urandom(256)])
            assert client.request("DELETE", f"/v2/{repo}/manifests/scratch-{n}")[0] == 202
            h.untagged[repo].append(digest)
    for tag in ("v1.0.0", "pr-1"):
        h.signatures[tag] = push_signature(client, "ci/api", h.digest["ci/api", tag], h.manifest["ci/api", tag])
    return h


def expected_candidates(client, h):
    """What the policy below deletes, worked out from the registry's own listing: the rules
    applied by hand, independently of the evaluator. Returns the manifests' digests and the
    tags (with their digests) per repository, and every tag each repository has now."""
    expected, tags, before = {}, {}, {}
    for repo in REPOS:
        status, _, body = client.request("GET", f"/admin/v1/manifests?repository={repo}")
        assert status == 200, body
        listing = json.loads(body)["manifests"]
        pushed = {t: m["pushedAt"] for m in listing for t in m["tags"]}
        mains = sorted((t for t in pushed if t.startswith("main-")), key=lambda t: (-pushed[t], t))
        in_use = {tag for (r, tag) in (IN_USE_BY_POD, IN_USE_BY_TEMPLATE) if r == repo}
        doomed = mains[KEPT_MAIN:] + [f"pr-{n}" for n in range(1, PR_BUILDS + 1) if f"pr-{n}" not in in_use]
        digests = [h.digest[repo, t] for t in doomed] + h.untagged[repo]
        if repo == "ci/api":
            digests.append(h.signatures["pr-1"])
        expected[repo] = sorted(digests)
        tags[repo] = {t: h.digest[repo, t] for t in doomed}
        before[repo] = set(pushed)
    return expected, tags, before


def tag_list(client, repo):
    status, _, body = client.request("GET", f"/v2/{repo}/tags/list")
    assert status == 200, body
    return set(json.loads(body)["tags"] or [])


@pytest.fixture(scope="module")
def setup(cluster, operator, busybox_image):
    if not cluster.local:
        pytest.skip("the kubelet must pull from the Registry's cluster IP over plain HTTP: local cluster only")
    namespace = f"e2e-rp-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.apply({"apiVersion": "wharf.dev/v1alpha1", "kind": "Registry", "metadata": {"name": "main"},
                   "spec": {"storage": {"emptyDir": {}}, "auth": {"anonymousPull": True},
                            # Scheduled collection off; the policy's collection uses these settings.
                            "garbageCollection": {"schedule": "0 3 * * *", "suspend": True, "minBlobAge": "0s"}}},
                  namespace)
    cluster.wait_until("the Registry to be Ready", lambda: (condition(cluster.get("registry", "main", namespace), "Ready")
                                                              or {}).get("status") == "True", timeout=180)
    address = f"{cluster.get('service', 'main', namespace)['spec']['clusterIP']}:5000"
    cluster.trust_http_registry(address)
    admin = admin_credentials(cluster, "main", namespace)
    cluster.wait_until("the Service to answer", lambda: answers(address, 200, 401), timeout=60)
    client = Client(address, *admin)
    history = push_history(client, busybox_image[1], address, admin)
    # What the cluster uses: a running Pod (by tag; the kubelet resolves its digest) and a
    # Deployment scaled to zero (only its template names the image).
    repo, tag = IN_USE_BY_POD
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "in-use"},
                   "spec": {"containers": [{"name": "app", "image": f"{address}/{repo}:{tag}", "command": ["sleep", "3600"]}],
                            "terminationGracePeriodSeconds": 0}}, namespace)
    repo, tag = IN_USE_BY_TEMPLATE
    cluster.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "parked"},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "parked"}},
                            "template": {"metadata": {"labels": {"app": "parked"}},
                                         "spec": {"containers": [{"name": "app", "image": f"{address}/{repo}:{tag}"}]}}}},
                  namespace)
    cluster.wait_until("the in-use Pod to run", lambda: (cluster.get("pod", "in-use", namespace) or {})
                       .get("status", {}).get("phase") == "Running", timeout=120)
    yield namespace, address, client, history
    client.close()
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def policy(name, spec):
    return {"apiVersion": "wharf.dev/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": name}, "spec": spec}


def request_run(cluster, namespace, name, dry_run=None):
    """Asks for a run through the annotation; returns the value, which names the run."""
    value = f"{time.time():.6f}"
    args = ["annotate", "retentionpolicy", name, "-n", namespace, "--overwrite", f"wharf.dev/requested-at={value}"]
    if dry_run is not None:
        args.append(f"wharf.dev/requested-dry-run={str(dry_run).lower()}")
    cluster.kubectl(*args)
    return value


def finished_run(cluster, namespace, name, after=None, timeout=180):
    """Waits for status.lastRun to name a run other than `after`; returns the policy."""
    def done():
        obj = cluster.get("retentionpolicy", name, namespace)
        run_ = (obj or {}).get("status", {}).get("lastRun")
        return obj if run_ and run_["jobName"] != after else None
    try:
        return cluster.wait_until(f"a finished run of {name}", done, timeout=timeout)
    except AssertionError:
        jobs = cluster.kubectl("get", "jobs,pods,events", "-n", namespace, check=False).stdout
        raise AssertionError(f"no finished run: {cluster.get('retentionpolicy', name, namespace)}\n{jobs}")


def exists(client, repo, reference):
    return client.request("HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})[0] == 200


def test_dry_run_then_requested_real_run_then_garbage_collection(cluster, setup):
    namespace, address, client, h = setup
    expected, expected_tags, tags_before = expected_candidates(client, h)
    total = sum(len(d) for d in expected.values())
    total_tags = sum(len(t) for t in expected_tags.values())
    assert total_tags == len(REPOS) * (MAIN_BUILDS - KEPT_MAIN + PR_BUILDS) - 2, "two PR tags are in use"
    spec = {
        "registryRef": {"name": "main"},
        "repositories": ["ci/**"],
        "keep": [{"tags": ["v*.*.*"]}, {"tagRegex": "^main-[0-9a-f]{7}$", "mostRecentlyPushed": KEPT_MAIN}],
        "untagged": {"delete": True},
        "protect": {"tags": ["latest"], "inUseByCluster": True},
        "safety": {"dryRun": True, "maxDeletionsPerRun": 500},
        "schedule": "0 2 * * *",
        "runGarbageCollection": True,
    }
    cluster.apply(policy("ci-cleanup", spec), namespace)
    cluster.wait_until("the policy to be Ready", lambda: (condition(cluster.get("retentionpolicy", "ci-cleanup", namespace),
                                                                    "Ready") or {}).get("status") == "True", timeout=60)
    cron = cluster.get("cronjob", "ci-cleanup-retention", namespace)
    assert cron["spec"]["schedule"] == "0 2 * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    credential = cluster.get("secret", "ci-cleanup-retention-credential", namespace)
    assert credential["metadata"]["ownerReferences"][0]["kind"] == "RetentionPolicy"

    # The dry run.
    request_run(cluster, namespace, "ci-cleanup")
    obj = finished_run(cluster, namespace, "ci-cleanup")
    last = obj["status"]["lastRun"]
    assert last["succeeded"] is True and last["dryRun"] is True, last
    assert last["manifestsToDelete"] == total and last["tagsToDelete"] == total_tags, (last, total, total_tags)
    assert last["tagsEvaluated"] == len(REPOS) * (len(RELEASES) + MAIN_BUILDS + PR_BUILDS + 1), last
    assert condition(obj, "LastRunSucceeded")["reason"] == "DryRunCompleted"
    report = cluster.get("configmap", last["reportConfigMapRef"]["name"], namespace)
    candidates = json.loads(report["data"]["candidates.json"])
    assert candidates["truncated"] is False
    assert {c["repository"]: sorted(m["digest"] for m in c["manifests"]) for c in candidates["candidates"]} == expected
    # Every tag that goes, with its digest and the rule that let it go; the counts agree.
    assert {c["repository"]: {t["tag"]: t["digest"] for t in c["tags"]} for c in candidates["candidates"]} \
        == expected_tags
    reasons = {t["tag"]: t["reason"] for c in candidates["candidates"] for t in c["tags"]}
    assert all(r.startswith("keep[1] selects it, but it is not among the 5 most recently pushed")
               for t, r in reasons.items() if t.startswith("main-")), reasons
    assert all(r == "no keep rule selects it" for t, r in reasons.items() if t.startswith("pr-")), reasons
    assert sum(len(c["tags"]) for c in candidates["candidates"]) == last["tagsToDelete"]
    assert sum(len(c["manifests"]) for c in candidates["candidates"]) == last["manifestsToDelete"]
    printed = cluster.kubectl("get", "retentionpolicy", "ci-cleanup", "-n", namespace, "--no-headers",
                              "-o", "custom-columns=C:.status.lastRun.tagsToDelete").stdout.strip()
    assert printed == str(total_tags), "the Candidates column shows the tags that go"
    assert report["metadata"]["ownerReferences"][0]["name"] == "ci-cleanup"
    for repo, digests in expected.items():
        assert all(exists(client, repo, d) for d in digests), f"a dry run deleted in {repo}"

    # The real run, asked for once through the annotations; the spec stays a dry run.
    dry_job = last["jobName"]
    request_run(cluster, namespace, "ci-cleanup", dry_run=False)
    obj = finished_run(cluster, namespace, "ci-cleanup", after=dry_job)
    last = obj["status"]["lastRun"]
    assert last["succeeded"] is True and last["dryRun"] is False, last
    assert last["manifestsDeleted"] == total and last["tagsDeleted"] == total_tags, (last, total, total_tags)
    for repo, digests in expected.items():
        assert not any(exists(client, repo, d) for d in digests), f"a candidate survived in {repo}"
    # Exactly what the dry run listed is gone from the tag lists, and nothing else.
    for repo in REPOS:
        assert tag_list(client, repo) == tags_before[repo] - set(expected_tags[repo]), repo
    assert IN_USE_BY_POD[1] in tag_list(client, IN_USE_BY_POD[0]), "the tag a running Pod uses stays"
    for repo in REPOS:
        for tag in RELEASES + ["latest"]:
            status, headers, body = client.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert status == 200 and headers["docker-content-digest"] == h.digest[repo, tag], (repo, tag)
    for repo, tag in (IN_USE_BY_POD, IN_USE_BY_TEMPLATE):
        assert exists(client, repo, tag) and exists(client, repo, h.digest[repo, tag]), (repo, tag)
    assert exists(client, "ci/api", h.signatures["v1.0.0"]), "the signature of a kept release went"
    # The image the Pod runs still pulls: a fresh pull by the kubelet.
    repo, tag = IN_USE_BY_POD
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pull-again"},
                   "spec": {"containers": [{"name": "app", "image": f"{address}/{repo}:{tag}", "command": ["sleep", "3600"],
                                            "imagePullPolicy": "Always"}], "terminationGracePeriodSeconds": 0}}, namespace)
    cluster.wait_until("the in-use image to pull again", lambda: (cluster.get("pod", "pull-again", namespace) or {})
                       .get("status", {}).get("phase") == "Running", timeout=120)

    # Garbage collection follows the run that deleted, and frees the bytes.
    def collected():
        gc = cluster.get("retentionpolicy", "ci-cleanup", namespace)["status"].get("lastGarbageCollection")
        return gc if gc and gc.get("succeeded") is not None else None
    gc = cluster.wait_until("garbage collection after the run", collected, timeout=180)
    assert gc["succeeded"] is True and gc["blobsDeleted"] >= total and gc["bytesFreed"] > total * 256, gc
    gone = json.loads(h.manifest["ci/worker", "pr-1"])["layers"][0]["digest"]
    assert client.request("HEAD", f"/v2/ci/worker/blobs/{gone}")[0] == 404


def test_too_many_candidates_stall_and_delete_nothing(cluster, setup):
    namespace, _, client, h = setup
    spec = {"registryRef": {"name": "main"}, "repositories": ["ci/worker"], "keep": [{"tags": ["v*.*.*"]}],
            "protect": {"inUseByCluster": True}, "safety": {"dryRun": False, "maxDeletionsPerRun": 1}}
    mains = [t for (r, t) in h.digest if r == "ci/worker" and t.startswith("main-")]
    before = sum(exists(client, "ci/worker", t) for t in mains)
    cluster.apply(policy("too-eager", spec), namespace)
    request_run(cluster, namespace, "too-eager")
    obj = finished_run(cluster, namespace, "too-eager")
    stalled = condition(obj, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "TooManyDeletions", stalled
    assert "exceed maxDeletionsPerRun (1)" in stalled["message"], stalled
    assert condition(obj, "Ready")["status"] == "False"
    assert obj["status"]["lastRun"]["tagsDeleted"] == 0 and obj["status"]["lastRun"]["manifestsDeleted"] == 0
    for tag in ["latest", "v1.0.0"]:
        assert exists(client, "ci/worker", tag)
    assert sum(exists(client, "ci/worker", t) for t in mains) == before, "the stalled run deleted"

    # Deleting the policy revokes its robot account.
    robots = lambda: {r["name"] for r in json.loads(client.request("GET", "/admin/v1/robots")[2])["robots"]}  # noqa: E731
    assert any(n.startswith("rp-too-eager-") for n in robots())
    cluster.kubectl("delete", "retentionpolicy", "too-eager", "-n", namespace, "--wait=true", "--timeout=60s")
    assert not any(n.startswith("rp-too-eager-") for n in robots())
