"""kill -9 in the middle of many concurrent pushes: after a restart every completed push pulls
bit-identical, no partial blob or dangling tag is visible, and leftover uploads can be cleaned up;
on the filesystem and on S3 (whose server keeps objects as plain files, so the same checks read
them)."""

import hashlib
import json
import os
import threading
import time

from support.oci import OCI_MANIFEST, Client, sha256
from support.registry import Registry

WRITERS = 8
MAX_PUSHES_PER_WRITER = 200  # bounds the load loop in count; the kill bounds it in time
KILL_AFTER_SECONDS = 2.0


def push_one(client, repo, tag):
    """One image: a monolithic layer, a chunked layer, a config, then the manifest by tag."""
    mono, chunked, config = os.urandom(300_000), os.urandom(700_000), json.dumps({"tag": tag}).encode()
    assert client.push_blob(repo, mono)[0] == 201
    status, headers, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert status == 202
    location = headers["location"]
    for start in range(0, len(chunked), 256_000):
        piece = chunked[start:start + 256_000]
        status, headers, _ = client.request("PATCH", location, piece, {"Content-Range": f"{start}-{start + len(piece) - 1}"})
        assert status == 202
        location = headers["location"]
    assert client.request("PUT", f"{location}?digest={sha256(chunked)}", b"")[0] == 201
    assert client.push_blob(repo, config)[0] == 201
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(b), "size": len(b)} for b in (mono, chunked)],
    }).encode()
    assert client.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})[0] == 201
    return manifest, {sha256(b): b for b in (mono, chunked, config)}


def interrupted_uploads(root):
    """(repository, upload id) of every upload left in storage."""
    uploads = os.path.join(root, "uploads")
    found = []
    for upload_id in os.listdir(uploads) if os.path.isdir(uploads) else []:
        owner = os.path.join(uploads, upload_id, "repository")  # filesystem
        state = os.path.join(uploads, upload_id, "state")  # S3
        if os.path.exists(owner):
            found.append((open(owner).read(), upload_id))
        elif os.path.exists(state):
            found.append((json.load(open(state))["repository"], upload_id))
    return found


def test_sigkill_during_concurrent_pushes_loses_nothing_completed(wharf_bin, backend):
    registry = Registry(wharf_bin, **backend).start()
    completed = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n):
        client = Client(registry.address, timeout=10)
        for i in range(MAX_PUSHES_PER_WRITER):
            if stop.is_set():
                return
            repo, tag = f"crash/writer-{n}", f"t{i}"
            try:
                result = push_one(client, repo, tag)
            except Exception:  # the kill: connection refused or reset mid-push
                return
            with lock:
                completed[(repo, tag)] = result

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(KILL_AFTER_SECONDS)
    registry.kill()
    stop.set()
    for t in threads:
        t.join(30)
    assert completed, "no push completed before the kill: the test proves nothing"

    restarted = Registry(wharf_bin, storage=registry.storage, s3_prefix=registry.s3_prefix, **backend).start()
    try:
        client = Client(restarted.address)
        for (repo, tag), (manifest, blobs) in completed.items():
            status, _, body = client.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert status == 200 and body == manifest, (repo, tag, status)
            for digest, data in blobs.items():
                status, _, body = client.request("GET", f"/v2/{repo}/blobs/{digest}")
                assert status == 200 and body == data, (repo, digest)

        root = restarted.layout_root
        # No visible blob is partial: every blob file hashes to its name.
        for dirpath, _, files in os.walk(os.path.join(root, "blobs", "sha256")):
            for name in files:
                if name.startswith("."):
                    continue  # an interrupted temporary file: invisible to readers
                with open(os.path.join(dirpath, name), "rb") as f:
                    assert hashlib.sha256(f.read()).hexdigest() == name, f"partial blob {name}"
        # No tag points to a missing manifest.
        tags_checked = 0
        for repo_dir in os.listdir(os.path.join(root, "repositories", "crash")):
            repo = f"crash/{repo_dir}"
            status, _, body = client.request("GET", f"/v2/{repo}/tags/list")
            if status == 404:
                continue
            for tag in json.loads(body)["tags"] or []:
                assert client.request("HEAD", f"/v2/{repo}/manifests/{tag}")[0] == 200, (repo, tag)
                tags_checked += 1
        assert tags_checked >= len(completed)
        # Interrupted uploads can be cancelled (or are purged by age).
        for repo, upload_id in interrupted_uploads(root):
            assert client.request("DELETE", f"/v2/{repo}/blobs/uploads/{upload_id}")[0] == 204
        print(f"completed pushes before the kill: {len(completed)}, tags verified: {tags_checked}")
    finally:
        restarted.cleanup()
        registry.cleanup()
