"""`wharf retention --api oci` against another registry: the reference CNCF Distribution
registry (`docker-registry`, a Debian package `make deps` installs), which only lists tags. Tag-
and version-based rules decide; a dry run deletes nothing; the real run deletes exactly the
candidates by digest; a tag that shares its manifest with a kept tag is reported as a failure
instead of taking the kept tag with it (Distribution cannot delete a tag alone)."""

import json
import os
import subprocess

import pytest

from support.distribution import Distribution
from support.oci import OCI_MANIFEST, Client

REPO = "team/app"


@pytest.fixture
def distribution(tmp_path):
    registry = Distribution(tmp_path).start()
    try:
        yield registry.address
    finally:
        registry.stop()


def run_retention(wharf_bin, address, policy, tmp_path, dry_run=None):
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    cmd = [wharf_bin, "retention", "--api", "oci", "--registry", f"http://{address}", "--policy",
           str(tmp_path / "policy.json"), "--report-to-log", "--termination-log", str(tmp_path / "summary")]
    if dry_run is not None:
        cmd.append(f"--dry-run={str(dry_run).lower()}")
    env = {**os.environ, "WHARF_USERNAME": "", "WHARF_PASSWORD": ""}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    report = json.loads(lines[0])
    summary = json.loads((tmp_path / "summary").read_text())
    assert summary == json.loads(lines[-1])
    return summary, report


def test_tag_rules_on_a_distribution_registry(wharf_bin, distribution, tmp_path):
    c = Client(distribution)
    digests, manifests = {}, {}
    for tag in ["1.0.0", "1.1.0", "1.2.0", "2.0.0", "release-a", "pr-1", "pr-2", "pr-3"]:
        manifests[tag], digests[tag] = c.push_image(REPO, tag, [os.urandom(64)])
    # `stable` shares its manifest with pr-3, which the policy does not keep.
    assert c.request("PUT", f"/v2/{REPO}/manifests/stable", manifests["pr-3"], {"Content-Type": OCI_MANIFEST})[0] == 201
    policy = {
        "repositories": ["team/**"],
        "keep": [{"semver": ">=1.0.0", "newest": 2}, {"tags": ["release-*"]}],
        "protect": {"tags": ["stable"]},
    }
    summary, report = run_retention(wharf_bin, distribution, policy, tmp_path)
    expected = sorted(digests[t] for t in ["1.0.0", "1.1.0", "pr-1", "pr-2"])
    assert summary["dryRun"] is True and summary["tagsEvaluated"] == 9, summary
    assert summary["manifestsToDelete"] == 4 and summary["tagsToDelete"] == 5, summary
    not_newest = "keep[0] selects it, but it is not among the 2 highest versions"
    reasons = {"1.0.0": not_newest, "1.1.0": not_newest}
    assert report == {"candidates": [{
        "repository": REPO,
        "tags": [{"tag": t, "digest": digests[t], "reason": reasons.get(t, "no keep rule selects it")}
                 for t in ["1.0.0", "1.1.0", "pr-1", "pr-2", "pr-3"]],
        "manifests": sorted(({"digest": digests[t], "tags": [t], "reason": "none of its tags is kept"}
                             for t in ["1.0.0", "1.1.0", "pr-1", "pr-2"]), key=lambda m: m["digest"]),
    }], "truncated": False}, report
    assert [m["digest"] for m in report["candidates"][0]["manifests"]] == expected
    for tag in ["1.0.0", "pr-1"]:
        assert c.request("HEAD", f"/v2/{REPO}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})[0] == 200, "a dry run deleted"

    # Rules that need push or pull times are refused for such a registry, with the reason.
    (tmp_path / "policy.json").write_text(json.dumps({"keep": [{"tags": ["**"], "pushedWithin": "7d"}]}))
    p = subprocess.run([wharf_bin, "retention", "--api", "oci", "--registry", f"http://{distribution}", "--policy",
                        str(tmp_path / "policy.json"), "--termination-log", str(tmp_path / "x")],
                       capture_output=True, text=True, env={**os.environ, "WHARF_USERNAME": "", "WHARF_PASSWORD": ""}, timeout=60)
    assert p.returncode != 0 and "does not say when tags were pushed" in p.stderr, p.stderr

    real, _ = run_retention(wharf_bin, distribution, policy, tmp_path, dry_run=False)
    assert real["dryRun"] is False and real["manifestsDeleted"] == 4 and real["tagsDeleted"] == 4, real
    assert real["failed"] == 1 and "pr-3" in real["message"], real
    for digest in expected:
        assert c.request("HEAD", f"/v2/{REPO}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})[0] == 404
    for tag in ["1.2.0", "2.0.0", "release-a", "stable", "pr-3"]:
        assert c.request("HEAD", f"/v2/{REPO}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})[0] == 200, tag
    c.close()


def test_a_registry_that_only_takes_tokens(wharf_bin, tmp_path):
    """Registries such as Docker Hub and Harbor refuse basic credentials on the API and send a
    Bearer challenge: the job fetches a token per scope from the realm and carries on."""
    from support.registry import Registry
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"auth": {"token": {"enabled": True, "requireToken": True, "service": "e2e"}}}))
    registry = Registry(wharf_bin, users={"admin": "token-only-password"}, args=["--config", str(config)]).start()
    try:
        c = Client(registry.address, "admin", "token-only-password")
        status, headers, _ = c.request("GET", "/v2/")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer realm="), headers
        status, _, body = c.request("GET", f"/auth/token?service=e2e&scope=repository:{REPO}:pull,push")
        bearer = Client(registry.address)
        bearer.auth = "Bearer " + json.loads(body)["token"]
        digests = {tag: bearer.push_image(REPO, tag, [os.urandom(64)])[1] for tag in ["1.0.0", "2.0.0", "pr-1"]}
        policy = {"repositories": [REPO], "keep": [{"semver": ">=1"}]}
        (tmp_path / "policy.json").write_text(json.dumps(policy))
        env = {**os.environ, "WHARF_USERNAME": "admin", "WHARF_PASSWORD": "token-only-password"}
        p = subprocess.run([wharf_bin, "retention", "--api", "oci", "--registry", f"http://{registry.address}",
                            "--policy", str(tmp_path / "policy.json"), "--dry-run=false",
                            "--termination-log", str(tmp_path / "summary")],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        summary = json.loads((tmp_path / "summary").read_text())
        assert summary["manifestsDeleted"] == 1 and "failed" not in summary, summary
        accept = {"Accept": OCI_MANIFEST}
        status, _, body = c.request("GET", f"/auth/token?service=e2e&scope=repository:{REPO}:pull")
        reader = Client(registry.address)
        reader.auth = "Bearer " + json.loads(body)["token"]
        assert reader.request("HEAD", f"/v2/{REPO}/manifests/{digests['pr-1']}", headers=accept)[0] == 404
        for tag in ["1.0.0", "2.0.0"]:
            assert reader.request("HEAD", f"/v2/{REPO}/manifests/{tag}", headers=accept)[0] == 200, tag
        for client in (c, bearer, reader):
            client.close()
    finally:
        registry.cleanup()
