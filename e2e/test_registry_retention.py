"""`wharf retention` against a real registry with a realistic history: releases, main-branch
builds, PR builds, an untagged manifest and a signature referrer. A dry run lists exactly the
candidates and deletes nothing; the real run deletes exactly those; releases, protected tags and
the digest in use still pull; too many candidates stall the run with nothing deleted."""

import json
import os
import subprocess
import time

from support.oci import OCI_MANIFEST, Client, push_signature, sha256
from support.registry import Registry

ADMIN, PASSWORD = "admin", "retention-admin-password"
REPO = "ci/app"


def run_retention(wharf_bin, registry, policy, tmp_path, in_use=()):
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    (tmp_path / "in-use").write_text("\n".join(in_use))
    env = {**os.environ, "WHARF_USERNAME": ADMIN, "WHARF_PASSWORD": PASSWORD}
    p = subprocess.run([wharf_bin, "retention", "--registry", f"http://{registry.address}", "--policy",
                        str(tmp_path / "policy.json"), "--in-use", str(tmp_path / "in-use"), "--report",
                        str(tmp_path / "report.json"), "--termination-log", str(tmp_path / "summary")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    summary = json.loads((tmp_path / "summary").read_text())
    assert summary == json.loads(p.stdout)
    return summary, json.loads((tmp_path / "report.json").read_text())


def test_retention_dry_run_real_run_and_safety_limit(wharf_bin, tmp_path):
    registry = Registry(wharf_bin, users={ADMIN: PASSWORD}).start()
    try:
        c = Client(registry.address, ADMIN, PASSWORD)
        digests, manifests = {}, {}
        for tag in ["v1.0.0", "v1.1.0", "v2.0.0", "pr-1", "pr-2"]:
            manifests[tag], digests[tag] = c.push_image(REPO, tag, [os.urandom(64)])
        for n in range(1, 6):
            manifests[f"main-{n}"], digests[f"main-{n}"] = c.push_image(REPO, f"main-{n}", [os.urandom(64)])
            time.sleep(1.1)  # push times have one-second resolution
        assert c.request("PUT", f"/v2/{REPO}/manifests/latest", manifests["v2.0.0"], {"Content-Type": OCI_MANIFEST})[0] == 201
        _, untagged = c.push_image(REPO, "temporary", [os.urandom(64)])
        assert c.request("DELETE", f"/v2/{REPO}/manifests/temporary")[0] == 202
        signature = push_signature(c, REPO, digests["pr-1"], manifests["pr-1"])

        policy = {
            "repositories": ["ci/**"],
            "keep": [{"tags": ["v*.*.*"]}, {"tagRegex": "^main-", "mostRecentlyPushed": 2}],
            "protect": {"tags": ["latest"]},
            "untagged": {"delete": True, "olderThan": "0s"},
            "safety": {"dryRun": True},
        }
        expected = sorted([digests["main-1"], digests["main-2"], digests["main-3"], digests["pr-1"], untagged, signature])
        summary, report = run_retention(wharf_bin, registry, policy, tmp_path, in_use=[digests["pr-2"]])
        assert summary["dryRun"] is True and summary["manifestsToDelete"] == 6 and summary["tagsToDelete"] == 4, summary
        [entry] = report
        assert entry["repository"] == REPO
        assert sorted(m["digest"] for m in entry["manifests"]) == expected
        not_recent = "keep[1] selects it, but it is not among the 2 most recently pushed"
        assert entry["tags"] == [{"tag": t, "digest": digests[t], "reason": not_recent} for t in ["main-1", "main-2", "main-3"]] \
            + [{"tag": "pr-1", "digest": digests["pr-1"], "reason": "no keep rule selects it"}], entry["tags"]
        reasons = {m["digest"]: m["reason"] for m in entry["manifests"]}
        assert reasons[untagged] == "untagged" and reasons[signature] == f"its subject {digests['pr-1']} is deleted", reasons
        for tag in ["main-1", "pr-1"]:
            assert c.request("HEAD", f"/v2/{REPO}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})[0] == 200, "a dry run deleted"

        # Too many candidates: nothing deleted, and the reason is given.
        stalled, _ = run_retention(wharf_bin, registry, {**policy, "safety": {"dryRun": False, "maxDeletionsPerRun": 3}},
                                   tmp_path, in_use=[digests["pr-2"]])
        assert stalled["stalled"] is True and "exceed maxDeletionsPerRun (3)" in stalled["message"], stalled
        assert c.request("HEAD", f"/v2/{REPO}/manifests/main-1", headers={"Accept": OCI_MANIFEST})[0] == 200

        real, _ = run_retention(wharf_bin, registry, {**policy, "safety": {"dryRun": False}}, tmp_path, in_use=[digests["pr-2"]])
        assert real["manifestsDeleted"] == 6 and real["tagsDeleted"] == 4, real
        status, _, body = c.request("GET", f"/v2/{REPO}/tags/list")
        assert sorted(json.loads(body)["tags"]) == ["latest", "main-4", "main-5", "pr-2", "v1.0.0", "v1.1.0", "v2.0.0"]
        for digest in expected:
            assert c.request("HEAD", f"/v2/{REPO}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})[0] == 404
        for tag in ["v1.0.0", "v1.1.0", "v2.0.0", "latest", "main-4", "main-5", "pr-2"]:
            status, _, body = c.request("GET", f"/v2/{REPO}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert status == 200 and sha256(body) == digests.get(tag, digests["v2.0.0"]), tag
        c.close()
    finally:
        registry.cleanup()
