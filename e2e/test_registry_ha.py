"""Two `wharf registry` processes on one S3 bucket and prefix, behind a round-robin proxy that
sends each request to the next replica: chunked uploads whose PATCHes alternate between them,
racing tag writes that converge, robots and tokens minted on one replica accepted by the other,
garbage collection on one replica while clients push through the other, and one replica
SIGKILLed while clients go on."""

import hashlib
import itertools
import json
import os
import random
import threading
import time

import pytest

from support.oci import OCI_MANIFEST, Client, sha256
from support.proxy import RoundRobinProxy
from support.registry import Registry
from test_registry_gc import ADMIN, PASSWORD, gc, pull_and_check, push_image, stored_blobs

SERVICE = "wharf-ha"


@pytest.fixture(scope="module")
def replicas(wharf_bin, s3_server, tmp_path_factory):
    config = f"auth:\n  token: {{enabled: true, service: {SERVICE}}}\n"
    prefix = f"ha-{os.urandom(4).hex()}"
    a = Registry(wharf_bin, users={ADMIN: PASSWORD}, s3=s3_server, s3_prefix=prefix, config=config).start()
    b = Registry(wharf_bin, users={ADMIN: PASSWORD}, s3=s3_server, s3_prefix=prefix, config=config).start()
    proxy = RoundRobinProxy([a.address, b.address]).start()
    yield a, b, proxy
    proxy.stop()
    a.cleanup()
    b.cleanup()


def admin(address):
    return Client(address, ADMIN, PASSWORD, timeout=60)


def chunked_upload(client, repo, data, chunk, algorithm="sha256"):
    status, headers, body = client.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert status == 202, (status, body)
    location = headers["location"]
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        status, headers, body = client.request(
            "PATCH", location, piece,
            {"Content-Range": f"{start}-{start + len(piece) - 1}", "Content-Type": "application/octet-stream"})
        assert status == 202, (start, status, body)
        assert headers["range"] == f"0-{start + len(piece) - 1}"
        location = headers["location"]
    digest = f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()
    status, _, body = client.request("PUT", f"{location}?digest={digest}", b"")
    assert status == 201, (status, body)
    return digest


def test_chunked_uploads_whose_patches_alternate_between_replicas(replicas):
    a, b, proxy = replicas
    client = admin(proxy.address)
    before = dict(proxy.counts)
    small = os.urandom(5 * 300_000 + 17)
    large = os.urandom((9 << 20) + 5)  # one PATCH beyond a multipart part, one after it
    d_small = chunked_upload(client, "ha/chunks", small, 300_000)
    d_sha512 = chunked_upload(client, "ha/chunks", small, 300_000, "sha512")
    d_large = chunked_upload(client, "ha/chunks", large, 9 << 20)
    served = {k: proxy.counts[k] - before[k] for k in proxy.counts}
    assert min(served.values()) >= 8, f"the PATCHes did not alternate: {served}"
    for replica in (a, b):
        c = admin(replica.address)
        for digest, data in ((d_small, small), (d_sha512, small), (d_large, large)):
            status, _, body = c.request("GET", f"/v2/ha/chunks/blobs/{digest}")
            assert status == 200 and body == data, (replica.address, digest, status)
        c.close()
    # A wrong digest at the end is refused, wherever the chunks went.
    status, headers, _ = client.request("POST", "/v2/ha/chunks/blobs/uploads/")
    location = headers["location"]
    for start in (0, 1000):
        status, headers, _ = client.request("PATCH", location, small[start:start + 1000],
                                            {"Content-Range": f"{start}-{start + 999}"})
        location = headers["location"]
    status, _, body = client.request("PUT", f"{location}?digest={sha256(b'something else')}", b"")
    assert status == 400 and b"DIGEST_INVALID" in body, (status, body)


def test_racing_tag_writes_through_both_replicas_converge(replicas):
    a, b, proxy = replicas
    pushed = {}
    lock = threading.Lock()
    errors = []

    def writer(n):
        try:
            c = admin(proxy.address)
            for i in range(5):
                manifest, digest = c.push_image("ha/race", "latest", [os.urandom(2048)],
                                                config=json.dumps({"writer": n, "round": i}).encode())
                with lock:
                    pushed[digest] = manifest
            c.close()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(pushed) == 40
    seen = set()
    for replica in (a, b):
        c = admin(replica.address)
        status, headers, body = c.request("GET", "/v2/ha/race/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert status == 200
        seen.add(headers["docker-content-digest"])
        assert pushed[headers["docker-content-digest"]] == body, "the tag points to bytes nobody pushed"
        status, _, body = c.request("GET", "/v2/ha/race/tags/list")
        assert json.loads(body)["tags"] == ["latest"]
        # Every manifest that was pushed is still there by digest: no write was lost.
        for digest, manifest in pushed.items():
            status, _, body = c.request("GET", f"/v2/ha/race/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
            assert status == 200 and body == manifest, (replica.address, digest)
        c.close()
    assert len(seen) == 1, f"the replicas disagree about the tag: {seen}"


def test_robots_and_tokens_minted_on_one_replica_work_on_the_other(replicas):
    a, b, _ = replicas
    c = admin(a.address)
    c.request("DELETE", "/admin/v1/robots/ha-ci")
    status, _, body = c.request("POST", "/admin/v1/robots", json.dumps(
        {"name": "ha-ci", "permissions": [{"repositories": ["ha/**"], "actions": ["pull", "push"]}]}).encode(),
        {"Content-Type": "application/json"})
    assert status == 201, body
    robot = json.loads(body)
    c.close()
    for issuer, verifier in ((b, a), (a, b)):
        client = Client(issuer.address, robot["username"], robot["secret"])
        status, _, body = client.request(
            "GET", f"/auth/token?service={SERVICE}&scope=repository:ha/robot:pull,push")
        assert status == 200, f"the robot made on {a.address} is unknown to {issuer.address}: {body}"
        token = json.loads(body)["token"]
        bearer = Client(verifier.address)
        manifest, _ = Client.push_image(_BearerClient(bearer, token), "ha/robot", f"from-{issuer.port}", [os.urandom(512)])
        status, _, body = bearer.request("GET", f"/v2/ha/robot/manifests/from-{issuer.port}",
                                         headers={"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST})
        assert status == 200 and body == manifest
        status, _, _ = bearer.request("GET", "/v2/ha/robot/tags/list", headers={"Authorization": "Bearer forged"})
        assert status == 401


class _BearerClient(Client):
    """A client that sends a bearer token on every request."""

    def __init__(self, inner, token):
        super().__init__(f"{inner.host}:{inner.port}")
        self.token = token

    def request(self, method, path, body=None, headers=None):
        return super().request(method, path, body, {"Authorization": f"Bearer {self.token}", **(headers or {})})


def test_gc_on_one_replica_while_clients_push_through_the_other(replicas):
    a, b, _ = replicas
    orphans = set()
    seed = admin(b.address)
    for _ in range(10):
        data = os.urandom(4096)
        seed.push_blob("ha-gc/orphans", data)
        orphans.add(sha256(data))
    # Layers a client uploaded and then abandoned, which later pushes adopt by reference (a HEAD
    # finds them, so they are not sent again): old and unreferenced, exactly what a collection
    # removes, while a push through the other replica is about to reference them.
    adoptable = {n: [] for n in range(4)}
    for n in adoptable:
        for _ in range(12):
            data = os.urandom(3000)
            seed.push_blob(f"ha-gc/app-{n}", data)
            adoptable[n].append(data)
    seed.close()
    time.sleep(2.5)  # the orphans are older than the grace period
    adopted_again = []
    shared = [os.urandom(16 << 10) for _ in range(3)]
    completed, runs, errors = [], [], []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + 150

    def pusher(n):
        c = admin(b.address)
        for i in range(10):
            if time.monotonic() > deadline:
                break
            repo, tag = f"ha-gc/app-{n}", f"v{i}"
            _, blobs = push_image(c, repo, tag, shared[i % len(shared)])
            with lock:
                completed.append((repo, tag, blobs))
            adopted = adopt(c, repo, f"adopted-{i}", adoptable[n][i])
            with lock:
                completed.append(adopted)
            if i % 3 == 0:
                data = os.urandom(2048)
                c.push_blob(f"ha-gc/scratch-{n}", data)
                with lock:
                    orphans.add(sha256(data))
        # Plain pushes on until the other replica has collected twice: on a loaded machine one
        # run can outlast the rounds above.
        for i in itertools.count(10):
            if len(runs) >= 2 or time.monotonic() > deadline:
                break
            repo, tag = f"ha-gc/app-{n}", f"v{i}"
            _, blobs = push_image(c, repo, tag, shared[i % len(shared)])
            with lock:
                completed.append((repo, tag, blobs))
        c.close()

    def adopt(c, repo, tag, layer):
        """A manifest over an old orphan layer, as a client that HEADs before it uploads; when
        the collection removed the layer first, the push fails cleanly and the client uploads it
        again, as real clients do."""
        config = json.dumps({"adopted": tag, "repo": repo}).encode()
        assert c.push_blob(repo, config)[0] == 201
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": len(layer)}],
        }).encode()
        for attempt in range(3):
            if c.request("HEAD", f"/v2/{repo}/blobs/{sha256(layer)}")[0] != 200:
                assert c.push_blob(repo, layer)[0] == 201
                adopted_again.append(tag)
            status, headers, body = c.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
            if status == 201:
                return repo, tag, {sha256(config): config, sha256(layer): layer, headers["docker-content-digest"]: manifest}
            assert status == 400 and b"MANIFEST_BLOB_UNKNOWN" in body, (status, body)
        raise AssertionError(f"{repo}:{tag} could not be pushed in 3 attempts")

    def collector():
        while not stop.is_set() and time.monotonic() < deadline:
            status, report = gc(a, gracePeriod="2s")
            if status == 200:
                runs.append(report)
            elif status != 409:
                raise AssertionError(f"gc answered {status}: {report}")

    def guarded(fn, n):
        try:
            fn(n)
        except Exception as e:  # reported below
            errors.append(f"{fn.__name__} {n}: {e!r}")
            stop.set()

    pushers = [threading.Thread(target=guarded, args=(pusher, n)) for n in range(4)]
    gc_thread = threading.Thread(target=guarded, args=(lambda _: collector(), 0))
    for t in pushers + [gc_thread]:
        t.start()
    for t in pushers:
        t.join(180)
    stop.set()
    gc_thread.join(120)
    assert not errors, errors
    assert len(completed) >= 80, f"only {len(completed)} pushes completed"
    print(f"\n{len(completed)} pushes through one replica while the other collected {len(runs)} times; "
          f"{len(adopted_again)} adoptions found their layer collected and uploaded it again")
    assert len(runs) >= 2 and sum(r["blobsDeleted"] for r in runs) > 0, runs
    for replica in (a, b):
        c = admin(replica.address)
        for repo, tag, blobs in completed:
            pull_and_check(c, repo, tag, blobs)
        c.close()
    # A last run on the other replica removes every orphan and keeps every referenced blob.
    status, final = gc(b, gracePeriod="0s")
    assert status == 200 and final["blobsDeleted"] > 0, final
    stored = stored_blobs(a.layout_root)
    referenced = {d for _, _, blobs in completed for d in blobs}
    assert referenced <= stored, f"{len(referenced - stored)} referenced blobs are gone"
    assert not orphans & stored, f"{len(orphans & stored)} orphans survived a run with no grace period"


def test_a_replica_killed_mid_run_loses_no_acknowledged_push(replicas):
    a, b, proxy = replicas
    completed, errors = [], []
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def pusher(n):
        c = admin(proxy.address)
        for i in range(15):
            if time.monotonic() > deadline:
                break
            repo, tag = f"ha-kill/app-{n}", f"v{i}"
            for attempt in range(3):
                try:
                    _, blobs = push_image(c, repo, tag, os.urandom(8 << 10))
                    break
                except Exception:  # the killed replica answered part of this push: push it again
                    c.close()
                    if attempt == 2:
                        raise
            with lock:
                completed.append((repo, tag, blobs))
        c.close()

    def guarded(n):
        try:
            pusher(n)
        except Exception as e:  # reported below
            errors.append(f"pusher {n}: {e!r}")

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    killed_at = len(completed)
    b.kill()
    for t in threads:
        t.join(150)
    assert not errors, errors
    assert killed_at > 0 and len(completed) == 60, (killed_at, len(completed))
    c = admin(a.address)
    for repo, tag, blobs in completed:
        pull_and_check(c, repo, tag, blobs)
    c.close()
    b.start()  # the killed replica comes back on the same bucket and serves the same images
    c = admin(b.address)
    for repo, tag, blobs in random.sample(completed, 20):
        pull_and_check(c, repo, tag, blobs)
    c.close()
