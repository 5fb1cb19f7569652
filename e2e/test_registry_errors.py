"""Bad input gets the right OCI error and leaves storage unchanged."""

import json
import os
import socket
import time

import pytest

from support.oci import OCI_MANIFEST, Client, error_code, sha256, storage_snapshot
from support.registry import Registry


@pytest.fixture
def registry(wharf_bin):
    r = Registry(wharf_bin).start()
    yield r
    r.cleanup()


@pytest.fixture
def seeded(registry):
    """A registry holding one image, and a snapshot of its storage."""
    client = Client(registry.address)
    client.push_image("errors/app", "v1", [os.urandom(2048)])
    return registry, client


def unchanged(registry, before):
    assert storage_snapshot(registry.storage) == before, "storage changed"


def test_wrong_digest_is_digest_invalid_and_stores_nothing(seeded):
    registry, client = seeded
    before = storage_snapshot(registry.storage)
    status, _, body = client.push_blob("errors/app", b"some bytes", digest=sha256(b"other bytes"))
    assert (status, error_code(body)) == (400, "DIGEST_INVALID")
    # The same through a chunked upload finished with the wrong digest.
    status, headers, _ = client.request("POST", "/v2/errors/app/blobs/uploads/")
    assert status == 202
    location = headers["location"]
    status, _, _ = client.request("PATCH", location, b"abc", {"Content-Range": "0-2"})
    assert status == 202
    status, _, body = client.request("PUT", f"{location}?digest={sha256(b'xyz')}", b"")
    assert (status, error_code(body)) == (400, "DIGEST_INVALID")
    unchanged(registry, before)
    status, _, _ = client.request("GET", f"/v2/errors/app/blobs/{sha256(b'some bytes')}")
    assert status == 404


def test_malformed_digest_on_single_post_leaves_no_upload(seeded):
    registry, client = seeded
    before = storage_snapshot(registry.storage, parts=("blobs", "repositories", "uploads"))
    status, _, body = client.request("POST", "/v2/errors/app/blobs/uploads/?digest=sha256:short", b"data")
    assert (status, error_code(body)) == (400, "DIGEST_INVALID")
    assert storage_snapshot(registry.storage, parts=("blobs", "repositories", "uploads")) == before


def test_truncated_upload_stores_no_blob_and_can_resume(seeded):
    registry, client = seeded
    before = storage_snapshot(registry.storage)
    status, headers, _ = client.request("POST", "/v2/errors/app/blobs/uploads/")
    location = headers["location"]
    data = os.urandom(200_000)
    host, port = registry.address.split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data[:50_000])
    # The client vanished mid-body: no blob, but the upload reports what arrived and resumes.
    got = None
    deadline = time.monotonic() + 10  # the server notices the disconnect at once; bound it anyway
    while time.monotonic() < deadline:
        status, headers, _ = client.request("GET", location)
        got = headers.get("range")
        if status == 204 and got == "0-49999":
            break
        time.sleep(0.05)
    assert (status, got) == (204, "0-49999")
    unchanged(registry, before)
    status, _, _ = client.request("PATCH", location, data[50_000:], {"Content-Range": f"50000-{len(data) - 1}"})
    assert status == 202
    status, _, _ = client.request("PUT", f"{location}?digest={sha256(data)}", b"")
    assert status == 201
    status, _, body = client.request("GET", f"/v2/errors/app/blobs/{sha256(data)}")
    assert status == 200 and body == data


def test_out_of_order_chunk_is_416(seeded):
    registry, client = seeded
    status, headers, _ = client.request("POST", "/v2/errors/app/blobs/uploads/")
    location = headers["location"]
    status, _, _ = client.request("PATCH", location, b"0123456789", {"Content-Range": "0-9"})
    assert status == 202
    before = storage_snapshot(registry.storage, parts=("blobs", "repositories", "uploads"))
    status, headers, _ = client.request("PATCH", location, b"abcdefghij", {"Content-Range": "20-29"})
    assert status == 416 and headers["range"] == "0-9"
    assert storage_snapshot(registry.storage, parts=("blobs", "repositories", "uploads")) == before


def test_oversized_manifest_is_413(seeded):
    registry, client = seeded
    before = storage_snapshot(registry.storage)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "annotations": {"pad": "x" * (4 << 20)}}).encode()
    status, _, _ = client.request("PUT", "/v2/errors/app/manifests/huge", body, {"Content-Type": OCI_MANIFEST})
    assert status == 413
    unchanged(registry, before)


def test_manifest_with_missing_blob_is_manifest_blob_unknown(seeded):
    registry, client = seeded
    config = b"{}"
    client.push_blob("errors/app", config)
    before = storage_snapshot(registry.storage)
    missing_layer = sha256(b"never pushed")
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": missing_layer, "size": 12}],
    }).encode()
    status, _, body = client.request("PUT", "/v2/errors/app/manifests/broken", manifest, {"Content-Type": OCI_MANIFEST})
    assert (status, error_code(body)) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert missing_layer in json.loads(body)["errors"][0]["message"]
    unchanged(registry, before)
    status, _, _ = client.request("GET", "/v2/errors/app/manifests/broken")
    assert status == 404


@pytest.mark.parametrize("path,code", [
    ("/v2/../etc/tags/list", "NAME_INVALID"),
    ("/v2/errors/../app/tags/list", "NAME_INVALID"),
    ("/v2/Errors/App/tags/list", "NAME_INVALID"),
    ("/v2/" + "a" * 256 + "/tags/list", "NAME_INVALID"),
    ("/v2/errors/app/manifests/.hidden", "NAME_INVALID"),
    ("/v2/errors/app/manifests/" + "t" * 129, "NAME_INVALID"),
    ("/v2/errors/app/manifests/sha256:nothex", "DIGEST_INVALID"),
    ("/v2/errors/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", "DIGEST_INVALID"),
])
def test_invalid_names_tags_and_digests(seeded, path, code):
    registry, client = seeded
    before = storage_snapshot(registry.storage)
    for method in ("GET", "PUT"):
        status, _, body = client.request(method, path, b"{}" if method == "PUT" else None)
        assert (status, error_code(body)) == (400, code), (method, path, body)
    unchanged(registry, before)


def test_bad_auth_is_401_with_a_challenge(wharf_bin):
    registry = Registry(wharf_bin, users={"alice": "right-password"}).start()
    try:
        before = storage_snapshot(registry.storage)
        for client in (Client(registry.address), Client(registry.address, "alice", "wrong"), Client(registry.address, "bob", "right-password")):
            for method, path in [("GET", "/v2/"), ("GET", "/v2/_catalog"), ("POST", "/v2/x/blobs/uploads/"),
                                 ("GET", "/v2/x/tags/list")]:
                status, headers, body = client.request(method, path)
                assert status == 401, (method, path)
                assert error_code(body) == "UNAUTHORIZED"
                assert headers["www-authenticate"].startswith("Basic realm=")
        assert Client(registry.address, "alice", "right-password").request("GET", "/v2/")[0] == 200
        # Metrics need credentials too; health probes do not.
        assert Client(registry.address).request("GET", "/metrics")[0] == 401
        assert Client(registry.address, "alice", "right-password").request("GET", "/metrics")[0] == 200
        assert Client(registry.address).request("GET", "/healthz")[0] == 200
        assert Client(registry.address).request("GET", "/readyz")[0] == 200
        unchanged(registry, before)
        assert "right-password" not in registry.logs() and "wrong" not in registry.logs()
    finally:
        registry.cleanup()


def test_deletes_disabled_and_read_only(wharf_bin):
    registry = Registry(wharf_bin, args=["--deletes=false"]).start()
    try:
        client = Client(registry.address)
        _, digest = client.push_image("errors/app", "v1", [os.urandom(100)])
        before = storage_snapshot(registry.storage)
        for path in [f"/v2/errors/app/manifests/{digest}", "/v2/errors/app/manifests/v1",
                     f"/v2/errors/app/blobs/{sha256(b'{}')}"]:
            status, _, body = client.request("DELETE", path)
            assert (status, error_code(body)) == (405, "UNSUPPORTED"), path
        unchanged(registry, before)
    finally:
        registry.stop()
    # The same storage served read-only by a second process.
    ro = Registry(wharf_bin, storage=registry.storage, args=["--read-only"]).start()
    try:
        client = Client(ro.address)
        before = storage_snapshot(ro.storage)
        status, _, body = client.push_blob("errors/app", b"data")
        assert (status, error_code(body)) == (405, "UNSUPPORTED")
        assert client.request("GET", "/v2/errors/app/manifests/v1")[0] == 200
        unchanged(ro, before)
    finally:
        ro.cleanup()
        registry.cleanup()
