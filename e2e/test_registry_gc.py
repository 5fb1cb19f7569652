"""Online garbage collection on a real `wharf registry`: many clients push and pull while GC runs
again and again with a grace period of two seconds (anything older and unreferenced goes while
pushes continue; shared layers reused through HEAD are protected by the push protocol only).
Afterwards every image whose push completed pulls bit-identical, and a final run leaves exactly
the blobs some manifest references. On the filesystem and on S3."""

import hashlib
import itertools
import json
import os
import random
import subprocess
import tempfile
import threading
import time

from support.oci import OCI_MANIFEST, Client, sha256
from support.procs import parse_prometheus
from support.registry import Registry

ADMIN, PASSWORD = "admin", "gc-admin-password"
PUSHERS, PULLERS = 6, 3
IMAGES_PER_PUSHER = 12
DEADLINE_SECONDS = 180


def gc(registry, **request):
    c = Client(registry.address, ADMIN, PASSWORD, timeout=120)
    try:
        status, _, body = c.request("POST", "/admin/v1/gc", json.dumps(request).encode(), {"Content-Type": "application/json"})
        return status, json.loads(body)
    finally:
        c.close()


def stored_blobs(storage):
    root = os.path.join(storage, "blobs", "sha256")
    return {f"sha256:{name}" for prefix in os.listdir(root) for name in os.listdir(os.path.join(root, prefix))}


def push_image(client, repo, tag, shared):
    """An image with one unique layer and one layer shared with other images (skipped with a HEAD
    when it exists, as real clients do). Returns (manifest digest, {digest: bytes})."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": f"{repo}:{tag}"}).encode()
    unique = os.urandom(random.randint(1, 64) << 10)
    blobs = {sha256(config): config, sha256(unique): unique, sha256(shared): shared}
    for digest, data in blobs.items():
        status, _, _ = client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            continue
        status, _, body = client.push_blob(repo, data, digest)
        assert status == 201, (status, body)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(blobs[d])}
                   for d in (sha256(unique), sha256(shared))],
    }).encode()
    status, headers, body = client.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
    assert status == 201, (status, body)
    return headers["docker-content-digest"], {**blobs, headers["docker-content-digest"]: manifest}


def pull_and_check(client, repo, tag, expected):
    status, headers, manifest = client.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert status == 200, (repo, tag, status)
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == headers["docker-content-digest"]
    for layer in [json.loads(manifest)["config"], *json.loads(manifest)["layers"]]:
        status, _, data = client.request("GET", f"/v2/{repo}/blobs/{layer['digest']}")
        assert status == 200, (repo, tag, layer["digest"], status)
        assert data == expected[layer["digest"]], f"{repo}:{tag} blob {layer['digest']} differs"


def test_gc_while_pushing_and_pulling_loses_nothing_and_leaves_only_referenced_blobs(wharf_bin, backend):
    registry = Registry(wharf_bin, users={ADMIN: PASSWORD}, **backend).start()
    completed = []  # (repo, tag, {digest: bytes})
    lock = threading.Lock()
    errors = []
    stop = threading.Event()
    deadline = time.monotonic() + DEADLINE_SECONDS
    shared = [os.urandom(32 << 10) for _ in range(3)]
    runs = []
    try:
        # Garbage from the start: orphaned blobs and an untagged manifest.
        seed = Client(registry.address, ADMIN, PASSWORD)
        for _ in range(20):
            seed.push_blob("garbage/orphans", os.urandom(4096))
        push_image(seed, "garbage/untagged", "gone", os.urandom(1024))
        seed.close()
        # Older than the grace period by the time the first runs start alongside the pushes.
        time.sleep(2.5)

        def pusher(n):
            c = Client(registry.address, ADMIN, PASSWORD, timeout=60)
            # At least IMAGES_PER_PUSHER each, and on until collections have overlapped the
            # pushes three times: on a loaded machine one run takes longer than the pushes.
            for i in itertools.count():
                if time.monotonic() > deadline or (i >= IMAGES_PER_PUSHER and len(runs) >= 3):
                    break
                repo, tag = f"team-{n % 3}/app-{n}", f"v{i}"
                _, blobs = push_image(c, repo, tag, shared[i % len(shared)])
                with lock:
                    completed.append((repo, tag, blobs))
                # now and then a blob nobody will reference
                if i % 4 == 0:
                    c.push_blob(f"team-{n % 3}/scratch", os.urandom(2048))
            c.close()

        def puller(_):
            c = Client(registry.address, ADMIN, PASSWORD, timeout=60)
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    pick = random.choice(completed) if completed else None
                if pick:
                    pull_and_check(c, *pick)
                time.sleep(0.01)
            c.close()

        def collector():
            while not stop.is_set() and time.monotonic() < deadline:
                # A short grace period: a push uploads its blobs, then stores its manifest
                # within it. Anything older and unreferenced goes, while pushes continue.
                status, report = gc(registry, gracePeriod="2s")
                if status == 200:
                    runs.append(report)
                elif status != 409:
                    raise AssertionError(f"gc answered {status}: {report}")

        def guarded(fn, n):
            try:
                fn(n)
            except Exception as e:  # collected and reported below
                errors.append(f"{fn.__name__} {n}: {e!r}")
                stop.set()

        workers = [threading.Thread(target=guarded, args=(pusher, n)) for n in range(PUSHERS)]
        background = [threading.Thread(target=guarded, args=(puller, n)) for n in range(PULLERS)]
        background.append(threading.Thread(target=guarded, args=(lambda _: collector(), 0)))
        for t in workers + background:
            t.start()
        for t in workers:
            t.join(DEADLINE_SECONDS + 30)
        stop.set()
        for t in background:
            t.join(120)
        assert not errors, errors
        assert len(completed) >= PUSHERS * IMAGES_PER_PUSHER, f"only {len(completed)} pushes completed in time"
        assert len(runs) >= 3, f"GC ran only {len(runs)} times during the pushes"
        assert sum(r["blobsDeleted"] for r in runs) > 0, "GC never deleted anything while running alongside pushes"
        print(f"\n{len(completed)} images pushed while GC ran {len(runs)} times, "
              f"deleting {sum(r['blobsDeleted'] for r in runs)} blobs")

        # Every completed push pulls bit-identical.
        c = Client(registry.address, ADMIN, PASSWORD, timeout=60)
        for repo, tag, blobs in completed:
            pull_and_check(c, repo, tag, blobs)

        # A dry run reports, deletes nothing; then a final run with untagged deletion leaves
        # exactly the referenced blobs.
        c.request("DELETE", "/v2/garbage/untagged/manifests/gone")
        before = stored_blobs(registry.layout_root)
        status, dry = gc(registry, dryRun=True, gracePeriod="0s", deleteUntagged=True, untaggedGracePeriod="0s")
        assert status == 200 and dry["dryRun"] and stored_blobs(registry.layout_root) == before
        status, final = gc(registry, gracePeriod="0s", deleteUntagged=True, untaggedGracePeriod="0s")
        assert status == 200 and final["blobsDeleted"] == dry["blobsDeleted"] > 0, (dry, final)
        referenced = {d for _, _, blobs in completed for d in blobs}
        assert stored_blobs(registry.layout_root) == referenced, "blobs left that nothing references, or referenced blobs gone"
        for repo, tag, blobs in completed:
            pull_and_check(c, repo, tag, blobs)
        status, _, text = c.request("GET", "/metrics")
        metrics = parse_prometheus(text.decode())
        assert metrics["wharf_registry_gc_runs_total"] >= len(runs) + 2
        assert metrics["wharf_registry_gc_blobs_deleted_total"] >= final["blobsDeleted"]
        assert metrics["wharf_registry_gc_running"] == 0
        c.close()
    finally:
        stop.set()
        registry.cleanup()


def test_gc_needs_an_administrator_and_validates_its_request(wharf_bin):
    registry = Registry(wharf_bin, users={ADMIN: PASSWORD, "reader": "reader-password"},
                        args=["--config", write_config()]).start()
    try:
        assert Client(registry.address).request("POST", "/admin/v1/gc", b"{}")[0] == 401
        assert Client(registry.address, "reader", "reader-password").request("POST", "/admin/v1/gc", b"{}")[0] == 403
        status, body = gc(registry, gracePeriod="soon")
        assert status == 400 and "not a duration" in body["errors"][0]["message"]
        status, body = gc(registry, unknownField=True)
        assert status == 400
        status, _, body = Client(registry.address, ADMIN, PASSWORD).request("GET", "/admin/v1/gc")
        assert status == 200 and json.loads(body)["running"] is False
    finally:
        registry.cleanup()


def write_config():
    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"auth": {"access": [{"users": ["reader"], "repositories": ["**"], "actions": ["pull"]}]}}))
    return path


def test_wharf_gc_job_reports_through_its_termination_message(wharf_bin, tmp_path):
    registry = Registry(wharf_bin, users={ADMIN: PASSWORD}).start()
    try:
        c = Client(registry.address, ADMIN, PASSWORD)
        for _ in range(3):
            c.push_blob("job/orphans", os.urandom(1000))
        c.close()
        log = tmp_path / "termination-log"
        env = {**os.environ, "WHARF_USERNAME": ADMIN, "WHARF_PASSWORD": PASSWORD}
        args = [wharf_bin, "gc", "--registry", f"http://{registry.address}", "--grace-period", "0s",
                "--termination-log", str(log)]
        dry = subprocess.run([*args, "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout) == json.loads(log.read_text())
        assert json.loads(dry.stdout)["dryRun"] is True and json.loads(dry.stdout)["blobsDeleted"] == 3
        real = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        summary = json.loads(log.read_text())
        assert real.returncode == 0 and summary["blobsDeleted"] == 3 and summary["bytesFreed"] == 3000, summary
        bad = subprocess.run(args, capture_output=True, text=True, env={**env, "WHARF_PASSWORD": "wrong"}, timeout=60)
        assert bad.returncode != 0 and "401" in bad.stderr, bad.stderr
        assert PASSWORD not in bad.stderr + bad.stdout
    finally:
        registry.cleanup()
