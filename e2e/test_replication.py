"""`wharf replicate` between real registries: the reference CNCF Distribution registry
(`docker-registry`) and `wharf registry` processes, in both directions.

The source holds a two-platform OCI index, a Docker schema 2 image and manifest list, a signature
and an SBOM attached with oras (which, on Distribution, stores them under the `sha256-<hex>`
fallback tag), and tags the rules include and exclude. Every manifest is written with unusual
whitespace, so any re-encoding on the way would change its digest."""

import json
import os
import signal
import subprocess
import time

import pytest

from support.distribution import Distribution
from support.oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Client, sha256
from support.procs import CACHE, free_port, run
from support.registry import Registry

ORAS = os.path.join(CACHE, "tools", "bin", "oras")
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
ADMIN, ADMIN_PASSWORD = "admin", "replication-admin-1"
SIGNATURE_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SBOM_TYPE = "application/spdx+json"


def encode(document):
    # Three-space indent and a trailing newline, as no registry or client would re-encode it.
    return (json.dumps(document, indent=3) + "\n").encode()


def push_manifest(client, repo, reference, document, media_type):
    body = encode(document)
    status, headers, answer = client.request("PUT", f"/v2/{repo}/manifests/{reference}", body, {"Content-Type": media_type})
    assert status == 201, (status, answer)
    return body, headers["docker-content-digest"]


def push_image(client, repo, tag, platform, docker=False, layer_bytes=None):
    os_name, arch = platform.split("/")
    config = json.dumps({"architecture": arch, "os": os_name, "nonce": os.urandom(4).hex(),
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layers = [layer_bytes or os.urandom(2048), b"shared base layer of every image in this test"]
    for blob in [config, *layers]:
        assert client.push_blob(repo, blob)[0] == 201
    media, config_type, layer_type = ((DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER) if docker
                                      else (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER))
    document = {"schemaVersion": 2, "mediaType": media,
                "config": {"mediaType": config_type, "digest": sha256(config), "size": len(config)},
                "layers": [{"mediaType": layer_type, "digest": sha256(l), "size": len(l)} for l in layers]}
    body, digest = push_manifest(client, repo, tag or sha256(encode(document)), document, media)
    return {"bytes": body, "digest": digest, "blobs": [sha256(config), *[sha256(l) for l in layers]], "platform": platform}


def push_index(client, repo, tag, platforms, docker=False):
    children = [push_image(client, repo, None, p, docker=docker) for p in platforms]
    media, child_media = (DOCKER_LIST, DOCKER_MANIFEST) if docker else (OCI_INDEX, OCI_MANIFEST)
    document = {"schemaVersion": 2, "mediaType": media, "manifests": [
        {"mediaType": child_media, "digest": c["digest"], "size": len(c["bytes"]),
         "platform": {"os": c["platform"].split("/")[0], "architecture": c["platform"].split("/")[1]}}
        for c in children]}
    body, digest = push_manifest(client, repo, tag, document, media)
    return {"bytes": body, "digest": digest, "children": children}


def get_manifest(client, repo, reference):
    status, headers, body = client.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})
    return status, headers.get("docker-content-digest"), body


def tags_of(client, repo):
    status, _, body = client.request("GET", f"/v2/{repo}/tags/list")
    if status == 404:
        return []
    assert status == 200, body
    return sorted(json.loads(body).get("tags") or [])


def attach(address, reference, artifact_type, filename, content, tmp_path, login=()):
    (tmp_path / filename).write_bytes(content)
    out = run([ORAS, "attach", "--plain-http", *login, f"{address}/{reference}", "--artifact-type", artifact_type,
               "--format", "json", f"{filename}:application/json"], cwd=tmp_path, timeout=120)
    return json.loads(out.stdout)["digest"]


def replicate(wharf_bin, source, destination, spec, tmp_path, expect_success=True, extra=(), env=None, timeout=300):
    """Runs `wharf replicate` to its end; returns the summary and every tag's report."""
    policy = tmp_path / f"policy-{os.urandom(3).hex()}.json"
    policy.write_text(json.dumps(spec))
    summary, report = tmp_path / "summary.json", tmp_path / "report.json"
    for f in (summary, report):
        f.unlink(missing_ok=True)
    p = subprocess.run([wharf_bin, "replicate", "--source", source, "--destination", destination, "--policy", str(policy),
                        "--report", str(report), "--termination-log", str(summary), *extra],
                       capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    result = json.loads(summary.read_text()) if summary.exists() else None
    assert (p.returncode == 0) == expect_success, (p.returncode, result and result["failures"], p.stderr[-3000:])
    assert json.loads(p.stdout.strip().splitlines()[-1]) == result
    tags = json.loads(report.read_text()) if report.exists() else []
    return result, tags, p.stderr


def destination_env(password=ADMIN_PASSWORD):
    return {"WHARF_DESTINATION_USERNAME": ADMIN, "WHARF_DESTINATION_PASSWORD": password}


@pytest.fixture
def distribution(tmp_path):
    (tmp_path / "distribution").mkdir()
    registry = Distribution(tmp_path / "distribution").start()
    yield registry
    registry.stop()


@pytest.fixture
def wharf(wharf_bin):
    registry = Registry(wharf_bin, users={ADMIN: ADMIN_PASSWORD}).start()
    yield registry
    registry.cleanup()


@pytest.fixture
def source_set(distribution, tmp_path):
    """What the source Distribution registry holds; returns its description."""
    c = Client(distribution.address)
    alpine = {tag: push_index(c, "library/alpine", tag, ["linux/amd64", "linux/arm64"]) for tag in ["3.18", "3.19", "3.20"]}
    alpine["edge"] = push_index(c, "library/alpine", "edge", ["linux/amd64", "linux/arm64"])
    legacy = {"1.0": push_image(c, "library/legacy", "1.0", "linux/amd64", docker=True),
              "1.0-multi": push_index(c, "library/legacy", "1.0-multi", ["linux/amd64", "linux/arm64"], docker=True),
              "old": push_image(c, "library/legacy", "old", "linux/amd64", docker=True)}
    push_image(c, "scratch/tmp", "x", "linux/amd64")
    subject = alpine["3.20"]["digest"]
    signature = attach(distribution.address, "library/alpine@" + subject, SIGNATURE_TYPE, "sig.json", b'{"critical":{}}', tmp_path)
    sbom = attach(distribution.address, "library/alpine@" + subject, SBOM_TYPE, "sbom.json", b'{"spdxVersion":"SPDX-2.3"}', tmp_path)
    fallback = "sha256-" + subject.split(":", 1)[1]
    assert fallback in tags_of(c, "library/alpine"), "oras did not use the referrers tag on Distribution"
    c.close()
    return {"alpine": alpine, "legacy": legacy, "signature": signature, "sbom": sbom, "fallback": fallback}


RULES = [
    {"repositories": ["library/*"], "excludeRepositories": ["library/legacy"], "tags": {"semver": ">=3.19"}},
    {"repositories": ["library/legacy"], "tags": {"include": ["1.*"]}},
]


def assert_identical(source, destination, repo, tags):
    """Every tag's manifest has the same bytes, media type and digest on both sides, and so
    has everything it references."""
    for tag in tags:
        status, digest, body = get_manifest(source, repo, tag)
        assert status == 200, (repo, tag)
        status, copied_digest, copied = get_manifest(destination, repo, tag)
        assert status == 200, (repo, tag, copied)
        assert copied == body and copied_digest == digest == sha256(body), (repo, tag)
        document = json.loads(body)
        for child in document.get("manifests", []):
            status, child_digest, child_body = get_manifest(destination, repo, child["digest"])
            assert status == 200 and child_digest == child["digest"] == sha256(child_body)
            assert_blobs_present(destination, repo, json.loads(child_body))
        assert_blobs_present(destination, repo, document)


def assert_blobs_present(client, repo, document):
    for descriptor in [document.get("config"), *document.get("layers", [])]:
        if descriptor:
            status, headers, _ = client.request("HEAD", f"/v2/{repo}/blobs/{descriptor['digest']}")
            assert status == 200 and int(headers["content-length"]) == descriptor["size"], descriptor


def test_selected_tags_arrive_byte_identical_with_their_referrers(wharf_bin, distribution, source_set, wharf, tmp_path):
    spec = {"rules": RULES}
    summary, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, spec, tmp_path, env=destination_env())
    assert summary["succeeded"] and summary["failed"] == 0, summary
    assert (summary["tagsSelected"], summary["copied"], summary["skipped"]) == (4, 4, 0), summary
    assert summary["referrersCopied"] == 2, summary
    assert summary["blobsCopied"] > 0 and summary["bytesTransferred"] > 0, summary
    assert sorted((t["repository"], t["tag"], t["outcome"]) for t in tags) == [
        ("library/alpine", "3.19", "copied"), ("library/alpine", "3.20", "copied"),
        ("library/legacy", "1.0", "copied"), ("library/legacy", "1.0-multi", "copied")]

    source, dest = Client(distribution.address), Client(wharf.address, ADMIN, ADMIN_PASSWORD)
    status, _, body = dest.request("GET", "/v2/_catalog")
    assert json.loads(body)["repositories"] == ["library/alpine", "library/legacy"], body
    # Exactly the selected tags; the referrers tag is not needed where the referrers API is.
    assert tags_of(dest, "library/alpine") == ["3.19", "3.20"]
    assert tags_of(dest, "library/legacy") == ["1.0", "1.0-multi"]
    assert_identical(source, dest, "library/alpine", ["3.19", "3.20"])
    assert_identical(source, dest, "library/legacy", ["1.0", "1.0-multi"])
    assert get_manifest(dest, "library/legacy", "1.0")[2] and json.loads(get_manifest(dest, "library/legacy", "1.0")[2])["mediaType"] == DOCKER_MANIFEST

    subject = source_set["alpine"]["3.20"]["digest"]
    status, headers, body = dest.request("GET", f"/v2/library/alpine/referrers/{subject}")
    assert status == 200, body
    referrers = {m["digest"]: m.get("artifactType") for m in json.loads(body)["manifests"]}
    assert referrers == {source_set["signature"]: SIGNATURE_TYPE, source_set["sbom"]: SBOM_TYPE}, referrers
    for digest in referrers:
        status, copied_digest, copied = get_manifest(dest, "library/alpine", digest)
        assert status == 200 and copied == get_manifest(source, "library/alpine", digest)[2]

    # A second run of the unchanged set sends no blob and writes no tag.
    again, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, spec, tmp_path, env=destination_env())
    assert (again["copied"], again["skipped"], again["blobsCopied"], again["blobsMounted"], again["bytesTransferred"]) == (0, 4, 0, 0, 0), again
    assert {t["outcome"] for t in tags} == {"skipped"}

    # A dry run says what a run would copy, and writes nothing.
    c = Client(distribution.address)
    new = push_index(c, "library/alpine", "3.21", ["linux/amd64"])
    dry, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, {**spec, "options": {"dryRun": True}}, tmp_path, env=destination_env())
    assert dry["dryRun"] and dry["copied"] == 1 and dry["blobsCopied"] == 2, dry
    assert "3.21" not in tags_of(dest, "library/alpine")
    assert get_manifest(dest, "library/alpine", new["children"][0]["digest"])[0] == 404
    for blob in new["children"][0]["blobs"][:1]:
        assert dest.request("HEAD", f"/v2/library/alpine/blobs/{blob}")[0] == 404, "a dry run wrote a blob"
    c.close(), source.close(), dest.close()


def test_a_platform_filtered_copy_is_a_new_index_that_names_its_source(wharf_bin, distribution, source_set, wharf, tmp_path):
    spec = {"destination": {"repositoryPrefix": "amd64/"},
            "rules": [{"repositories": ["library/alpine"], "tags": {"include": ["3.19"]}, "platforms": ["linux/amd64"]}]}
    summary, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, spec, tmp_path, env=destination_env())
    assert summary["copied"] == 1 and summary["failed"] == 0, summary
    source_index = source_set["alpine"]["3.19"]
    [report] = tags
    assert report["sourceDigest"] == source_index["digest"] and report["digest"] != source_index["digest"], report
    dest = Client(wharf.address, ADMIN, ADMIN_PASSWORD)
    status, digest, body = get_manifest(dest, "amd64/library/alpine", "3.19")
    assert status == 200 and digest == report["digest"] == sha256(body)
    index = json.loads(body)
    amd64, arm64 = source_index["children"]
    assert [m["digest"] for m in index["manifests"]] == [amd64["digest"]], index
    assert index["annotations"]["dev.wharf.replication.source-digest"] == source_index["digest"], index
    assert get_manifest(dest, "amd64/library/alpine", amd64["digest"])[0] == 200
    assert get_manifest(dest, "amd64/library/alpine", arm64["digest"])[0] == 404, "the filtered-out platform was copied"
    # The platform's manifest itself is byte-identical.
    assert get_manifest(dest, "amd64/library/alpine", amd64["digest"])[2] == amd64["bytes"]

    # Unchanged on a second run: the filtered index is built the same way, so its digest too.
    again, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, spec, tmp_path, env=destination_env())
    assert again["skipped"] == 1 and again["blobsCopied"] == 0 and tags[0]["digest"] == report["digest"], again
    dest.close()


def test_moved_tags_conflict_unless_overwrite_and_deletions_follow_only_when_asked(wharf_bin, distribution, source_set, wharf, tmp_path):
    spec = {"rules": [{"repositories": ["library/alpine"], "tags": {"include": ["3.19", "3.20"]}}]}
    first, _, _ = replicate(wharf_bin, distribution.url, wharf.url, spec, tmp_path, env=destination_env())
    assert first["copied"] == 2, first
    src, dest = Client(distribution.address), Client(wharf.address, ADMIN, ADMIN_PASSWORD)
    old = source_set["alpine"]["3.20"]["digest"]
    moved = push_index(src, "library/alpine", "3.20", ["linux/amd64", "linux/arm64"])

    conflict, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, spec, tmp_path, env=destination_env())
    assert conflict["conflicts"] == 1 and conflict["copied"] == 0 and conflict["succeeded"], conflict
    [line] = [t for t in tags if t["tag"] == "3.20"]
    assert line["outcome"] == "conflict" and old in line["reason"], line
    assert get_manifest(dest, "library/alpine", "3.20")[1] == old, "a conflict moved the destination's tag"

    overwrite = {**spec, "options": {"overwrite": True}}
    updated, _, _ = replicate(wharf_bin, distribution.url, wharf.url, overwrite, tmp_path, env=destination_env())
    assert updated["copied"] == 1 and updated["conflicts"] == 0, updated
    assert get_manifest(dest, "library/alpine", "3.20")[1] == moved["digest"]
    assert_identical(src, dest, "library/alpine", ["3.20"])

    # 3.19 goes away at the source (Distribution deletes by digest).
    assert src.request("DELETE", f"/v2/library/alpine/manifests/{source_set['alpine']['3.19']['digest']}")[0] == 202
    kept, _, _ = replicate(wharf_bin, distribution.url, wharf.url, spec, tmp_path, env=destination_env())
    assert kept["deleted"] == 0 and "3.19" in tags_of(dest, "library/alpine"), kept
    propagate = {**spec, "options": {"replicateDeletion": True}}
    dry, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, {**propagate, "options": {"replicateDeletion": True, "dryRun": True}},
                             tmp_path, env=destination_env())
    assert dry["deleted"] == 1 and "3.19" in tags_of(dest, "library/alpine"), dry
    deleted, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, propagate, tmp_path, env=destination_env())
    assert deleted["deleted"] == 1 and deleted["failed"] == 0, deleted
    assert [t["tag"] for t in tags if t["outcome"] == "deleted"] == ["3.19"]
    assert tags_of(dest, "library/alpine") == ["3.20"]
    src.close(), dest.close()


def test_a_run_killed_mid_copy_leaves_no_tag_and_the_next_run_completes(wharf_bin, distribution, wharf, tmp_path):
    src = Client(distribution.address)
    big = push_image(src, "library/big", "1.0", "linux/amd64", layer_bytes=os.urandom(24 << 20))
    small = push_image(src, "library/big", "0.9", "linux/amd64")
    spec = {"rules": [{"repositories": ["library/big"]}], "options": {"bandwidthLimit": "2Mi", "concurrency": 1}}
    policy = tmp_path / "big.json"
    policy.write_text(json.dumps(spec))
    proc = subprocess.Popen([wharf_bin, "replicate", "--source", distribution.url, "--destination", wharf.url,
                             "--policy", str(policy), "--termination-log", str(tmp_path / "killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **destination_env()})
    dest = Client(wharf.address, ADMIN, ADMIN_PASSWORD)
    # Kill it once the big layer's upload is under way at the destination.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(os.scandir(os.path.join(wharf.layout_root, "uploads"))
                                                  if os.path.isdir(os.path.join(wharf.layout_root, "uploads")) else []):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    time.sleep(1)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert get_manifest(dest, "library/big", "1.0")[0] == 404, "a tag points at an image whose layer is not all there"
    assert dest.request("HEAD", f"/v2/library/big/blobs/{big['blobs'][1]}")[0] == 404

    summary, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, {"rules": spec["rules"]}, tmp_path, env=destination_env())
    assert summary["failed"] == 0 and summary["copied"] + summary["skipped"] == 2, summary
    assert tags_of(dest, "library/big") == ["0.9", "1.0"]
    assert_identical(src, dest, "library/big", ["0.9", "1.0"])
    status, headers, body = dest.request("GET", f"/v2/library/big/blobs/{big['blobs'][1]}")
    assert status == 200 and sha256(body) == big["blobs"][1]
    assert small["digest"] == get_manifest(dest, "library/big", "0.9")[1]
    src.close(), dest.close()


def test_wharf_to_distribution_keeps_referrers_under_the_fallback_tag(wharf_bin, distribution, wharf, tmp_path):
    """The other direction: a wharf source that a reader may see only partly, a Distribution
    destination without the referrers API."""
    config = tmp_path / "access.json"
    config.write_text(json.dumps({"auth": {"access": [
        {"users": ["reader"], "repositories": ["team/**"], "actions": ["pull"]}]}}))
    source = Registry(wharf_bin, users={ADMIN: ADMIN_PASSWORD, "reader": "reader-password-1"}, args=["--config", str(config)]).start()
    try:
        admin = Client(source.address, ADMIN, ADMIN_PASSWORD)
        app = push_index(admin, "team/app", "v1", ["linux/amd64", "linux/arm64"])
        push_image(admin, "private/secret", "v1", "linux/amd64")
        login = ("-u", ADMIN, "-p", ADMIN_PASSWORD)
        signature = attach(source.address, f"team/app@{app['digest']}", SIGNATURE_TYPE, "sig.json", b'{"critical":{}}', tmp_path, login)
        spec = {"rules": [{"repositories": ["team/app", "private/secret"]}]}
        env = {"WHARF_SOURCE_USERNAME": "reader", "WHARF_SOURCE_PASSWORD": "reader-password-1"}
        summary, tags, _ = replicate(wharf_bin, source.url, distribution.url, spec, tmp_path, expect_success=False, env=env)
        # The repository the reader may not read is a failure with its reason; the rest is copied.
        assert summary["copied"] == 1 and summary["referrersCopied"] == 1 and summary["failed"] == 1, summary
        [failure] = summary["failures"]
        reason = failure["reason"].lower()
        assert failure["repository"] == "private/secret" and ("denied" in reason or "unauthorized" in reason), failure
        dist = Client(distribution.address)
        assert tags_of(dist, "private/secret") == []
        fallback = "sha256-" + app["digest"].split(":", 1)[1]
        assert tags_of(dist, "team/app") == sorted(["v1", fallback])
        assert_identical(Client(source.address, ADMIN, ADMIN_PASSWORD), dist, "team/app", ["v1"])
        status, _, body = get_manifest(dist, "team/app", fallback)
        assert status == 200 and [m["digest"] for m in json.loads(body)["manifests"]] == [signature], body
        again, _, _ = replicate(wharf_bin, source.url, distribution.url, {"rules": [{"repositories": ["team/app"]}]}, tmp_path, env=env)
        assert again["copied"] == 0 and again["blobsCopied"] == 0 and again["referrersCopied"] == 0, again
        dist.close(), admin.close()
    finally:
        source.cleanup()


def test_bad_input_gets_a_reason_and_leaves_nothing_half_written(wharf_bin, distribution, wharf, tmp_path):
    src = Client(distribution.address)
    push_image(src, "library/good", "1", "linux/amd64")
    broken = push_image(src, "library/broken", "1", "linux/amd64", layer_bytes=os.urandom(4096))
    # A layer the source's storage has lost: its data file is removed under Distribution.
    hex_digest = broken["blobs"][1].split(":", 1)[1]
    os.remove(distribution.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data")
    spec = {"rules": [{"repositories": ["library/*"]}]}

    summary, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, spec, tmp_path, expect_success=False, env=destination_env())
    assert summary["copied"] == 1 and summary["failed"] == 1, summary
    [failure] = summary["failures"]
    assert failure["repository"] == "library/broken" and failure["tag"] == "1" and hex_digest[:12] in failure["reason"], failure
    dest = Client(wharf.address, ADMIN, ADMIN_PASSWORD)
    assert tags_of(dest, "library/broken") == [], "a tag points at an image whose layer is missing"
    assert tags_of(dest, "library/good") == ["1"]

    wrong, tags, _ = replicate(wharf_bin, distribution.url, wharf.url, spec, tmp_path, expect_success=False,
                               env=destination_env("not-the-password"))
    assert wrong["copied"] == 0 and wrong["failed"] >= 1, wrong
    assert any("refused the credentials" in f["reason"] for f in wrong["failures"]), wrong
    assert "not-the-password" not in json.dumps(wrong), "a credential is in the summary"

    unreachable = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    down, _, _ = replicate(wharf_bin, unreachable, wharf.url, spec, tmp_path, expect_success=False, env=destination_env())
    assert down["failed"] == 1 and down["copied"] == 0, down
    assert "127.0.0.1" in down["message"] and "connect" in down["message"].lower(), down
    assert time.monotonic() - started < 60

    bad_rate = {**spec, "options": {"bandwidthLimit": "5MB"}}
    (tmp_path / "bad.json").write_text(json.dumps(bad_rate))
    p = subprocess.run([wharf_bin, "replicate", "--source", distribution.url, "--destination", wharf.url, "--policy",
                        str(tmp_path / "bad.json"), "--termination-log", str(tmp_path / "bad")], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "bandwidthLimit" in p.stderr and "50Mi" in p.stderr, p.stderr
    src.close(), dest.close()
