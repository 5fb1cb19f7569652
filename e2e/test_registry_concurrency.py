"""No global lock, and none needed: concurrent pushes of the same blob, manifest and tag are
all accepted and converge; racing pushes of different manifests to one tag leave it pointing at
one complete manifest."""

import json
import os
import threading

from support.oci import OCI_MANIFEST, Client, sha256
from support.registry import Registry

THREADS = 8
ROUNDS = 5


def run_threads(target):
    errors = []

    def guarded(n):
        try:
            target(n)
        except Exception as e:  # collected and reported by the test
            errors.append(f"thread {n}: {e!r}")

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_same_blob_manifest_and_tag_from_many_clients_converge(wharf_bin):
    registry = Registry(wharf_bin).start()
    try:
        layer, config = os.urandom(3 << 20), b'{"architecture":"amd64","os":"linux"}'
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": len(layer)}],
        }).encode()

        def push(n):
            client = Client(registry.address, timeout=60)
            for _ in range(ROUNDS):
                if n % 2:
                    assert client.push_blob("race/same", layer)[0] == 201
                else:  # chunked, in two pieces
                    status, headers, _ = client.request("POST", "/v2/race/same/blobs/uploads/")
                    loc = headers["location"]
                    half = len(layer) // 2
                    status, headers, _ = client.request("PATCH", loc, layer[:half], {"Content-Range": f"0-{half - 1}"})
                    assert status == 202
                    status, _, _ = client.request("PUT", f"{headers['location']}?digest={sha256(layer)}", layer[half:])
                    assert status == 201
                assert client.push_blob("race/same", config)[0] == 201
                status, headers, body = client.request("PUT", "/v2/race/same/manifests/latest", manifest, {"Content-Type": OCI_MANIFEST})
                assert status == 201, body
                assert headers["docker-content-digest"] == sha256(manifest)

        run_threads(push)
        client = Client(registry.address)
        status, headers, body = client.request("GET", "/v2/race/same/manifests/latest")
        assert (status, body) == (200, manifest)
        assert client.request("GET", f"/v2/race/same/blobs/{sha256(layer)}")[2] == layer
        assert json.loads(client.request("GET", "/v2/race/same/tags/list")[2])["tags"] == ["latest"]
        blob_files = [f for _, _, files in os.walk(os.path.join(registry.storage, "blobs")) for f in files]
        assert sorted(blob_files) == sorted(d.split(":")[1] for d in (sha256(layer), sha256(config), sha256(manifest))), \
            "one stored copy per digest, no temporary files left"
        assert os.listdir(os.path.join(registry.storage, "uploads")) == []
    finally:
        registry.cleanup()


def test_racing_different_manifests_on_one_tag_leave_one_whole_winner(wharf_bin):
    registry = Registry(wharf_bin).start()
    try:
        pushed = {}

        def push(n):
            client = Client(registry.address, timeout=60)
            for i in range(ROUNDS):
                manifest, digest = client.push_image("race/tag", "contested", [os.urandom(50_000)],
                                                     json.dumps({"writer": n, "round": i}).encode())
                pushed[digest] = manifest

        run_threads(push)
        client = Client(registry.address)
        status, headers, body = client.request("GET", "/v2/race/tag/manifests/contested")
        assert status == 200
        assert pushed[headers["docker-content-digest"]] == body, "the tag's digest and bytes must agree"
        for digest, manifest in pushed.items():  # every revision stays addressable by digest
            assert client.request("GET", f"/v2/race/tag/manifests/{digest}")[2] == manifest
    finally:
        registry.cleanup()


def test_multi_range_blob_reads(wharf_bin):
    registry = Registry(wharf_bin).start()
    try:
        client = Client(registry.address)
        data = bytes(range(256)) * 4
        client.push_blob("ranges/x", data)
        status, headers, body = client.request("GET", f"/v2/ranges/x/blobs/{sha256(data)}", headers={"Range": "bytes=0-3,-4"})
        assert status == 206
        boundary = headers["content-type"].split("boundary=")[1]
        parts = [p for p in body.split(f"--{boundary}".encode()) if p.strip(b"\r\n-")]
        assert len(parts) == 2
        assert b"Content-Range: bytes 0-3/1024" in parts[0] and parts[0].endswith(data[:4] + b"\r\n")
        assert b"Content-Range: bytes 1020-1023/1024" in parts[1] and parts[1].endswith(data[-4:] + b"\r\n")
        status, headers, _ = client.request("GET", f"/v2/ranges/x/blobs/{sha256(data)}", headers={"Range": "bytes=2000-"})
        assert status == 416 and headers["content-range"] == "bytes */1024"
    finally:
        registry.cleanup()
